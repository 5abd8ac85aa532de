"""From accepted sample records to one 0-depth SOC stock per sampling site, with its uncertainty.

Each source has a measurement-error model (relative SD of SOC, SD of measured bulk density),
configurable in the run config (``samples: error_models:``, :class:`mrv.config.SamplesConfig`).
A record's own ``soc_sd_g_kg`` (the SD a SOM -> SOC conversion added, see
:func:`mrv.samples.stocks.som_to_soc`) is combined with the source's analytical SD in quadrature.
Missing bulk density is estimated with a pedotransfer function whose residual SD is carried
forward (see :func:`mrv.samples.stocks.bulk_density_ptf`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from mrv.config import ErrorModel, SamplesConfig
from mrv.errors import SampleError
from mrv.samples.stocks import bulk_density_ptf, fixed_depth_stock

__all__ = ["DEFAULT_ERROR_MODELS", "ErrorModel", "incomplete_sites", "site_stocks"]

DEFAULT_ERROR_MODELS: Mapping[str, ErrorModel] = SamplesConfig().error_models


def incomplete_sites(records: pd.DataFrame, *, depth_cm: float) -> dict[str, str]:
    """Sites whose layers do not cover 0..depth_cm without gaps, with the reason."""
    problems: dict[str, str] = {}
    for site, layers in records.groupby("site_id", sort=False):
        lay = layers.sort_values("top_cm")
        tops, bottoms = lay["top_cm"].to_numpy(), lay["bottom_cm"].to_numpy()
        if tops[0] > 0:
            problems[str(site)] = f"first layer starts at {tops[0]:g} cm, not at the surface"
        elif np.any(tops[1:] != bottoms[:-1]):
            problems[str(site)] = "layers have gaps or overlaps"
        elif bottoms[-1] < depth_cm:
            problems[str(site)] = f"sampled only to {bottoms[-1]:g} cm, the stock needs {depth_cm:g} cm"
    return problems


def site_stocks(
    records: pd.DataFrame, *, depth_cm: float, error_models: Mapping[str, ErrorModel] | None = None
) -> tuple[pd.DataFrame, dict[str, str]]:
    """One row per complete site: location, source, ``soc_stock_t_ha`` and ``soc_stock_sd_t_ha``.

    SOC SD per layer: ``sqrt((soc_rel_sd x SOC)^2 + soc_sd_g_kg^2)`` -- the source's analytical
    error and, when present, the record's conversion SD, independent errors added in quadrature
    (JCGM 100:2008 "GUM", Eq. 10). Stock SDs then follow :func:`~mrv.samples.stocks.fixed_depth_stock`.

    Returns the table and the incomplete sites that were left out (site_id -> reason).
    """
    models = dict(DEFAULT_ERROR_MODELS) | dict(error_models or {})
    unknown = sorted(set(records["source"].astype(str)) - set(models)) if len(records) else []
    if unknown:
        raise SampleError(
            f"No measurement error model for sample source(s) {unknown}; add them under samples: error_models: "
            f"in the run config (known: {sorted(models)})."
        )
    bad = incomplete_sites(records, depth_cm=depth_cm)
    rec = records[~records["site_id"].isin(list(bad))].copy()
    if rec.empty:
        return _empty(), bad
    rel = rec["source"].map(lambda s: models[s].soc_rel_sd).astype(float)
    analytical = rec["soc_g_kg"].astype(float) * rel
    extra = rec["soc_sd_g_kg"].astype(float).fillna(0.0) if "soc_sd_g_kg" in rec.columns else 0.0
    rec["soc_sd_g_kg"] = np.sqrt(analytical**2 + extra**2)
    measured = rec["bulk_density_g_cm3"].notna()
    ptf_bd, ptf_sd = bulk_density_ptf(rec["soc_g_kg"].to_numpy(dtype=float))
    rec["bulk_density_estimated"] = ~measured
    rec["bulk_density_sd_g_cm3"] = np.where(
        measured, rec["source"].map(lambda s: models[s].bd_sd_g_cm3).astype(float), ptf_sd
    )
    rec["bulk_density_g_cm3"] = np.where(measured, rec["bulk_density_g_cm3"].astype(float), ptf_bd)
    no_bd = rec.loc[rec["bulk_density_g_cm3"].isna(), "site_id"].astype(str).unique()
    for site in no_bd:
        bad[site] = "no bulk density measured and the pedotransfer function does not apply (organic soil)"
    rec = rec[~rec["site_id"].astype(str).isin(list(no_bd))]
    if rec.empty:
        return _empty(), bad
    layers = rec.rename(columns={"site_id": "profile_id"})
    stocks = fixed_depth_stock(layers, depth_cm=depth_cm).set_index("profile_id")
    first = rec.groupby("site_id", sort=False).first()
    out = pd.DataFrame(
        {
            "site_id": first.index.astype(str),
            "source": first["source"].to_numpy(),
            "submitter": first["submitter"].to_numpy(),
            "field_id": first["field_id"].to_numpy(),
            "x": first["x"].to_numpy(dtype=float),
            "y": first["y"].to_numpy(dtype=float),
            "sampling_date": first["sampling_date"].to_numpy(),
            "bulk_density_estimated": rec.groupby("site_id", sort=False)["bulk_density_estimated"].any().to_numpy(),
            "soc_stock_t_ha": stocks.loc[first.index, "soc_stock_t_ha"].to_numpy(dtype=float),
            "soc_stock_sd_t_ha": stocks.loc[first.index, "soc_stock_sd_t_ha"].to_numpy(dtype=float),
        }
    )
    return out, bad


def _empty() -> pd.DataFrame:
    cols = ["site_id", "source", "submitter", "field_id", "x", "y", "sampling_date", "bulk_density_estimated"]
    return pd.DataFrame(columns=[*cols, "soc_stock_t_ha", "soc_stock_sd_t_ha"])
