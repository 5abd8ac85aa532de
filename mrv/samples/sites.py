"""From accepted sample records to one 0-depth SOC stock per sampling site, with its uncertainty.

Each source has a measurement-error model (relative SD of SOC, SD of measured bulk density).
Missing bulk density is estimated with a pedotransfer function whose residual SD is carried
forward (see :func:`mrv.samples.stocks.bulk_density_ptf`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mrv.samples.stocks import bulk_density_ptf, fixed_depth_stock


@dataclass(frozen=True)
class ErrorModel:
    """Measurement error of one sample source."""

    soc_rel_sd: float
    """Relative SD of the SOC concentration (dry combustion in an accredited lab: ~3-5 %)."""
    bd_sd_g_cm3: float = 0.05
    """SD of a measured core bulk density."""


DEFAULT_ERROR_MODELS = {"lab": ErrorModel(soc_rel_sd=0.04), "crowd": ErrorModel(soc_rel_sd=0.20)}


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
    records: pd.DataFrame, *, depth_cm: float, error_models: dict[str, ErrorModel] | None = None
) -> tuple[pd.DataFrame, dict[str, str]]:
    """One row per complete site: location, source, ``soc_stock_t_ha`` and ``soc_stock_sd_t_ha``.

    Returns the table and the incomplete sites that were left out (site_id -> reason).
    """
    models = error_models or DEFAULT_ERROR_MODELS
    bad = incomplete_sites(records, depth_cm=depth_cm)
    rec = records[~records["site_id"].isin(list(bad))].copy()
    if rec.empty:
        return _empty(), bad
    rel = rec["source"].map(lambda s: models[s].soc_rel_sd).astype(float)
    rec["soc_sd_g_kg"] = rec["soc_g_kg"].astype(float) * rel
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
