"""Application steps of a monitoring run. Each step reads paths, writes files into the run
directory and returns the paths it wrote, so that orchestration (``flows/``) only wires them."""
