"""Bare-soil composites and covariates from masked reflectance time series."""

from __future__ import annotations

from collections.abc import Sequence

import xarray as xr

from mrv.config import BareSoilConfig


def normalized_difference(a: xr.DataArray, b: xr.DataArray) -> xr.DataArray:
    return (a - b) / (a + b)


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
        med = ds[b].where(bare).median("time", skipna=True).where(enough).astype("float32")
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
