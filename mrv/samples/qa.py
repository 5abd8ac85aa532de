"""Quality checks across samples: duplicates, GPS accuracy and jitter, field edges, outliers against lab data.

Flagged samples are not deleted: they are returned with a reason in ``qa_flag`` (``"; "``-joined,
written for a field technician) so that a store or a report can show them and the model can leave
them out. Every function is pure: a frame (plus geometries and numbers) in, a copy with
``qa_flag`` out.

Two levels:

* **samples** (one depth interval at one site, the rows of the sample store and of an ingested file):
  :func:`flag_sample_duplicates`, :func:`flag_gps_accuracy`, :func:`flag_position_jitter`,
  :func:`flag_sample_outliers_against_lab`, all four together in :func:`check_samples`;
* **sites** (one 0-depth stock per site, :func:`mrv.samples.sites.site_stocks`):
  :func:`flag_duplicates`, :func:`flag_outliers_against_lab`, :func:`carry_sample_flags` (a site
  inherits the flags of its samples) and :func:`flag_field_edges` (which also works on samples).

Order matters only in that a check never clears flags set before it, except :func:`flag_duplicates`,
which starts the site table's ``qa_flag`` afresh (call it first).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import shapely
from scipy.spatial import cKDTree
from shapely.geometry.base import BaseGeometry

from mrv.config import SampleErrorModel, SamplesConfig

__all__ = [
    "SampleChecks",
    "carry_sample_flags",
    "check_samples",
    "flag_duplicates",
    "flag_field_edges",
    "flag_gps_accuracy",
    "flag_outliers_against_lab",
    "flag_position_jitter",
    "flag_sample_duplicates",
    "flag_sample_outliers_against_lab",
    "lab_soc_over",
    "robust_sd",
]

#: Default position tolerance (m); see :attr:`mrv.config.SamplesConfig.gps_tolerance_m` for the sources.
GPS_TOLERANCE_M = SamplesConfig.gps_tolerance_m
#: Two positions closer than this (m) are "the same position" (coordinates retyped or reprojected).
SAME_POSITION_M = 0.01


# ------------------------------------------------------------------------------------------ helpers


def _with_flags(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """A copy of ``frame`` and its ``qa_flag`` texts as a list (empty strings where unflagged).

    The copy is shallow (the checks only replace the ``qa_flag`` column, never write into the others), so a
    chain of checks over 200,000 samples does not hold several copies of every column.
    """
    out = frame.copy(deep=False)
    if "qa_flag" not in out.columns:
        out["qa_flag"] = ""
    flags = [str(v) for v in out["qa_flag"].astype(object).fillna("").tolist()]
    return out, flags


def _missing(value: object) -> bool:
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def _add(flags: list[str], i: int, note: str) -> None:
    """Append ``note`` to flag ``i`` unless it is already there."""
    before = flags[i]
    if note in before.split("; "):
        return
    flags[i] = f"{before}; {note}" if before else note


def _done(out: pd.DataFrame, flags: list[str]) -> pd.DataFrame:
    out["qa_flag"] = flags
    return out


def _text(value: object) -> str:
    return "" if _missing(value) else str(value).strip()


def _describe(frame: pd.DataFrame, i: int) -> str:
    """``sample S1 (LabA, submission 3)``: as much as the frame says about its ``i``-th record."""
    row = frame.iloc[i]

    def get(col: str) -> object:
        return row[col] if col in frame.columns else None

    what = f"sample {_text(get('sample_id')) or _text(get('site_id'))}"
    extra = [_text(get("agency")) or _text(get("submitter"))]
    sub = get("submission_id")
    if not _missing(sub):
        extra.append(f"submission {int(float(str(sub)))}")
    extra = [e for e in extra if e]
    return f"{what} ({', '.join(extra)})" if extra else what


def _xy(frame: pd.DataFrame) -> np.ndarray:
    return frame[["x", "y"]].to_numpy(dtype=float)


# ------------------------------------------------------------------------------- sample-level checks


#: Two SOC values closer than this (g/kg) "agree" in the near-duplicate check: half the last digit of a
#: value reported to 0.1 g/kg, so a retyped or re-exported record agrees and two different cores rarely do.
DUPLICATE_SOC_TOLERANCE_G_KG = 0.05
#: Bulk densities closer than this (g/cm3) agree (half the last digit of a value reported to 0.01 g/cm3).
DUPLICATE_BD_TOLERANCE_G_CM3 = 0.005
#: At most this many nearest records (of the same source, date and depth) are examined per sample, so
#: thousands of co-located samples cost O(n log n), not O(n^2).
DUPLICATE_MAX_CANDIDATES = 32


def flag_sample_duplicates(
    samples: pd.DataFrame,
    *,
    tolerance_m: float = 15.0,
    by: Sequence[str] = ("source",),
    site_by: Sequence[str] = ("agency", "site_id"),
    soc_tolerance_g_kg: float = DUPLICATE_SOC_TOLERANCE_G_KG,
    max_candidates: int = DUPLICATE_MAX_CANDIDATES,
    evaluate: Sequence[bool] | np.ndarray | None = None,
) -> pd.DataFrame:
    """Flag samples that repeat an earlier sample: same ``by`` columns, date and depth, within ``tolerance_m``,
    and the same site id or the same values.

    Rows are taken in frame order (oldest first: the store sorts by submission and row); the
    earliest matching record is kept unflagged and each later one is flagged as

    * ``duplicate of sample S1 (...)`` when position (within 1 cm) and SOC are the same, or
    * ``N m from sample S1 (...) with the same date and depth and the same site id / SOC`` otherwise
      (a re-submission of one sample with GPS jitter or a new id).

    A near record is a duplicate only when its site id agrees (``site_by`` columns, e.g. agency +
    site id: the same visit recorded twice) or its SOC agrees within ``soc_tolerance_g_kg`` (and
    its bulk density within 0.005 g/cm3 when both have one): two different cores 6-14 m apart on a
    dense sampling grid have their own site ids and values and are not duplicates. The layers of
    one site (different depths) and samples of different sources (a crowd core taken next to a lab
    site on the same day is a second measurement, not a copy) are never duplicates of each other.
    ``tolerance_m`` defaults to ``samples.duplicate_tolerance_m`` (15 m: one and a half
    Sentinel-2 pixels, beyond the ~10 m error of a phone fix).

    Cost: records are grouped by source, date and depth first; within a group each evaluated
    record examines its ``max_candidates`` nearest records (k-d tree), so the work is
    O(n log n) even for thousands of records at one point. ``evaluate`` (a boolean per row)
    limits which rows are judged, e.g. a new submission's samples.
    """
    out, flags = _with_flags(samples)
    n = len(out)
    if n < 2:
        return _done(out, flags)
    xy = _xy(out)
    ok = np.isfinite(xy).all(axis=1)
    judge = np.ones(n, dtype=bool) if evaluate is None else np.asarray(evaluate, dtype=bool)
    key_cols = [c for c in by if c in out.columns]
    keys = pd.DataFrame({f"k{i}": out[c].astype(str).to_numpy() for i, c in enumerate(key_cols)})
    keys["date"] = out["sampling_date"].astype(str).to_numpy()
    keys["top"] = out["top_cm"].to_numpy(dtype=float)
    keys["bottom"] = out["bottom_cm"].to_numpy(dtype=float)
    keys = keys[ok]
    site_cols = [c for c in site_by if c in out.columns]
    if "site_id" in site_cols:
        parts = pd.DataFrame({c: out[c].astype(str).str.casefold().to_numpy() for c in site_cols})
        site_code = parts.groupby(site_cols, sort=False, dropna=False).ngroup().to_numpy().copy()
        site_code[out["site_id"].map(_text).to_numpy() == ""] = -1
    else:
        site_code = np.full(n, -1)
    soc = out["soc_g_kg"].to_numpy(dtype=float)
    bd = out["bulk_density_g_cm3"].to_numpy(dtype=float) if "bulk_density_g_cm3" in out.columns else np.full(n, np.nan)
    earliest = np.full(n, -1)
    by_site = np.zeros(n, dtype=bool)
    for members in keys.groupby(list(keys.columns), sort=False, dropna=False).indices.values():
        if len(members) < 2:
            continue
        rows = keys.index.to_numpy()[members]  # positions in the frame
        targets = rows[judge[rows]]
        if not len(targets):
            continue
        k = min(max_candidates, len(rows))
        dist, nb = cKDTree(xy[rows]).query(xy[targets], k=k, distance_upper_bound=tolerance_m)
        dist, nb = dist.reshape(len(targets), k), nb.reshape(len(targets), k)
        # The group's earliest record is always a candidate too (ties at one point are returned in any order).
        d0 = np.hypot(*(xy[targets] - xy[rows[0]]).T)
        dist = np.column_stack([np.where(d0 <= tolerance_m, d0, np.inf), dist])
        nb = np.column_stack([np.zeros(len(targets), dtype=nb.dtype), nb])
        found = np.isfinite(dist)
        cand = rows[np.where(found, np.minimum(nb, len(rows) - 1), 0)]
        t = targets[:, None]
        earlier = found & (cand < t)
        same_site = (site_code[cand] == site_code[t]) & (site_code[t] >= 0)
        same_soc = np.abs(soc[cand] - soc[t]) <= soc_tolerance_g_kg + 1e-9
        both_bd = np.isfinite(bd[cand]) & np.isfinite(bd[t])
        same_bd = ~both_bd | (np.abs(bd[cand] - bd[t]) <= DUPLICATE_BD_TOLERANCE_G_CM3 + 1e-9)
        match = earlier & (same_site | (same_soc & same_bd))
        first = np.where(match, cand, n).min(axis=1)
        hit = first < n
        earliest[targets[hit]] = first[hit]
        pick = np.argmax(match & (cand == first[:, None]), axis=1)
        by_site[targets[hit]] = same_site[np.arange(len(targets)), pick][hit]
    for j in np.flatnonzero(earliest >= 0):
        i = int(earliest[j])
        d = float(np.hypot(*(xy[j] - xy[i])))
        ref = _describe(out, i)
        if d <= SAME_POSITION_M and abs(soc[i] - soc[j]) <= 1e-9:
            note = f"duplicate of {ref}: same position, date, depth and SOC; keep one of the two records"
        else:
            why = "the same site id" if by_site[j] else f"SOC within {soc_tolerance_g_kg:g} g/kg"
            note = (
                f"{d:.1f} m from {ref} with the same date and depth and {why} (closer than {tolerance_m:g} m): "
                "probably the same sample recorded twice; keep one"
            )
        _add(flags, int(j), note)
    return _done(out, flags)


def flag_gps_accuracy(
    samples: pd.DataFrame, *, tolerance_m: float = GPS_TOLERANCE_M, column: str = "gps_accuracy_m"
) -> pd.DataFrame:
    """Flag samples whose reported GPS accuracy (m) is worse than ``tolerance_m``.

    Consumer phones reach about 3-10 m under open sky (GPS.gov, "GPS Accuracy": ~4.9 m for
    smartphones; Merry & Bettinger 2019, "Smartphone GPS accuracy study in an urban environment",
    PLoS ONE 14:e0219890: 7-13 m). A fix the device itself reports as worse than the 10 m default
    was degraded (canopy, buildings, cold start): the sample may sit in the neighbouring field or
    pixel. Rows without an accuracy (column absent or empty) are not judged here.
    """
    out, flags = _with_flags(samples)
    if column not in out.columns or out.empty:
        return _done(out, flags)
    acc = pd.to_numeric(out[column], errors="coerce").to_numpy(dtype=float)
    for i in np.flatnonzero(np.nan_to_num(acc, nan=0.0) > tolerance_m):
        _add(
            flags,
            int(i),
            f"GPS accuracy {acc[i]:.0f} m is worse than the {tolerance_m:g} m tolerance: the position may lie in a "
            "neighbouring field or pixel; take the position again with a clear view of the sky",
        )
    return _done(out, flags)


def flag_position_jitter(
    samples: pd.DataFrame,
    *,
    tolerance_m: float = GPS_TOLERANCE_M,
    by: Sequence[str] = ("source", "submitter", "site_id"),
) -> pd.DataFrame:
    """Flag records of one site whose position is more than ``tolerance_m`` from the site's first record.

    A site is identified by the ``by`` columns (the store uses ``agency`` + ``site_id``; a run,
    which has no agency, ``source`` + ``submitter`` + ``site_id``). Its layers and re-visits must be
    at one place; records further apart than the position tolerance (GPS jitter of a re-visit, a
    typo, a reused site id) cannot be paired as one site. The first record in frame order (the
    oldest) is the reference and stays unflagged; each deviating later record gets
    ``positions of site P1 differ by N m (...)``. Rows without a site id are skipped.
    """
    out, flags = _with_flags(samples)
    cols = [c for c in by if c in out.columns]
    if out.empty or "site_id" not in cols:
        return _done(out, flags)
    xy = _xy(out)
    site = out["site_id"].map(_text).to_numpy()
    keyed = out[cols].astype(str).assign(_pos=np.arange(len(out)))[site != ""]
    # Vectorised: the position of each record's first record of the same site, then the distance to it.
    first = keyed.groupby(cols, sort=False)["_pos"].transform("first").to_numpy(dtype=int)
    pos = keyed["_pos"].to_numpy(dtype=int)
    dist = np.hypot(*(xy[pos] - xy[first]).T)
    for p, f, d in zip(pos, first, dist, strict=True):
        if d > tolerance_m:
            _add(
                flags,
                int(p),
                f"positions of site {site[f]} differ by {d:.0f} m (this record vs. "
                f"{_describe(out, int(f))}; tolerance {tolerance_m:g} m): GPS jitter or a wrong site id; "
                "check the coordinates",
            )
    return _done(out, flags)


# ---------------------------------------------------------------------------------------- outliers


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


@dataclass(frozen=True)
class _Outlier:
    index: int
    z: float
    median: float
    n: int


def _robust_outliers(
    xy: np.ndarray,
    values: np.ndarray,
    sds: np.ndarray,
    ref_xy: np.ndarray,
    ref_values: np.ndarray,
    *,
    radius_m: float,
    k: float,
    min_ref: int,
    min_sd: float,
) -> list[_Outlier]:
    """Points whose value is more than ``k`` robust SDs from the median of the reference values within ``radius_m``.

    ``z = (value - median(ref)) / sqrt(max(s_ref, min_sd)^2 + sd^2)`` with ``s_ref`` the normalised
    MAD of the nearby reference values (:func:`robust_sd`) and ``sd`` the point's own expected
    measurement error; points with fewer than ``min_ref`` references nearby are not judged.
    """
    ok_ref = np.isfinite(ref_values) & np.isfinite(ref_xy).all(axis=1)
    ref_xy, ref_values = ref_xy[ok_ref], ref_values[ok_ref]
    if len(ref_values) < min_ref or len(values) == 0:
        return []
    tree = cKDTree(ref_xy)
    found: list[_Outlier] = []
    ok = np.flatnonzero(np.isfinite(values) & np.isfinite(xy).all(axis=1))
    neighbours = tree.query_ball_point(xy[ok], r=radius_m) if len(ok) else []
    for i, near in zip(ok.tolist(), neighbours, strict=True):
        if len(near) < min_ref:
            continue
        ref = ref_values[near]
        med = float(np.median(ref))
        scale = float(np.hypot(max(robust_sd(ref), min_sd), np.nan_to_num(sds[i])))
        z = (float(values[i]) - med) / scale
        if abs(z) > k:
            found.append(_Outlier(i, z, med, len(near)))
    return found


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
    out = sites.reset_index(drop=True)
    out, flags = _with_flags(out)
    if out.empty:
        return _done(out, flags)
    is_ref = (out["source"] == reference).to_numpy()
    src = np.flatnonzero((out["source"] == source).to_numpy())
    xy = _xy(out)
    stock = out["soc_stock_t_ha"].to_numpy(dtype=float)
    sd = out["soc_stock_sd_t_ha"].to_numpy(dtype=float) if "soc_stock_sd_t_ha" in out.columns else np.zeros(len(out))
    found = _robust_outliers(xy[src], stock[src], sd[src], xy[is_ref], stock[is_ref], radius_m=radius_m, k=k,
                             min_ref=min_lab_sites, min_sd=min_sd_t_ha)  # fmt: skip
    for o in found:
        i = int(src[o.index])
        side = "above" if o.z > 0 else "below"
        _add(
            flags,
            i,
            f"stock {stock[i]:.1f} t C/ha is far {side} the {o.n} lab sites within {radius_m:g} m "
            f"(median {o.median:.1f} t C/ha, {abs(o.z):.1f} robust SDs); check units, location and sample",
        )
    return _done(out, flags)


def lab_soc_over(
    lab: pd.DataFrame, top_cm: float, bottom_cm: float, *, by: Sequence[str] = ("source", "submitter", "site_id")
) -> pd.DataFrame:
    """Per lab site: position and its mean SOC (g/kg) over ``top_cm..bottom_cm``; sites not covering it are left out.

    The mean is mass-weighted (overlap thickness x bulk density) when every overlapping layer has a
    measured bulk density -- a mixed core of the interval contains soil mass, not thickness -- and
    thickness-weighted otherwise.
    """
    cols = [c for c in by if c in lab.columns]
    if lab.empty or not cols:
        return pd.DataFrame({"x": [], "y": [], "soc_g_kg": []})
    t = lab["top_cm"].to_numpy(dtype=float)
    b = lab["bottom_cm"].to_numpy(dtype=float)
    overlap = np.clip(np.minimum(b, bottom_cm) - np.maximum(t, top_cm), 0.0, None)
    bd = (
        lab["bulk_density_g_cm3"].to_numpy(dtype=float)
        if "bulk_density_g_cm3" in lab.columns
        else np.full(len(lab), np.nan)
    )
    soc = lab["soc_g_kg"].to_numpy(dtype=float)
    mass = overlap * bd
    work = pd.DataFrame(
        {
            "x": lab["x"].to_numpy(dtype=float),
            "y": lab["y"].to_numpy(dtype=float),
            "overlap": overlap,
            "soc_thick": soc * overlap,
            "mass": np.nan_to_num(mass),
            "soc_mass": np.nan_to_num(soc * mass),
            "no_bd": ~np.isfinite(mass),
        }
    )
    for c in cols:
        work[f"_k_{c}"] = lab[c].astype(str).to_numpy()
    work = work[overlap > 0]
    if work.empty:
        return pd.DataFrame({"x": [], "y": [], "soc_g_kg": []})
    g = work.groupby([f"_k_{c}" for c in cols], sort=False).agg(
        x=("x", "first"), y=("y", "first"), overlap=("overlap", "sum"), soc_thick=("soc_thick", "sum"),
        mass=("mass", "sum"), soc_mass=("soc_mass", "sum"), no_bd=("no_bd", "any"),
    )  # fmt: skip
    covered = np.isclose(g["overlap"].to_numpy(), bottom_cm - top_cm, rtol=0.0, atol=1e-6)
    by_mass = ~g["no_bd"].to_numpy() & (g["mass"].to_numpy() > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.where(by_mass, g["soc_mass"] / g["mass"], g["soc_thick"] / g["overlap"])
    # Sites whose layers do not cover the interval (or overlap each other) are left out.
    return pd.DataFrame(
        {"x": g["x"].to_numpy()[covered], "y": g["y"].to_numpy()[covered], "soc_g_kg": value[covered]}
    ).reset_index(drop=True)


def flag_sample_outliers_against_lab(
    samples: pd.DataFrame,
    *,
    radius_m: float = 500.0,
    k: float = 3.5,
    min_lab_sites: int = 3,
    error_models: Mapping[str, SampleErrorModel] | None = None,
    source: str = "crowd",
    reference: str = "lab",
    site_by: Sequence[str] = ("source", "submitter", "site_id"),
    min_sd_g_kg: float = 1.0,
    evaluate: Sequence[bool] | np.ndarray | None = None,
) -> pd.DataFrame:
    """Flag ``source`` samples whose SOC concentration is implausible next to the ``reference`` (lab) sites around them.

    The sample-level twin of :func:`flag_outliers_against_lab` (same robust score, k = 3.5 after
    Iglewicz & Hoaglin 1993), compared at the level every stored sample has: **SOC concentration
    (g/kg) over the sample's own depth interval**. Stocks are not used because crowd samples have no
    bulk density (a stock would compare the pedotransfer function, not the measurement) and
    single layers are not sites. For a crowd core of 0-30 cm each nearby lab site contributes
    its mean SOC over 0-30 cm (:func:`lab_soc_over`; sites whose layers do not cover the interval
    are left out). The sample's own SD is its source's relative error (``error_models``, crowd
    20 %) combined with a conversion SD (``soc_sd_g_kg``) in quadrature; ``min_sd_g_kg`` bounds the
    lab spread from below (1 g/kg: about twice the analytical SD of a lab SOC of 15 g/kg at 4 %).

    Reference samples that already carry a flag (duplicates, position problems) are not used.
    Lab samples of other years count too: SOC changes by well under 1 g/kg a year on arable land,
    small next to the spread between sites. ``evaluate`` (a boolean per row) limits which rows are
    judged, e.g. the samples of a new submission.
    """
    out, flags = _with_flags(samples)
    if out.empty:
        return _done(out, flags)
    models = dict(SamplesConfig().error_models) | dict(error_models or {})
    is_src = np.array(out["source"] == source, dtype=bool)
    if evaluate is not None:
        is_src &= np.asarray(evaluate, dtype=bool)
    clean = np.array([f == "" for f in flags])
    ref = out[(out["source"] == reference).to_numpy() & clean]
    if not is_src.any() or ref.empty:
        return _done(out, flags)
    src = out[is_src]
    pos = np.flatnonzero(is_src)
    soc = src["soc_g_kg"].to_numpy(dtype=float)
    rel = models[source].soc_rel_sd if source in models else 0.0
    extra = src["soc_sd_g_kg"].to_numpy(dtype=float) if "soc_sd_g_kg" in src.columns else np.zeros(len(src))
    sd = np.hypot(rel * soc, np.nan_to_num(extra))
    src_xy = _xy(src)
    intervals = pd.DataFrame(
        {"top": src["top_cm"].to_numpy(dtype=float), "bottom": src["bottom_cm"].to_numpy(dtype=float)}
    )
    for key, members in intervals.groupby(["top", "bottom"], sort=False).indices.items():
        top, bottom = (float(v) for v in key)  # type: ignore[attr-defined]  # a (top, bottom) tuple
        lab_sites = lab_soc_over(ref, top, bottom, by=site_by)
        sel = np.asarray(members)
        found = _robust_outliers(src_xy[sel], soc[sel], sd[sel], _xy(lab_sites),
                                 lab_sites["soc_g_kg"].to_numpy(dtype=float), radius_m=radius_m, k=k,
                                 min_ref=min_lab_sites, min_sd=min_sd_g_kg)  # fmt: skip
        for o in found:
            j = int(sel[o.index])
            side = "above" if o.z > 0 else "below"
            _add(
                flags,
                int(pos[j]),
                f"SOC {soc[j]:.1f} g/kg ({top:g}-{bottom:g} cm) is far {side} the {o.n} lab sites within "
                f"{radius_m:g} m (median {o.median:.1f} g/kg over the same depth, {abs(o.z):.1f} robust SDs); "
                "check units (% or g/kg), location and sample",
            )
    return _done(out, flags)


# ------------------------------------------------------------------------------------- all of them


@dataclass(frozen=True)
class SampleChecks:
    """Thresholds of :func:`check_samples`; :meth:`from_config` takes them from a run config's ``samples:``."""

    duplicate_tolerance_m: float = SamplesConfig.duplicate_tolerance_m
    duplicate_soc_tolerance_g_kg: float = DUPLICATE_SOC_TOLERANCE_G_KG
    gps_tolerance_m: float = SamplesConfig.gps_tolerance_m
    outlier_radius_m: float = SamplesConfig.outlier_radius_m
    outlier_k: float = SamplesConfig.outlier_k
    outlier_min_lab_sites: int = SamplesConfig.outlier_min_lab_sites
    error_models: Mapping[str, SampleErrorModel] = field(default_factory=lambda: SamplesConfig().error_models)

    @classmethod
    def from_config(cls, cfg: SamplesConfig) -> SampleChecks:
        return cls(
            duplicate_tolerance_m=cfg.duplicate_tolerance_m,
            gps_tolerance_m=cfg.gps_tolerance_m,
            outlier_radius_m=cfg.outlier_radius_m,
            outlier_k=cfg.outlier_k,
            outlier_min_lab_sites=cfg.outlier_min_lab_sites,
            error_models=cfg.error_models,
        )


