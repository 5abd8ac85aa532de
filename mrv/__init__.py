"""soilcarbon-mrv: soil organic carbon monitoring, reporting and verification.

The public Python API (imported lazily, so ``import mrv`` stays light)::

    mrv.run(config, output_dir=None) -> mrv.RunResult   # validate + the whole monitoring flow
    mrv.open_run(run_dir) -> mrv.RunResult              # a finished run: report, fields, maps as xarray
    mrv.load_config(path) -> mrv.config.RunConfig        # the frozen, validated run config
    mrv.validate(path) -> mrv.validate.Validation        # what ``mrv validate`` checks
"""

from __future__ import annotations

from typing import Any

__all__ = ["RunResult", "load_config", "open_run", "run", "validate"]


def __getattr__(name: str) -> Any:
    if name in ("RunResult", "open_run", "run"):
        from mrv import api

        return getattr(api, name)
    if name == "load_config":
        from mrv.config import load_config

        return load_config
    if name == "validate":
        from mrv.validate import validate_path

        return validate_path
    raise AttributeError(f"module 'mrv' has no attribute {name!r}")
