"""Field and project accounting from stored files: the readers of its inputs and the one compute path.

:func:`stream_zone_sums` then :func:`compute_accounting` is the single code path that turns the per-round
``mean``/``sd`` maps and the field polygons into the ``project`` and ``fields`` sections of ``accounting.json``
(and hence of ``report.json``): the maps are read strip by strip and only per-zone and per-(coarse cell, zone)
sums are kept, so memory does not grow with the region. :func:`round_maps_grid` and :func:`cv_points` read its
inputs' headers and the CV points, and :func:`estimate_error_model` settles the error correlation. The run
records every setting it used (seed, number of simulations, error range, nugget share, round correlation)
under ``settings`` and every file under ``inputs``.

Verification lives in :mod:`mrv.report.verify`: its ``accounting`` link re-runs the pipeline's own
accounting step with the settings of the run's config and compares all of ``accounting.json``
(settings, refitted error variogram, every field and the project; relative tolerance 1e-6), and its
``report`` link compares ``report.json`` with it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio
from rasterio.windows import Window

from mrv.accounting.aggregate import ZoneSumAccumulator, ZoneSums, coarse_factor, simulate_from_sums, zone_summary
from mrv.accounting.variogram import (
    ExponentialVariogram,
    cross_round_correlation,
    fit_cv_error_variogram,
    standardized_errors,
)
from mrv.errors import AccountingError
from mrv.fields import Field, field_coverage, field_index_raster
from mrv.grid import Grid

__all__ = [
    "AccountingSettings",
    "MapErrorModel",
    "compute_accounting",
    "cv_points",
    "estimate_error_model",
    "round_maps_grid",
    "stream_zone_sums",
    "strip_rows",
]


@dataclass(frozen=True)
class AccountingSettings:
    """Everything besides the maps and fields that determines the accounting numbers."""

    n_simulations: int
    seed: int
    confidence: float
    range_m: float | None
    """Distance parameter of the exponential error correlation; ``None`` = independent pixels."""
    nugget_share: float
    round_correlation: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_simulations": self.n_simulations,
            "seed": self.seed,
            "confidence": self.confidence,
            "error_range_m": self.range_m,
            "nugget_share": self.nugget_share,
            "round_error_correlation": self.round_correlation,
        }


@dataclass(frozen=True)
class MapErrorModel:
    """The error correlation used by the Monte Carlo and where each part came from."""

    range_m: float
    nugget_share: float
    range_source: str
    """``fitted`` (variogram of CV errors) or ``configured``."""
    round_correlation: float
    round_correlation_source: str
    """``configured`` or ``estimated``."""
    variogram: ExponentialVariogram | None
    round_correlation_estimate: float | None
    round_correlation_pairs: int
    note: str


#: Pixels per strip of :func:`stream_zone_sums`: rows = this / width, a multiple of the coarse cell. A strip of
#: 1 Mpx (two rounds, fields on half the pixels) holds ~170 MB of maps, fractions and sums at its peak; 4 Mpx strips
#: ~430 MB, and no less CPU (measured on 4 Mpx with 2,500 fields).
STRIP_PIXELS = 1_000_000


def round_maps_grid(paths: dict[str, dict[str, Path]]) -> Grid:
    """The grid of ``{round: {"mean": path, "sd": path}}``'s maps (headers only); every map must be on it."""
    grid: Grid | None = None
    for name, kinds in paths.items():
        for kind in ("mean", "sd"):
            with rasterio.open(kinds[kind]) as src:
                b = src.bounds
                g = Grid(crs=src.crs.to_string(), bounds=(b.left, b.bottom, b.right, b.top), resolution_m=src.res[0])
                ok = src.count >= 1
            if grid is None:
                grid = g
            if not ok or g.shape != grid.shape or g.transform != grid.transform:
                raise AccountingError(
                    f"The {kind} map of round {name} is not on the grid of the first round; re-run the prediction step."
                )
    if grid is None:
        raise AccountingError("No round maps to account; configure at least one round.")
    return grid