def check_samples(
    samples: pd.DataFrame,
    checks: SampleChecks | None = None,
    *,
    site_by: Sequence[str] = ("agency", "site_id"),
    evaluate: Sequence[bool] | np.ndarray | None = None,
) -> pd.DataFrame:
    """Every sample-level check, oldest record first; returns a copy with ``qa_flag`` recomputed.

    Duplicates (same source, date and depth within ``duplicate_tolerance_m`` and the same site id or
    SOC, :func:`flag_sample_duplicates`), GPS accuracy, position jitter within a site (``site_by``:
    ``agency`` + ``site_id`` in the store) and crowd outliers against the lab samples around them.
    Only the ``evaluate`` rows (default: all) are judged and their flags recomputed from scratch;
    the other rows keep the ``qa_flag`` they came with and serve as references (a flagged lab
    sample is no outlier reference). Impossible values never get here:
    :func:`mrv.samples.ingest.ingest` rejects them with a reason.
    """
    c = checks or SampleChecks()
    out = samples.copy(deep=False)
    judge = np.ones(len(out), dtype=bool) if evaluate is None else np.asarray(evaluate, dtype=bool)
    before = (
        out["qa_flag"].astype(object).fillna("").astype(str).to_numpy()
        if "qa_flag" in out.columns
        else np.full(len(out), "", dtype=object)
    )
    # Rows not judged keep their flags (they are the reference: e.g. a flagged lab sample is no outlier reference).
    out["qa_flag"] = np.where(judge, "", before)
    out = flag_sample_duplicates(out, tolerance_m=c.duplicate_tolerance_m, site_by=site_by,
                                 soc_tolerance_g_kg=c.duplicate_soc_tolerance_g_kg, evaluate=judge)  # fmt: skip
    out = flag_gps_accuracy(out, tolerance_m=c.gps_tolerance_m)
    out = flag_position_jitter(out, tolerance_m=c.gps_tolerance_m, by=site_by)
    out["qa_flag"] = np.where(judge, out["qa_flag"].to_numpy(dtype=object), before)
    return flag_sample_outliers_against_lab(
        out,
        radius_m=c.outlier_radius_m,
        k=c.outlier_k,
        min_lab_sites=c.outlier_min_lab_sites,
        error_models=c.error_models,
        site_by=site_by,
        evaluate=judge,
    )


