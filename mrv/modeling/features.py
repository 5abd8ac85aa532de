"""Covariates at sample locations (nearest pixel of the covariate stack on the project grid)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr


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