def strip_rows(grid: Grid, factor: int, *, strip_px: int = STRIP_PIXELS) -> int:
    """Rows per strip: about ``strip_px`` pixels of ``grid``'s width, a multiple of ``factor`` (at least one cell)."""
    rows = max(1, strip_px // max(1, grid.width))
    return max(factor, rows // factor * factor)


def _read_window(src: Any, row0: int, height: int) -> np.ndarray:
    """Band 1 rows ``row0`` to ``row0 + height`` as float32, nodata NaN (as :func:`mrv.raster.read_raster`)."""
    window = Window(0, row0, src.width, height)  # type: ignore[no-untyped-call]
    return np.asarray(src.read(1, window=window, masked=True).astype("float32").filled(np.nan))


def _block_cache_bytes(datasets: Sequence[Any]) -> int:
    """GDAL block cache for reading strips: two and a half rows of blocks of every map (a strip straddles two block rows
    and the next strip re-reads the lower one), at least 16 MB. GDAL's default (5 % of RAM) would keep every block of
    the region read so far."""
    row_bytes = sum(d.width * d.block_shapes[0][0] * np.dtype(d.dtypes[0]).itemsize for d in datasets)
    return max(16 << 20, int(2.5 * row_bytes))


def stream_zone_sums(
    fields: Sequence[Field],
    paths: dict[str, dict[str, Path]],
    grid: Grid,
    *,
    range_m: float | None,
    strip_px: int = STRIP_PIXELS,
) -> ZoneSums:
    """The zone sums of the Monte Carlo (:class:`mrv.accounting.aggregate.ZoneSums`) read strip by strip.

    ``paths`` is ``{round: {"mean": path, "sd": path}}`` (t C/ha GeoTIFFs on ``grid``, in round order). Each strip
    of :func:`strip_rows` rows is read from every map (windowed reads), its exact field fractions
    (:func:`mrv.fields.field_coverage`) and pixel-centre field indices (:func:`mrv.fields.field_index_raster`) are
    computed on the strip's window of ``grid``, and only the per-(cell, zone) and per-zone sums are kept: memory is
    bounded by the strip (and a GDAL block cache of a few rows of blocks), not the region.
    """
    fields = tuple(fields)
    factor = coarse_factor(grid.resolution_m, range_m)
    acc = ZoneSumAccumulator(list(paths), len(fields), grid.shape, pixel_m=grid.resolution_m, factor=factor)
    step = strip_rows(grid, factor, strip_px=strip_px)
    with ExitStack() as stack:
        srcs = [
            (stack.enter_context(rasterio.open(p["mean"])), stack.enter_context(rasterio.open(p["sd"])))
            for p in paths.values()
        ]
        stack.enter_context(rasterio.Env(GDAL_CACHEMAX=_block_cache_bytes([d for pair in srcs for d in pair])))
        for row0 in range(0, grid.height, step):
            height = min(step, grid.height - row0)
            window = grid.window(row0, 0, height, grid.width)
            means = [_read_window(m, row0, height) for m, _ in srcs]
            sds = [_read_window(s, row0, height) for _, s in srcs]
            centre = np.asarray(field_index_raster(fields, window))
            acc.add(row0, field_coverage(fields, window), means, sds, centre)
    return acc.result()


def cv_points(cv_csv: Path, features_csv: Path | None) -> pd.DataFrame:
    """The out-of-fold predictions, with each point's ``round`` joined from the training table when known."""
    try:
        oof = pd.read_csv(cv_csv)
    except (OSError, ValueError) as exc:
        raise AccountingError(
            f"Cannot read the cross-validation predictions {cv_csv}: {exc}. Re-run the training step."
        ) from exc
    if "round" in oof.columns or features_csv is None or not features_csv.is_file():
        return oof
    feats = pd.read_csv(features_csv, usecols=lambda c: c in {"x", "y", "soc_stock_t_ha", "round"})
    if not {"x", "y", "soc_stock_t_ha", "round"} <= set(feats.columns):
        return oof
    key = feats.rename(columns={"soc_stock_t_ha": "observed"}).drop_duplicates(["x", "y", "observed"])
    merged = oof.merge(key, on=["x", "y", "observed"], how="left")
    return merged if len(merged) == len(oof) else oof


def estimate_error_model(
    oof: pd.DataFrame | None,
    *,
    interval_confidence: float,
    range_m: float | str,
    round_correlation: float | str,
    first_round: str,
    last_round: str,
) -> MapErrorModel:
    """Fit the CV-error variogram and settle range, nugget share and round correlation.

    ``range_m="auto"`` uses the fitted range and nugget share; a number is used as given with no
    nugget. ``round_correlation="auto"`` uses :func:`cross_round_correlation` clipped to [0, 1]; a
    number is used as given. The variogram is fitted (as a diagnostic) whenever CV points exist.
    """
    vario: ExponentialVariogram | None = None
    note = ""
    groups = None
    if oof is not None and "round" in oof.columns and oof["round"].notna().all():
        groups = oof["round"].astype(str).to_numpy()
    if oof is not None:
        try:
            vario = fit_cv_error_variogram(oof, confidence=interval_confidence, groups=groups)
        except AccountingError as exc:
            if range_m == "auto":
                raise
            note = f"error variogram not fitted: {exc}"
    elif range_m == "auto":
        raise AccountingError(
            "accounting.error_range_m is 'auto' but there are no cross-validation predictions "
            "(model/cv_predictions.csv); run the training step first or set error_range_m to a number (m)."
        )
    if range_m == "auto":
        assert vario is not None
        rng, nugget, rng_src = vario.range_m, vario.nugget_share, "fitted"
        if vario.range_at_bound:
            note = "fitted range sits on its search bound (poorly identified); consider setting error_range_m"
    else:
        rng, nugget, rng_src = float(range_m), 0.0, "configured"

    estimate, n_pairs = None, 0
    if vario is not None and groups is not None and oof is not None and first_round != last_round:
        z = standardized_errors(oof, confidence=interval_confidence)
        rho, n_pairs = cross_round_correlation(
            oof["x"].to_numpy(float), oof["y"].to_numpy(float), z, groups, first_round, last_round, vario
        )
        estimate = None if math.isnan(rho) else rho
    if round_correlation == "auto":
        if estimate is None:
            raise AccountingError(
                "accounting.round_error_correlation is 'auto' but it cannot be estimated: no cross-validation points of "
                "the first and last round lie within the error range of each other (or their rounds are unknown). Set "
                "round_error_correlation to a number (0 is conservative)."
            )
        rho_used, rho_src = float(np.clip(estimate, 0.0, 1.0)), "estimated"
    else:
        rho_used, rho_src = float(round_correlation), "configured"
    return MapErrorModel(
        range_m=float(rng),
        nugget_share=float(nugget),
        range_source=rng_src,
        round_correlation=rho_used,
        round_correlation_source=rho_src,
        variogram=vario,
        round_correlation_estimate=estimate,
        round_correlation_pairs=n_pairs,
        note=note,
    )


def compute_accounting(
    fields: Sequence[Field],
    sums: ZoneSums,
    *,
    settings: AccountingSettings,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(project, fields)`` sections: Monte Carlo stocks, totals, change and t CO2e per zone.

    ``sums`` are the maps' zone sums (:func:`stream_zone_sums` with ``settings.range_m``).
    """
    sim = simulate_from_sums(
        sums,
        range_m=settings.range_m,
        nugget_share=settings.nugget_share,
        round_correlation=settings.round_correlation,
        n_sim=settings.n_simulations,
        seed=settings.seed,
    )
    out_fields = []
    for i, f in enumerate(fields):
        s = zone_summary(sim, i, confidence=settings.confidence)
        out_fields.append(
            {
                "field_id": f.field_id,
                "name": f.properties.get("name", ""),
                "farm_id": f.properties.get("farm_id", ""),
                "practice": f.properties.get("practice", ""),
                "area_ha": round(f.area_ha, 4),
                "mapped_fraction": float(sim.coverage[i]),
                **s,
            }
        )
    project = zone_summary(sim, len(fields), confidence=settings.confidence)
    project.update(area_ha=round(sum(f.area_ha for f in fields), 4), n_fields=len(fields))
    return project, out_fields