# -------------------------------------------------------------------------------------- site level


def flag_duplicates(sites: pd.DataFrame, *, tolerance_m: float = 15.0) -> pd.DataFrame:
    """Add ``qa_flag`` (empty when fine) to a site table.

    A site within ``tolerance_m`` of an earlier site of the same source and sampling date is a
    near-duplicate (a re-submission or GPS jitter of one visit); the earlier one (itself not flagged)
    is kept. Each site examines its ``DUPLICATE_MAX_CANDIDATES`` nearest sites of the same source and day.
    """
    out = sites.reset_index(drop=True).copy()
    out["qa_flag"] = ""
    if out.empty:
        return out
    xy = out[["x", "y"]].to_numpy(dtype=float)
    stock = out["soc_stock_t_ha"].to_numpy(dtype=float)
    site = out["site_id"].astype(str).to_numpy()
    flags = [""] * len(out)
    keys = pd.DataFrame({"s": out["source"].astype(str).to_numpy(), "d": out["sampling_date"].astype(str).to_numpy()})
    # Grouped by source and day first, then at most DUPLICATE_MAX_CANDIDATES nearest sites per site (k-d tree):
    # thousands of sites at one point cost O(n log n), not O(n^2).
    for members in keys[np.isfinite(xy).all(axis=1)].groupby(["s", "d"], sort=False).indices.values():
        rows = keys[np.isfinite(xy).all(axis=1)].index.to_numpy()[members]
        if len(rows) < 2:
            continue
        k = min(DUPLICATE_MAX_CANDIDATES, len(rows))
        dist, nb = cKDTree(xy[rows]).query(xy[rows], k=k, distance_upper_bound=tolerance_m)
        dist, nb = dist.reshape(len(rows), k), nb.reshape(len(rows), k)
        for t in np.argsort(rows, kind="stable"):  # earlier sites first: their flags are final when a later one looks
            j = int(rows[t])
            earlier = sorted({int(rows[n]) for d, n in zip(dist[t], nb[t], strict=True) if np.isfinite(d) and rows[n] < j}
                             | ({int(rows[0])} if rows[0] < j and np.hypot(*(xy[rows[0]] - xy[j])) <= tolerance_m else set()))
            i = next((c for c in earlier if not flags[c]), None)
            if i is None:
                continue
            same = np.isclose(stock[i], stock[j]) and float(np.hypot(*(xy[i] - xy[j]))) <= SAME_POSITION_M
            flags[j] = f"exact duplicate of {site[i]}" if same else f"within {tolerance_m:g} m of {site[i]} on the same day"
    out["qa_flag"] = flags
    return out


