"""The Python entry point for notebooks and scripts: ``mrv.run(config) -> RunResult``.

``run`` does what ``mrv run`` does (validate first, then the Prefect flow on the configured or a
local Prefect API) and returns the run's results; ``open_run`` reads a finished run directory.
Maps come back as CRS-aware :class:`xarray.DataArray` objects (odc-geo: ``arr.odc.geobox``,
``arr.odc.crs``; coordinates in the project CRS, metres), in t C/ha for the configured depth::

    import mrv
    result = mrv.run("configs/demo.yaml")
    result.project["soc_stock_t_ha"]["mean"]
    mean_2024 = result.map("mean", round="2024")   # xarray.DataArray, NaN outside the region
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xarray as xr

from mrv.errors import ConfigError

__all__ = [
    "open_run",
    "read_map",
    "run",
    "RunResult",
]


@dataclass(frozen=True)
class RunResult:
    """A finished run: its directory and ``report.json`` (the source of truth)."""

    run_dir: Path
    """The run directory (``report.json``, ``manifest.json``, ``maps/``, ...)."""
    report: dict[str, Any]
    """``report.json`` as a mapping."""

    @property
    def project(self) -> dict[str, Any]:
        """Project-level stocks, change and t CO2e with their intervals."""
        return dict(self.report["project"])

    @property
    def fields(self) -> list[dict[str, Any]]:
        """Per-field stocks and change."""
        return list(self.report["fields"])

    @property
    def rounds(self) -> list[str]:
        return [str(r) for r in self.report["run"]["rounds"]]

    def map_path(self, stat: str = "mean", *, round: str | None = None) -> Path:
        """The COG of ``stat`` (``mean``, ``p05``, ``p50``, ``p95``, ``sd``, ``width90``) for ``round`` (default: the latest)."""
        from mrv.errors import MRVError
        from mrv.pipeline.layout import RunLayout

        if round is not None and round not in self.rounds:
            raise ConfigError(f"No round {round!r} in this run; its rounds: {', '.join(self.rounds)}.")
        try:
            maps = RunLayout(self.run_dir).round_maps(round or self.rounds[-1])
        except MRVError as exc:
            raise ConfigError(str(exc)) from exc
        if stat not in maps:
            raise ConfigError(f"No map {stat!r}; choose one of {', '.join(maps)}.")
        path = maps[stat]
        if not path.is_file():
            raise ConfigError(f"{path} does not exist; rounds of this run: {', '.join(self.rounds)}.")
        return path

    def map(self, stat: str = "mean", *, round: str | None = None) -> xr.DataArray:
        """A map as a CRS-aware DataArray (odc-geo GeoBox; t C/ha; NaN where nothing was predicted)."""
        return read_map(self.map_path(stat, round=round))


def read_map(path: Path) -> xr.DataArray:
    """Band 1 of a GeoTIFF as a DataArray with its GeoBox (``.odc.geobox``) and the file's tags as attributes."""
    import numpy as np
    import rasterio
    from odc.geo.geobox import GeoBox
    from odc.geo.xr import wrap_xr

    with rasterio.open(path) as src:
        data = src.read(1, masked=True).filled(np.nan).astype("float32")
        gbox = GeoBox(data.shape, src.transform, src.crs.to_wkt())
        attrs = {**src.tags(), **src.tags(1)}
    arr = wrap_xr(data, gbox, nodata=float("nan"))
    arr.attrs.update(attrs)
    arr.name = Path(path).stem
    return arr


def open_run(run_dir: str | Path) -> RunResult:
    """The :class:`RunResult` of a finished run directory."""
    root = Path(run_dir)
    path = root / "report.json"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path} cannot be read ({exc.strerror}); is {root} a finished run directory?") from exc
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); rebuild the run.") from exc
    return RunResult(run_dir=root.resolve(), report=report)


def run(config: str | Path, *, output_dir: str | Path | None = None) -> RunResult:
    """Validate ``config`` and run the regional monitoring flow; resumes finished steps like ``mrv run``."""
    from mrv.validate import validate_path

    cfg = validate_path(config, output_dir=output_dir).config  # every expected mistake, before Prefect starts
    from flows.regional_monitoring import regional_monitoring
    from mrv.prefect_api import prefect_api

    with prefect_api():
        report_path = Path(regional_monitoring(str(config), str(cfg.output_dir)))
    return open_run(report_path.parent)
