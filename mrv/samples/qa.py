"""Quality checks across samples: duplicates, near-duplicates and crowd outliers against nearby lab sites.

Flagged samples are not deleted: they are returned with a flag and a reason so that a store or
a report can show them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree


def flag_duplicates(sites: pd.DataFrame, *, tolerance_m: float = 15.0) -> pd.DataFrame:
    """Add ``qa_flag`` (empty when fine) to a site table.

    A site within ``tolerance_m`` of an earlier site of the same source and sampling date is a
    near-duplicate (a re-submission or GPS jitter of one visit); the earlier one is kept.
    """
    out = sites.reset_index(drop=True).copy()
    out["qa_flag"] = ""
    if out.empty:
        return out
    tree = cKDTree(out[["x", "y"]].to_numpy(dtype=float))
    for i, j in sorted(tree.query_pairs(r=tolerance_m)):
        a, b = out.loc[i], out.loc[j]
        if a["source"] != b["source"] or a["sampling_date"] != b["sampling_date"] or out.at[i, "qa_flag"]:
            continue
        same = np.isclose(a["soc_stock_t_ha"], b["soc_stock_t_ha"]) and np.isclose(a["x"], b["x"])
        out.at[j, "qa_flag"] = (
            f"exact duplicate of {a['site_id']}"
            if same
            else f"within {tolerance_m:g} m of {a['site_id']} on the same day"
        )
    return out


#: Consistency constant of the MAD for the normal distribution: 1 / Phi^-1(3/4).
MAD_TO_SD = 1.4826


def robust_sd(values: np.ndarray) -> float:
    """Robust SD: ``1.4826 x median(|x - median(x)|)`` (the normalised MAD).

    The median absolute deviation has a 50 % breakdown point, so up to half the values may be
    gross errors without inflating it; the factor 1.4826 makes it estimate the SD of normal data
    (Rousseeuw & Croux 1993, "Alternatives to the median absolute deviation", J. Am. Stat.
    Assoc. 88:1273-1283, Eq. 1).
    """
    v = np.asarray(values, dtype=float)
    return float(MAD_TO_SD * np.median(np.abs(v - np.median(v))))


def flag_outliers_against_lab(
    sites: pd.DataFrame,
    *,
    radius_m: float = 500.0,
    k: float = 3.5,
    min_lab_sites: int = 3,
    source: str = "crowd",
    reference: str = "lab",
    min_sd_t_ha: float = 1.0,
) -> pd.DataFrame:
    """Flag ``source`` sites whose stock is implausible next to the ``reference`` (lab) sites around them.

    For each ``source`` site with at least ``min_lab_sites`` reference sites within ``radius_m``
    (same sampling round assumed: pass one round's sites), the robust score is::

        z = (stock - median(lab stocks)) / sqrt(s_lab^2 + sd_site^2)

    with ``s_lab`` the normalised MAD of the nearby lab stocks (:func:`robust_sd`, Rousseeuw & Croux
    1993; at least ``min_sd_t_ha`` so that a few identical lab values cannot make every
    neighbour an outlier) and ``sd_site`` the site's own stock SD (its expected measurement
    error: a crowd stock is not an outlier merely for being as noisy as its error model says).
    ``|z| > k`` sets ``qa_flag``; the default k = 3.5 is the cut-off Iglewicz & Hoaglin (1993, "How
    to Detect and Handle Outliers", ASQC) recommend for MAD-based modified z-scores. Typical causes:
    a wrong unit (% written as g/kg), a point placed in the wrong field, an organic spot.

    Flagged sites are kept (with the reason appended to ``qa_flag``), never deleted; sites without
    enough lab neighbours are left unflagged. Adds ``qa_flag`` if missing.
    """
    out = sites.reset_index(drop=True).copy()
    if "qa_flag" not in out.columns:
        out["qa_flag"] = ""
    out["qa_flag"] = out["qa_flag"].fillna("").astype(str)
    if out.empty:
        return out
    is_ref = (out["source"] == reference).to_numpy()
    is_src = (out["source"] == source).to_numpy()
    if is_ref.sum() < min_lab_sites or not is_src.any():
        return out
    xy = out[["x", "y"]].to_numpy(dtype=float)
    ref_idx = np.flatnonzero(is_ref)
    ref_stock = out["soc_stock_t_ha"].to_numpy(dtype=float)[ref_idx]
    tree = cKDTree(xy[ref_idx])
    stock = out["soc_stock_t_ha"].to_numpy(dtype=float)
    sd = out["soc_stock_sd_t_ha"].to_numpy(dtype=float) if "soc_stock_sd_t_ha" in out.columns else np.zeros(len(out))
    for i in np.flatnonzero(is_src):
        near = tree.query_ball_point(xy[i], r=radius_m)
        if len(near) < min_lab_sites:
            continue
        values = ref_stock[near]
        med = float(np.median(values))
        s_lab = max(robust_sd(values), min_sd_t_ha)
        scale = float(np.hypot(s_lab, np.nan_to_num(sd[i])))
        z = (stock[i] - med) / scale
        if abs(z) > k:
            side = "above" if z > 0 else "below"
            note = (
                f"stock {stock[i]:.1f} t C/ha is far {side} the {len(near)} lab sites within {radius_m:g} m "
                f"(median {med:.1f} t C/ha, {abs(z):.1f} robust SDs); check units, location and sample"
            )
            before = str(out.at[i, "qa_flag"])
            out.at[i, "qa_flag"] = f"{before}; {note}" if before else note
    return out
