"""Connect to the configured Dask cluster, or start a local one for the duration of a step."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from distributed import Client, LocalCluster

from mrv.config import DaskConfig
from mrv.errors import ConfigError


@contextmanager
def dask_client(cfg: DaskConfig) -> Iterator[Client]:
    """A ``distributed.Client`` on ``cfg.address`` or on a LocalCluster of worker processes.

    Workers run single-threaded BLAS/OpenMP (``OMP_NUM_THREADS=1``) so model prediction does not
    oversubscribe the cores Dask already parallelises over.
    """
    if cfg.address:
        try:
            client = Client(cfg.address, timeout="20s")
        except OSError as exc:
            raise ConfigError(
                f"Cannot reach the Dask scheduler at {cfg.address}: {exc}. Start it or unset dask.address."
            ) from exc
        with client:
            yield client
        return
    env = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # inherited by spawned worker processes
    try:
        with (
            LocalCluster(
                n_workers=cfg.n_workers,
                threads_per_worker=cfg.threads_per_worker,
                processes=True,
                dashboard_address=None,
                host="127.0.0.1",
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
