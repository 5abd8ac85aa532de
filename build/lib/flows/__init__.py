"""Prefect flows: they only wire the steps of :mod:`mrv.pipeline`."""
