"""Equivalent-soil-mass site stocks in a run (``stocks: {method: esm}``).

Compaction or loosening between rounds changes how much soil a fixed 0-30 cm depth holds, so a
fixed-depth comparison books the moved soil as SOC change. VM0042 v2.2 (Sect. 8.2.1.3 item 7,
Sect. 8.2.1.6) requires comparing stocks in an equivalent soil mass: per site, cumulative SOC is
interpolated against cumulative fine-earth mass through the measured increments (at least two,
e.g. 0-30 and 30-50 cm) and read at one reference mass for every round (Wendt & Hauser 2013, Eur.
J. Soil Sci. 64:58-65; :func:`mrv.samples.esm.esm_stock`). The reference mass is the mean
0-``depth_cm`` fine-earth mass of the first round's sites (``baseline_mean``) unless configured.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mrv.config import RunConfig
from mrv.errors import StockError
from mrv.samples.esm import (
    CumulativeMassCurve,
    cumulative_mass_curve,
    esm_stock,
    mass_at_depth_mg_ha,
    paired_mass_balance_stock,
    reference_mass_mg_ha,
    soc_at_depth_t_ha,
    soil_mass_from_bulk_density_mg_ha,
)
from mrv.samples.formats import load_format
from mrv.samples.ingest import ingest
from mrv.samples.stocks import DEPTH_TOLERANCE_CM

__all__ = ["apply_esm", "baseline_partners", "baseline_reference_mass", "esm_for_round", "esm_profiles"]


def esm_for_round(
    cfg: RunConfig, round_name: str, records: pd.DataFrame, sites: pd.DataFrame, region_bounds: Any
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """ESM stocks for one round's sites; the reference mass comes from the first round's lab samples (its
    files and, when configured, its samples in the store)."""
    first = cfg.rounds[0]
    if round_name == first.name:
        baseline = records
    else:
        parts = []
        for sf in first.samples:
            res = ingest(
                sf.path, sf.format_profile or load_format(sf.format, config_path=cfg.source_path), source=sf.source, submitter=sf.submitter,
                project_crs=cfg.region.crs, region_bounds=region_bounds,
            )  # fmt: skip
            parts.append(res.accepted)
        if first.store is not None:  # the first round fed by the sample store
            from mrv.samples.store import round_samples, store_query

            url, query = store_query(first.store)
            parts.append(round_samples(url, query, project_crs=cfg.region.crs)[0])
        baseline = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if "source" in baseline.columns:
        baseline = baseline[baseline["source"].astype(str) == "lab"]
    ref = baseline_reference_mass(cfg, baseline)
    if round_name == first.name:  # each baseline site's own soil mass to depth_cm is its reference
        return apply_esm(sites, records, ref, depth_cm=cfg.depth_cm, baseline_round=True)
    partners = baseline_partners(sites, baseline, max_distance_m=cfg.samples.gps_tolerance_m)
    return apply_esm(sites, records, ref, depth_cm=cfg.depth_cm, baseline_profiles=partners)


def baseline_partners(
    sites: pd.DataFrame, baseline_records: pd.DataFrame, *, max_distance_m: float
) -> dict[str, CumulativeMassCurve]:
    """Site id of this round -> the ESM profile of the first-round site it re-measures (mutual nearest
    neighbours within ``max_distance_m``, same field; :func:`mrv.accounting.change.pair_sites`)."""
    from mrv.accounting.change import pair_sites

    profiles = esm_profiles(baseline_records)
    if not profiles or len(sites) == 0:
        return {}
    cols = [c for c in ("site_id", "x", "y", "field_id") if c in baseline_records.columns]
    base = baseline_records[cols].groupby("site_id", sort=False).first().reset_index()
    base = base[base["site_id"].astype(str).isin(profiles)].reset_index(drop=True)
    here = sites.reset_index(drop=True)
    pairs = pair_sites(
        base.assign(soc_stock_t_ha=0.0), here.assign(soc_stock_t_ha=0.0), max_distance_m=max_distance_m
    )  # fmt: skip
    ids_base = base["site_id"].astype(str).to_numpy()
    ids_here = here["site_id"].astype(str).to_numpy()
    return {
        str(ids_here[int(j)]): profiles[str(ids_base[int(i)])]
        for i, j in zip(pairs["i_first"], pairs["i_last"], strict=True)
    }


def esm_profiles(records: pd.DataFrame) -> dict[str, CumulativeMassCurve]:
    """Cumulative mass curve (soil mass vs SOC) of every site whose layers all have a measured bulk density.

    ``records`` are accepted sample records (``site_id, top_cm, bottom_cm, soc_g_kg, bulk_density_g_cm3``
    and optionally ``coarse_fragments_vol_pct``); sites with a missing or estimated bulk density, or
    with a single increment (no mass below the reference to interpolate), are left out.
    """
    out: dict[str, CumulativeMassCurve] = {}
    if len(records) == 0:
        return out
    for site, lay in records.groupby("site_id", sort=False):
        bd = lay["bulk_density_g_cm3"].to_numpy(float)
        if len(lay) < 2 or not np.isfinite(bd).all():
            continue
        cf = lay["coarse_fragments_vol_pct"].to_numpy(float) / 100 if "coarse_fragments_vol_pct" in lay else 0.0
        cf = np.nan_to_num(cf, nan=0.0)
        top, bottom = lay["top_cm"].to_numpy(float), lay["bottom_cm"].to_numpy(float)
        mass = soil_mass_from_bulk_density_mg_ha(bd, bottom - top, cf)
        try:
            out[str(site)] = cumulative_mass_curve(top, bottom, mass, lay["soc_g_kg"].to_numpy(float), profile_id=str(site))
        except StockError:
            continue  # geometry problems: the fixed-depth path reports them
    return out


def baseline_reference_mass(cfg: RunConfig, baseline_records: pd.DataFrame) -> float:
    """The configured reference mass, or the mean 0-depth mass of the first round's profiles."""
    ref = cfg.stocks.reference_mass_mg_ha
    if ref != "baseline_mean":
        return float(ref)
    profiles = [p for p in esm_profiles(baseline_records).values() if p.depth_cm[-1] >= cfg.depth_cm]
    if not profiles:
        raise StockError(
            f"stocks.method is 'esm' but no site of the first round has at least two layers with measured bulk density "
            f"down to {cfg.depth_cm:g} cm; sample in increments (e.g. 0-30 and 30-50 cm) with bulk density, or use "
            "stocks.method: fixed."
        )
    return reference_mass_mg_ha(profiles, rule="baseline_mean", depth_cm=cfg.depth_cm)


