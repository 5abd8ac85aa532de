"""Bare-soil composites and covariates from masked reflectance time series."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from mrv.config import BareSoilConfig


def normalized_difference(a: xr.DataArray, b: xr.DataArray) -> xr.DataArray:
    return (a - b) / (a + b)


def _nanmedian_last_axis(a: np.ndarray) -> np.ndarray:
    """Median over the last axis ignoring NaN (NaN where all are NaN), without numpy's per-pixel warning.

    Same values as :func:`numpy.nanmedian`: the middle value, or for an even count the two middle
    values summed and halved in the input dtype, as ``numpy.ma.median`` (which ``nanmedian`` uses for
    short axes) does. ``numpy.nanmedian`` warns "All-NaN slice encountered" once per all-NaN pixel
    (``_nanmedian_small`` in numpy/lib/_nanfunctions_impl.py): millions of ``warnings.warn`` calls for a
    scene with pixels never seen bare, more time than reading the imagery.
    """
    ordered = np.sort(a, axis=-1)  # NaN sorts last
    n = np.count_nonzero(~np.isnan(ordered), axis=-1)
    lo = np.take_along_axis(ordered, np.maximum((n - 1) // 2, 0)[..., None], axis=-1)[..., 0]
    hi = np.take_along_axis(ordered, (n // 2).clip(max=a.shape[-1] - 1)[..., None], axis=-1)[..., 0]
    out = np.add(lo, hi)
    np.true_divide(out, 2, out=out, casting="unsafe")
    return out  # n == 0: lo and hi are NaN


def nanmedian(da: xr.DataArray, dim: str = "time") -> xr.DataArray:
    """Per-pixel median over ``dim`` ignoring NaN, lazily when ``da`` is Dask-backed (``dim`` in one chunk)."""
    if da.chunks is not None:
        da = da.chunk({dim: -1})
    return xr.apply_ufunc(
        _nanmedian_last_axis,
        da,
        input_core_dims=[[dim]],
        dask="parallelized",
        output_dtypes=[da.dtype],
        keep_attrs=False,
    )


def bare_soil_mask(ds: xr.Dataset, cfg: BareSoilConfig) -> xr.DataArray:
    """Observations that show bare soil: NDVI <= ``ndvi_max`` and NBR2 <= ``nbr2_max``.

    NDVI = (NIR - red) / (NIR + red); NBR2 = (SWIR1 - SWIR2) / (SWIR1 + SWIR2). Thresholds after
    Castaldi et al. (2019), ISPRS J. Photogramm. Remote Sens. 147:267-282; NBR2 removes dry crop
    residues that NDVI alone keeps.
    """
    ndvi = normalized_difference(ds["nir"], ds["red"])
    nbr2 = normalized_difference(ds["swir16"], ds["swir22"])
    return (ndvi <= cfg.ndvi_max) & (nbr2 <= cfg.nbr2_max)


def bare_soil_composite(ds: xr.Dataset, bands: Sequence[str], cfg: BareSoilConfig) -> xr.Dataset:
    """Per-pixel median reflectance over bare-soil observations, and their count ``n_bare``.

    Pixels with fewer than ``cfg.min_observations`` bare observations are NaN.
    """
    bare = bare_soil_mask(ds, cfg)
    count = bare.sum("time").astype("int16")
    enough = count >= cfg.min_observations
    out = {}
    for b in bands:
        med = nanmedian(ds[b].where(bare), "time").where(enough).astype("float32")
        med.attrs = {"units": "1", "long_name": f"bare-soil median reflectance {b}"}
        out[b] = med
    result = xr.Dataset(out)
    result["n_bare"] = count
    result["n_bare"].attrs = {"units": "count", "long_name": "number of bare-soil observations"}
    return result


def covariate_stack(composite: xr.Dataset, bands: Sequence[str]) -> xr.DataArray:
    """Covariates as one ``(covariate, y, x)`` float32 array: bands plus soil indices.

    BSI (bare soil index) = ((SWIR1 + red) - (NIR + blue)) / ((SWIR1 + red) + (NIR + blue))
    (Rikimaru et al. 2002); NBR2 as in :func:`bare_soil_mask`; brightness = mean visible reflectance.
    """
    c = composite
    layers = {b: c[b] for b in bands}
    layers["bsi"] = normalized_difference(c["swir16"] + c["red"], c["nir"] + c["blue"])
    layers["nbr2"] = normalized_difference(c["swir16"], c["swir22"])
    layers["brightness"] = (c["blue"] + c["green"] + c["red"]) / 3.0
    stack = xr.concat([v.astype("float32") for v in layers.values()], dim="covariate")
    stack = stack.assign_coords(covariate=list(layers))
    stack.name = "covariates"
    return stack