def carry_sample_flags(
    sites: pd.DataFrame, samples: pd.DataFrame, *, by: Sequence[str] = ("source", "submitter", "site_id")
) -> pd.DataFrame:
    """Sites inherit the flags of their samples (``site: <flag>`` prefixed by the sample id) and their GPS accuracy.

    ``sites`` and ``samples`` are matched on the ``by`` columns present in both (the site table of
    :func:`mrv.samples.sites.site_stocks` has ``source``, ``submitter`` and ``site_id``). Adds
    ``gps_accuracy_m``: the worst accuracy reported by a sample of the site (NaN if none), which
    :func:`flag_field_edges` uses as the site's position uncertainty.
    """
    out, flags = _with_flags(sites.reset_index(drop=True))
    cols = [c for c in by if c in out.columns and c in samples.columns]
    acc = (
        pd.to_numeric(samples["gps_accuracy_m"], errors="coerce")
        if "gps_accuracy_m" in samples.columns
        else pd.Series(np.nan, index=samples.index)
    )
    if not cols or out.empty or samples.empty:
        if "gps_accuracy_m" not in out.columns:
            out["gps_accuracy_m"] = np.nan
        return _done(out, flags)
    keys = list(zip(*(samples[c].astype(str) for c in cols), strict=True))
    notes: dict[tuple[str, ...], list[str]] = {}
    worst: dict[tuple[str, ...], float] = {}
    sample_flags = samples["qa_flag"] if "qa_flag" in samples.columns else pd.Series("", index=samples.index)
    for key, sid, flag, a in zip(keys, samples["sample_id"].astype(str), sample_flags, acc, strict=True):
        if not _missing(a):
            worst[key] = max(worst.get(key, 0.0), float(a))
        for note in _text(flag).split("; "):
            if note:
                notes.setdefault(key, []).append(f"{sid}: {note}")
    site_keys = list(zip(*(out[c].astype(str) for c in cols), strict=True))
    for i, key in enumerate(site_keys):
        for note in notes.get(key, []):
            _add(flags, i, note)
    out["gps_accuracy_m"] = [worst.get(key, np.nan) for key in site_keys]
    return _done(out, flags)


