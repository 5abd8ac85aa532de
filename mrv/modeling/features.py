"""Covariates at sample locations (nearest pixel of the covariate stack on the project grid)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

__all__ = ["NORMALISATION", "apply_normalisation", "extract_at_points", "normalise_stack", "round_normalisation"]


def extract_at_points(stack: xr.DataArray, x: np.ndarray, y: np.ndarray) -> pd.DataFrame:
    """Covariate values at points given in the stack's CRS; NaN where the pixel has no composite.

    Points outside the grid get NaN too, never the edge pixel.
    """
    xs, ys = stack["x"].to_numpy(), stack["y"].to_numpy()
    res_x, res_y = abs(xs[1] - xs[0]), abs(ys[1] - ys[0])
    col = np.rint((np.asarray(x) - xs[0]) / res_x).astype(int)
    row = np.rint((ys[0] - np.asarray(y)) / res_y).astype(int)
    inside = (col >= 0) & (col < xs.size) & (row >= 0) & (row < ys.size)
    values = np.full((len(col), stack.sizes["covariate"]), np.nan, dtype="float32")
    if inside.any():
        picked = stack.isel(
            x=xr.DataArray(col[inside], dims="point"), y=xr.DataArray(row[inside], dims="point")
        ).transpose("point", "covariate")
        values[inside] = np.asarray(picked.values)
    return pd.DataFrame(values, columns=[str(c) for c in stack["covariate"].to_numpy()])


#: Version of the round normalisation (recorded in the model card).
NORMALISATION = "per-round robust z-score over field pixels: (x - median) / IQR"


def round_normalisation(stack: np.ndarray, names: list[str], mask: np.ndarray) -> dict[str, tuple[float, float]]:
    """Per covariate ``(median, IQR)`` of one round's composite over the field pixels ``mask``.

    Dividing each round's covariates by their own spread after removing their own median makes the
    model's inputs invariant to whole-scene multiplicative or additive differences between rounds
    (illumination, atmosphere, residue or moisture on the dates that happened to be bare): a
    multiplicative factor ``B`` gives ``(B x - B med) / (B IQR) = (x - med) / IQR``. Such differences
    otherwise turn into SOC "change" in a model pooled over rounds. Round-invariant covariates
    (terrain) get identical statistics in every round, so they are unaffected. The genuine regional
    change in SOC is removed from the maps too, by design: it is estimated from the re-measured sites
    (:mod:`mrv.accounting.change`). Relative radiometric normalisation in the sense of Schott et al.
    (1988, Remote Sens. Environ. 26:1-16), applied to the covariates rather than the bands.
    """
    out: dict[str, tuple[float, float]] = {}
    for i, name in enumerate(names):
        v = np.asarray(stack[i])[mask]
        v = v[np.isfinite(v)]
        if v.size < 10:
            out[name] = (0.0, 1.0)
            continue
        q25, q50, q75 = (float(q) for q in np.percentile(v, [25, 50, 75]))
        iqr = q75 - q25
        out[name] = (q50, iqr if iqr > 1e-12 else 1.0)
    return out


def apply_normalisation(values: pd.DataFrame, stats: dict[str, tuple[float, float]]) -> pd.DataFrame:
    """Covariate table (columns = covariates) normalised with :func:`round_normalisation` statistics."""
    out = values.copy()
    for name, (center, scale) in stats.items():
        if name in out.columns:
            out[name] = ((out[name].astype("float64") - center) / scale).astype("float32")
    return out


def normalise_stack(stack: xr.DataArray, stats: dict[str, tuple[float, float]]) -> xr.DataArray:
    """``(covariate, y, x)`` stack normalised lazily (Dask-backed stays Dask-backed)."""
    names = [str(c) for c in stack["covariate"].to_numpy()]
    center = xr.DataArray(np.array([stats.get(n, (0.0, 1.0))[0] for n in names], "float32"), dims="covariate")
    scale = xr.DataArray(np.array([stats.get(n, (0.0, 1.0))[1] for n in names], "float32"), dims="covariate")
    return ((stack - center.assign_coords(covariate=stack["covariate"])) / scale.assign_coords(covariate=stack["covariate"])).astype("float32")