def apply_esm(
    sites: pd.DataFrame,
    records: pd.DataFrame,
    reference_mass: float,
    *,
    depth_cm: float = 30.0,
    baseline_round: bool = False,
    baseline_profiles: dict[str, CumulativeMassCurve] | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Replace ``soc_stock_t_ha`` of every site with a usable profile by its ESM stock.

    * ``baseline_round``: the carbon of each site's own soil mass to ``depth_cm`` (its fixed-depth stock: the
      baseline soil mass is the reference of its later re-measurements);
    * a site in ``baseline_profiles`` (it re-measures that first-round profile): the carbon of the baseline
      site's soil mass to ``depth_cm`` by the paired mass balance
      (:func:`mrv.samples.esm.paired_mass_balance_stock`);
    * any other site: natural cubic spline of cumulative SOC on cumulative mass read at ``reference_mass``
      (Wendt & Hauser 2013; VM0042 v2.2 Figure 3), PCHIP where the spline decreases.

    Adds ``stock_basis`` (``esm`` or ``fixed_depth``) and ``equivalent_depth_cm``; the stock SD is kept
    (the fixed-depth propagation, a close approximation for the same layers). Returns the table and a
    summary for ``samples.json``.
    """
    sites = sites.copy()
    sites["stock_basis"] = "fixed_depth"
    sites["equivalent_depth_cm"] = np.nan
    sites["reference_mass_mg_ha"] = np.nan
    profiles = esm_profiles(records)
    partners = baseline_profiles or {}
    failed: dict[str, str] = {}
    pchip: list[str] = []
    paired: list[str] = []
    for i, site in zip(sites.index, sites["site_id"].astype(str), strict=True):
        prof = profiles.get(site)
        if prof is None:
            continue
        if baseline_round and prof.depth_cm[-1] >= depth_cm - DEPTH_TOLERANCE_CM:
            own = mass_at_depth_mg_ha(prof, depth_cm)
            sites.loc[i, "soc_stock_t_ha"] = soc_at_depth_t_ha(prof, depth_cm)
            sites.loc[i, "equivalent_depth_cm"] = depth_cm
            sites.loc[i, "stock_basis"] = "esm"
            sites.loc[i, "reference_mass_mg_ha"] = own
            continue
        if site in partners:
            try:
                res = paired_mass_balance_stock(prof, partners[site], depth_cm)
            except StockError as exc:
                failed[site] = str(exc)
            else:
                sites.loc[i, "soc_stock_t_ha"] = res.soc_stock_t_ha
                sites.loc[i, "equivalent_depth_cm"] = res.equivalent_depth_cm
                sites.loc[i, "stock_basis"] = "esm"
                sites.loc[i, "reference_mass_mg_ha"] = res.reference_mass_mg_ha
                paired.append(site)
                continue
        try:
            res = esm_stock(prof, reference_mass)  # natural cubic spline, VM0042 v2.2 Figure 3
        except StockError:
            try:  # the spline overshoots (decreasing cumulative SOC): monotone PCHIP instead, recorded
                res = esm_stock(prof, reference_mass, interpolation="pchip")
                pchip.append(site)
            except StockError as exc:
                failed[site] = str(exc)
                continue
        sites.loc[i, "soc_stock_t_ha"] = res.soc_stock_t_ha
        sites.loc[i, "equivalent_depth_cm"] = res.equivalent_depth_cm
        sites.loc[i, "stock_basis"] = "esm"
        sites.loc[i, "reference_mass_mg_ha"] = reference_mass
    summary = {
        "method": (
            "equivalent soil mass: first round, each site's own soil mass to depth (its fixed-depth stock); later "
            "rounds, re-measured sites in their baseline site's soil mass by the paired mass balance "
            "C_tot - (M_tot - M_base) x c_deep,base (Ellert & Bettany 1995), other sites by the natural cubic spline "
            "of cumulative SOC on cumulative mass at the common reference mass (Wendt & Hauser 2013)"
        ),
        "assumption": "the deepest sampled increment lies below the managed layer; its SOC concentration is unchanged "
        "between rounds",
        "paired_sites": len(paired),
        "pchip_sites": pchip,
        "reference_mass_mg_ha": reference_mass,
        "esm_sites": int((sites["stock_basis"] == "esm").sum()),
        "min_depth_increments": min(
            (len(profiles[s].depth_cm) - 1 for s in sites.loc[sites["stock_basis"] == "esm", "site_id"].astype(str)),
            default=0,
        ),
        "fixed_depth_sites": int((sites["stock_basis"] != "esm").sum()),
        "failed": failed,
    }
    return sites, summary
