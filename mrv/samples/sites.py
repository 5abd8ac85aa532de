"""From accepted sample records to one 0-depth SOC stock per sampling site, with its uncertainty.

Each source has a measurement-error model (relative SD of SOC, SD of measured bulk density),
configurable in the run config (``samples: error_models:``, :class:`mrv.config.SamplesConfig`).
A record's own ``soc_sd_g_kg`` (the SD a SOM -> SOC conversion added, see
:func:`mrv.samples.stocks.som_to_soc`) is combined with the source's analytical SD in quadrature.
Missing bulk density is estimated with a pedotransfer function whose residual SD is carried
forward (see :func:`mrv.samples.stocks.bulk_density_ptf`).

Missing coarse fragments (crowd cores, tables that do not report them; stored as NaN, never 0)
get a stated default with its uncertainty, and the site is flagged ``coarse_fragments_estimated``
(:func:`coarse_fragment_default`): the mean of the coarse fragments measured in the same records
(the region's lab samples) with their between-sample SD, or, with fewer than
:data:`CF_MIN_MEASURED` measured layers, :data:`CF_DEFAULT_VOL_PCT` with :data:`CF_DEFAULT_SD_VOL_PCT`.
Ignoring stones overstates stocks by the stone volume share (stock x (1 - CF), Poeplau, Vos & Don
2017, SOIL 3:61-66): the crowd stocks of the synthetic regions (coarse fragments 0-15 vol %) were
8-9 % too high before this default.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from mrv.config import SampleErrorModel, SamplesConfig
from mrv.errors import SampleError
from mrv.samples.stocks import bulk_density_ptf, fixed_depth_stock

__all__ = ["DEFAULT_ERROR_MODELS", "SampleErrorModel", "coarse_fragment_default", "incomplete_sites", "site_stocks"]

DEFAULT_ERROR_MODELS: Mapping[str, SampleErrorModel] = SamplesConfig().error_models

#: Coarse fragments (vol %) assumed where none were measured and the records hold too few measured
#: values to take the regional mean from: stone-free, with an SD of 5 vol % so that the assumption
#: widens the stock's uncertainty instead of being silent.
CF_DEFAULT_VOL_PCT = 0.0
CF_DEFAULT_SD_VOL_PCT = 5.0
#: Fewest measured layers from which the regional mean coarse-fragment content is used.
CF_MIN_MEASURED = 5


def coarse_fragment_default(records: pd.DataFrame) -> tuple[float, float, str]:
    """(default vol %, its SD vol %, where it came from) for layers without measured coarse fragments.

    The mean and SD of the measured layers of ``records`` (at least :data:`CF_MIN_MEASURED`), else
    :data:`CF_DEFAULT_VOL_PCT` +- :data:`CF_DEFAULT_SD_VOL_PCT`.
    """
    cf = pd.to_numeric(records.get("coarse_fragments_vol_pct", pd.Series(dtype=float)), errors="coerce")
    measured = cf[np.isfinite(cf)]
    if len(measured) >= CF_MIN_MEASURED:
        return float(measured.mean()), float(measured.std(ddof=1)), f"mean of {len(measured)} measured layers"
    return CF_DEFAULT_VOL_PCT, CF_DEFAULT_SD_VOL_PCT, "stated default (stone-free +- 5 vol %)"


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
    records: pd.DataFrame, *, depth_cm: float, error_models: Mapping[str, SampleErrorModel] | None = None
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
    cf_default, cf_sd, _ = coarse_fragment_default(records)
    rec = records[~records["site_id"].isin(list(bad))].copy()
    if rec.empty:
        return _empty(), bad
    cf = pd.to_numeric(rec.get("coarse_fragments_vol_pct", pd.Series(np.nan, index=rec.index)), errors="coerce")
    cf_missing = ~np.isfinite(cf.to_numpy(dtype=float))
    rec["coarse_fragments_estimated"] = cf_missing
    rec["coarse_fragments_vol_pct"] = np.where(cf_missing, cf_default, cf)
    rec["coarse_fragments_sd_vol_pct"] = np.where(cf_missing, cf_sd, 0.0)
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
            "coarse_fragments_estimated": rec.groupby("site_id", sort=False)["coarse_fragments_estimated"].any().to_numpy(),
            "soc_stock_t_ha": stocks.loc[first.index, "soc_stock_t_ha"].to_numpy(dtype=float),
            "soc_stock_sd_t_ha": stocks.loc[first.index, "soc_stock_sd_t_ha"].to_numpy(dtype=float),
        }
    )
    return out, bad


def _empty() -> pd.DataFrame:
    cols = ["site_id", "source", "submitter", "field_id", "x", "y", "sampling_date", "bulk_density_estimated",
            "coarse_fragments_estimated"]
    return pd.DataFrame(columns=[*cols, "soc_stock_t_ha", "soc_stock_sd_t_ha"])