# -------------------------------------------------------------------------------------- field edges


def flag_field_edges(
    points: pd.DataFrame,
    fields: Mapping[str, BaseGeometry],
    *,
    tolerance_m: float = GPS_TOLERANCE_M,
    pixel_size_m: float | None = None,
    accuracy_column: str = "gps_accuracy_m",
) -> pd.DataFrame:
    """Flag samples or sites that lie outside every field, near a field edge, or in another field than they say.

    ``fields`` maps field id -> polygon in the points' CRS (metres; e.g.
    ``{f.field_id: f.geometry for f in mrv.fields.read_fields(...)}``). A point's position
    uncertainty is its reported GPS accuracy (``accuracy_column``) or, without one, ``tolerance_m``;
    with a ``pixel_size_m`` it is at least half a pixel diagonal (``pixel_size_m x sqrt(2) / 2``,
    7.1 m for 10 m pixels: a point closer than that to a field edge may fall in a pixel that mixes
    two fields). Flags:

    * ``outside every field (nearest field F3 is 12.0 m away)``: the point cannot be attributed;
    * ``near field edge: 4.2 m from the boundary of field F1, closer than its 10 m position
      uncertainty``: it may belong to the neighbouring field or a mixed pixel;
    * ``in 2 fields (F1, F2): the field polygons overlap``;
    * ``field_id says F1 but the position lies in field F2``.
    """
    out, flags = _with_flags(points)
    if out.empty or not fields:
        return _done(out, flags)
    ids = list(fields)
    geoms = np.array([fields[f] for f in ids], dtype=object)
    boundaries = shapely.boundary(geoms)
    xy = _xy(out)
    ok = np.isfinite(xy).all(axis=1)
    pts = shapely.points(np.where(ok[:, None], xy, 0.0))
    acc = (
        pd.to_numeric(out[accuracy_column], errors="coerce").to_numpy(dtype=float)
        if accuracy_column in out.columns
        else np.full(len(out), np.nan)
    )
    radius = np.where(np.isfinite(acc) & (acc > 0), acc, tolerance_m)
    half_diag = pixel_size_m * math.sqrt(2.0) / 2.0 if pixel_size_m else 0.0
    radius = np.maximum(radius, half_diag)
    tree = shapely.STRtree(geoms)
    p_idx, g_idx = tree.query(pts, predicate="intersects")
    inside: dict[int, list[int]] = {}
    for p, g in zip(p_idx.tolist(), g_idx.tolist(), strict=True):
        inside.setdefault(p, []).append(g)
    claimed = out["field_id"].map(_text).to_numpy() if "field_id" in out.columns else np.full(len(out), "")
    for i in (int(v) for v in np.flatnonzero(ok)):
        hits = sorted(inside.get(i, []), key=lambda g: ids[g])
        if not hits:
            nearest = int(tree.nearest(pts[i]))
            d = float(shapely.distance(geoms[nearest], pts[i]))
            _add(flags, i, f"outside every field (nearest field {ids[nearest]} is {d:.1f} m away): check the position")
            continue
        if len(hits) > 1:
            _add(flags, i, f"in {len(hits)} fields ({', '.join(ids[g] for g in hits)}): the field polygons overlap")
        g = hits[0]
        d = float(shapely.distance(boundaries[g], pts[i]))
        if d < radius[i]:
            why = (
                f"half a {pixel_size_m:g} m pixel diagonal"
                if half_diag and radius[i] == half_diag
                else ("its reported GPS accuracy" if np.isfinite(acc[i]) and acc[i] > 0 else "the position tolerance")
            )
            _add(
                flags,
                i,
                f"near field edge: {d:.1f} m from the boundary of field {ids[g]}, closer than {radius[i]:.1f} m "
                f"({why}): it may belong to the neighbouring field or a mixed pixel",
            )
        if claimed[i] and claimed[i] in fields and claimed[i] not in {ids[h] for h in hits}:
            _add(flags, i, f"field_id says {claimed[i]} but the position lies in field {ids[g]}")
    return _done(out, flags)
