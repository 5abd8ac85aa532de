"""Design-based SOC stock change from re-measured (paired) sites, with the maps as auxiliary data.

Credits are issued on the change between monitoring rounds. Whole-map differences between two rounds'
imagery carry no SOC signal (a real change of ~1 t C/ha moves bare-soil reflectance by ~0.3 % against
+-8 % brightness differences between dates), so the map change cannot be the evidence. The sites
sampled again at the same position are: their observed change ``d_i = y_last,i - y_first,i`` is a
probability sample of the change in their stratum (here the field). The maps enter as the auxiliary
variable of a model-assisted estimator (Saerndal, Swensson & Wretman 1992, *Model Assisted Survey
Sampling*, Sect. 6.4-6.5 and 7.6 (regression estimator, separate intercepts, common slope); Cochran
1977, *Sampling Techniques*, 3rd ed., Sect. 7.9; Stanley et al. 2023, "Valid inferences about soil
carbon in heterogeneous landscapes", Geoderma 430):

* ``a_i``: the map change at site ``i`` (out-of-fold predictions of the two rounds, so a site's own
  measurement never shapes its auxiliary value); ``A_h``: the mean map change over field ``h``;
* slope ``b = sum_h sum_i (a_i - a_h)(d_i - d_h) / sum_h sum_i (a_i - a_h)^2`` (pooled within fields;
  ``method="difference"`` fixes ``b = 1``, the difference estimator of Saerndal et al. Sect. 6.3);
* field estimate ``D_h = d_h + b (A_h - a_h)`` and residuals ``e_i = d_i - d_h - b (a_i - a_h)``;
* project estimate ``D = sum_h W_h D_h`` with area weights ``W_h = area_h / area`` (VM0042 v2.2
  Eq. 70: area-weighted over strata, not over sites).

Variance from the design (stratified random sampling of sites within fields, re-measured at both
times). For paired sites VM0042 v2.2 Eq. 71 gives the stratum variance of the change as
``s_f^2 + s_s^2 - 2 COV(f, s)`` with all three estimated from the same pairs: that is exactly the
variance of the paired differences, so the covariance between rounds is estimated from the data and
its sampling uncertainty is carried by the t distribution's degrees of freedom (no correlation is
assumed). With the regression adjustment the differences are replaced by the residuals ``e_i``:

* project: ``Var(D) = sum_h W_h^2 s_h^2 / n_h`` with ``s_h^2`` the residual variance within field
  ``h`` (``n_h - 1`` df; Cochran 1977 Eq. 5.6 / VM0042 Eq. 70), ``n_h`` re-measured sites; fields with
  fewer than 3 pairs use the pooled variance (collapsed strata, Cochran Sect. 5A.12). Degrees of
  freedom by Satterthwaite (1946) for the variance written as a combination of the fields' independent
  within-field sums of squares (:func:`_project_variance`): Cochran's Eq. 5.16 when every field has its own
  variance, ``n - H`` when every field uses the pooled one, never more (the pooled variance used to be
  counted once per field that used it, as if independent: on generated regions with a third of the sites
  re-measured, 69 df claimed on average from 22 pairs and 11 pooled df);
* fields: ``Var(D_h) = s_p^2 / n_h`` with ``s_p^2`` the residual variance pooled over fields,
  ``n - H - 1`` df (common within-field variance assumed, stated in the output). A field with few
  re-measured sites therefore gets an honest wide t interval; this is a *direct* estimator, not a
  small-area model: nothing is borrowed from other fields except the variance. A field without
  re-measured sites gets the synthetic regression estimate ``d + b (A_h - a)`` (Rao & Molina 2015,
  *Small Area Estimation*, 2nd ed., Sect. 3.2.2) and no interval (``design_based: false``).

Why out-of-fold map values at the sites: the maps are fitted to these same sites, so the full map at
a training site is pulled towards its observation (shrunk residuals, a slope biased towards the map).
The field mean map change ``A_h`` is taken from the full map; the model cannot learn a field's change
from covariates that are round-normalised and carry no change signal, so the mismatch is second
order (it enters multiplied by ``b``, which is reported).

Each round's stock (:func:`design_stock`) is by default the *direct* stratified estimator (field mean
of the lab sites, ``method="none"``): a map-assisted stock (map mean plus mean residual) would count
the sites twice when the map was fitted to them (the map mean has already learnt from the field's
sites), and an honest version needs maps cross-fitted without each field's sites, which are not
computed. ``method="difference"`` gives that estimator anyway (Saerndal et al. Eq. 6.3.4), for
comparison.

Measured against generated truth (``benchmarks/validity.py``; width ratio = mean 90 % width / (2 x 1.645
x RMS error), 90 % interval from the chi-square of the RMS): the project stock of the last round,
pipeline, 30 default-sized regions (5 x 5 km, 36 fields, 5 lab sites per field): coverage 27/30, width
ratio 1.01 [0.85, 1.22]. The estimators alone (generated lab sites, b = 0, pixel areas, every site re-measured;
``+-`` one standard error; mean z^2 is compared with ``E[t_df^2] = df / (df - 2)``, not 1, because the
variance is estimated):

* 600 default regions (5 x 5 km, seeds 1000-1599): stock coverage 0.907 +- 0.012, mean z^2 1.00 +- 0.06
  [t expects 1.03]; change coverage 0.902 +- 0.012, mean z^2 1.05 +- 0.06 [1.03];
* 2,000 small regions (2 x 2 km, 12 fields, 6 sites each, seeds 1000-2999): stock 0.904 +- 0.007, 1.07 +- 0.04
  [1.07]; change 0.895 +- 0.007, 1.10 +- 0.04 [1.06].

The change's mean z^2 of 1.24 (coverage 0.85) once reported for 150 default regions is seeds 1000-1149 of
these 600; the next three blocks of 150 give 0.95, 1.02, 1.00 (coverage 0.91, 0.93, 0.91), and blocks of 200
small regions 1.00, 1.35, 1.16, 0.92: a mean of chi-square(1) values scatters by ~0.12 over 150 regions and its
right tail makes 1.2-1.35 common. The variance is right, and the error decomposes as the design says: the
realised lab-error and site-sampling parts have the variances ``sum_h W_h^2 (S_h^2 + sigma_lab^2) / n_h``
computed from the generated truth (ratio 1.03 default, 1.09 small), the estimated variance matches that to
1 % (1.01), the errors are normal (the top 5 % of z^2 carry 0.29-0.30 of the sum, 0.28 for normal z), and
with the truth held fixed and sites and lab errors redrawn 150 times for each of 10 small regions the
variance ratio ``mean(err^2) / mean(se^2)`` is 0.99 +- 0.04 for change (coverage 0.905) and 1.02 +- 0.04 for
stock (0.896); over the regions above it is 1.02 +- 0.06 (change) and 0.98 +- 0.06 (stock) on default, 1.07 +-
0.04 and 1.03 +- 0.04 on small regions (a variance 20 % too small would read 1.25: excluded by > 4 SE; the
change's 1.07 on small regions, 2 SE, is not explained and is within the coverage's noise). Not a cause: the lab error enters each round independently (its
difference, sd ~3.4 t C/ha, is almost all of a site's change variance); the truth is the realised field mean, so
the field-level true change (rates, legacy) is no sampling error; no field lacks a re-measured site at
``remeasured_share = 1``; sites are drawn in the field interior (edge pixels eroded) while the truth covers
the whole field, a project difference of sd 0.09 t C/ha on small regions (< 1 % of the stock's variance,
nothing for change); ~5 sites in ~2,000 pixels need no finite-population correction. The stock has a small
lab bias, -0.056 +- 0.008 t C/ha on default regions (0.07 SE): the generator reports coarse fragments as
``max(0, cf + N(0, 1.5))``, biased up where cf is near 0; it cancels in the change. Pipeline (regression
estimator, out-of-fold map change as auxiliary) on 30 default regions: change 30/30, mean z^2 0.60.

All amounts are t C/ha (means) or t C (totals); CO2e = 44/12 x C.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial import cKDTree

from mrv.errors import AccountingError

__all__ = [
    "CO2_PER_C",
    "MIN_PAIRS",
    "MIN_PAIRS_FOR_OWN_VARIANCE",
    "DesignEstimate",
    "design_change",
    "design_stock",
    "pair_sites",
]

CO2_PER_C = 44.0 / 12.0
#: Fields with fewer re-measured sites than this use the pooled residual variance in the project variance.
MIN_PAIRS_FOR_OWN_VARIANCE = 3
#: Fewer re-measured sites than this in the project: no design-based change (a few sites that happen to lie
#: close to a baseline site are not a re-measurement design).
MIN_PAIRS = 10


@dataclass(frozen=True)
class DesignEstimate:
    """A design-based estimate of a mean (t C/ha) over a zone with its t interval."""

    mean_t_ha: float
    se_t_ha: float
    df: float
    n_sites: int
    confidence: float
    design_based: bool = True

    def interval(self) -> tuple[float, float]:
        if not self.design_based or not math.isfinite(self.se_t_ha) or self.df <= 0:
            return math.nan, math.nan
        t = float(stats.t.ppf(0.5 + self.confidence / 2, self.df))
        return self.mean_t_ha - t * self.se_t_ha, self.mean_t_ha + t * self.se_t_ha

    def significant(self) -> bool:
        lo, hi = self.interval()
        return bool(math.isfinite(lo) and (lo > 0 or hi < 0))

    def to_dict(self, *, area_ha: float) -> dict[str, Any]:
        lo, hi = self.interval()
        pct = f"{100 * self.confidence:g}"

        def block(scale: float, unit: str) -> dict[str, Any]:
            return {
                "mean": self.mean_t_ha * scale,
                f"lower_{pct}": lo * scale,
                f"upper_{pct}": hi * scale,
                "se": self.se_t_ha * scale,
                "unit": unit,
            }

        return {
            "per_ha": block(1.0, "t C/ha"),
            "total": block(area_ha, "t C"),
            "co2e": block(area_ha * CO2_PER_C, "t CO2e"),
            "df": self.df,
            "n_sites": self.n_sites,
            "design_based": self.design_based,
            "significant": self.significant(),
        }


def pair_sites(first: pd.DataFrame, last: pd.DataFrame, *, max_distance_m: float) -> pd.DataFrame:
    """Re-measured sites: mutual nearest neighbours of ``first`` and ``last`` within ``max_distance_m``.

    Both tables need ``x``, ``y`` (project CRS, m) and ``soc_stock_t_ha``; ``field_id`` is taken from
    ``last`` when present (pairs in different fields are dropped). Returns one row per pair with
    ``x, y, field_id, distance_m, stock_first_t_ha, stock_last_t_ha`` and the original row indices
    ``i_first``, ``i_last``.
    """
    cols = ["i_first", "i_last", "x", "y", "field_id", "distance_m", "stock_first_t_ha", "stock_last_t_ha"]
    if len(first) == 0 or len(last) == 0:
        return pd.DataFrame(columns=cols)
    pa = np.column_stack([first["x"].to_numpy(float), first["y"].to_numpy(float)])
    pb = np.column_stack([last["x"].to_numpy(float), last["y"].to_numpy(float)])
    d_ab, j_ab = cKDTree(pb).query(pa)
    _, i_ba = cKDTree(pa).query(pb)
    keep = (d_ab <= max_distance_m) & (i_ba[j_ab] == np.arange(len(pa)))
    ia, ib = np.flatnonzero(keep), j_ab[keep]
    fa = first["field_id"].astype(str).to_numpy()[ia] if "field_id" in first else None
    fb = last["field_id"].astype(str).to_numpy()[ib] if "field_id" in last else np.full(len(ib), "")
    same = np.ones(len(ia), bool) if fa is None else (fa == fb)
    ia, ib, fb = ia[same], ib[same], fb[same]
    return pd.DataFrame(
        {
            "i_first": first.index.to_numpy()[ia],
            "i_last": last.index.to_numpy()[ib],
            "x": pb[ib, 0],
            "y": pb[ib, 1],
            "field_id": fb,
            "distance_m": d_ab[ia],
            "stock_first_t_ha": first["soc_stock_t_ha"].to_numpy(float)[ia],
            "stock_last_t_ha": last["soc_stock_t_ha"].to_numpy(float)[ib],
        },
        columns=cols,
    )


def _satterthwaite(parts: np.ndarray, dfs: np.ndarray) -> float:
    """Effective df of a sum of independent variance estimates ``parts`` with ``dfs`` df each (Cochran 1977
    Eq. 5.16)."""
    ok = (parts > 0) & (dfs > 0)
    if not ok.any():
        return math.nan
    return float(parts[ok].sum() ** 2 / np.sum(parts[ok] ** 2 / dfs[ok]))


def _project_variance(
    w: Mapping[str, float], n_h: pd.Series, ss_h: pd.Series, unsampled_share: float, df_pooled: int
) -> tuple[float, float]:
    """``Var(D) = sum_h W_h^2 s_h^2 / n_h`` (own ``s_h^2`` for fields with >= 3 pairs, else ``s_p^2``; the
    unsampled area's share ``U`` adds ``U^2 s_p^2``) and its Satterthwaite df.

    The variance estimate is a linear combination ``sum_h a_h SS_h`` of the fields' independent within-field
    sums of squares (``s_p^2 = sum_h SS_h / df_pooled`` enters every field that uses it), so its df is
    Satterthwaite's for that combination (Satterthwaite 1946, Biometrics Bull. 2:110-114; Cochran 1977 Eq. 5.16
    is the case of one mean square per term): ``(sum_h a_h f_h S_h^2)^2 / sum_h (a_h f_h S_h^2)^2 / f_h`` with
    ``f_h = n_h - 1`` (times ``df_pooled / (n - H)`` when a common slope took one df) and ``S_h^2`` estimated
    by the field's own ``s_h^2`` where it is used, else by ``s_p^2`` (the pooling assumption: a 1-df ``SS_h``
    would make the df estimate itself erratic and biased low). Where every field uses ``s_p^2`` this is
    ``df_pooled``; where none does, Cochran's Eq. 5.16. Counting the one pooled variance once per field that
    uses it, as if independent, overstates the df up to H-fold.
    """
    n_sites, n_strata = int(n_h.sum()), len(n_h)
    own = {z: int(n_h[z]) >= MIN_PAIRS_FOR_OWN_VARIANCE for z in n_h.index}
    pooled_coef = unsampled_share**2 + sum(w[z] ** 2 / n_h[z] for z in n_h.index if not own[z])
    if pooled_coef > 0 and df_pooled <= 0:
        return math.nan, math.nan
    s2_pooled = float(ss_h.sum()) / df_pooled if df_pooled > 0 else math.nan
    var, terms, dfs = 0.0, [], []
    for z in n_h.index:
        nz, ss = int(n_h[z]), float(ss_h[z])
        a = (w[z] ** 2 / nz / (nz - 1) if own[z] else 0.0) + (pooled_coef / df_pooled if pooled_coef > 0 else 0.0)
        var += a * ss
        f = (nz - 1) * max(df_pooled, 0) / max(n_sites - n_strata, 1)
        terms.append(a * f * (ss / (nz - 1) if own[z] else s2_pooled))
        dfs.append(f)
    return var, _satterthwaite(np.asarray(terms), np.asarray(dfs, float))


def _regression(
    y: np.ndarray, a: np.ndarray, strata: np.ndarray, method: Literal["regression", "difference", "none"]
) -> tuple[float, np.ndarray]:
    """Common within-stratum slope ``b`` and the residuals ``e_i`` (separate stratum intercepts)."""
    ac = a - pd.Series(a).groupby(strata).transform("mean").to_numpy()
    yc = y - pd.Series(y).groupby(strata).transform("mean").to_numpy()
    if method == "difference":
        b = 1.0
    elif method == "none":
        b = 0.0
    else:
        sxx = float(np.sum(ac * ac))
        b = float(np.sum(ac * yc) / sxx) if sxx > 1e-12 else 0.0
    return b, yc - b * ac


def _estimate(
    y: np.ndarray,
    a: np.ndarray,
    strata: np.ndarray,
    zones: Sequence[str],
    zone_aux_mean: Mapping[str, float],
    area_ha: Mapping[str, float],
    *,
    confidence: float,
    method: Literal["regression", "difference", "none"],
) -> tuple[dict[str, DesignEstimate], DesignEstimate, dict[str, Any]]:
    """Field and project estimates of the mean of ``y`` with auxiliary ``a`` (see the module docstring)."""
    ok = np.isfinite(y) & np.isfinite(a)
    y, a, strata = y[ok], a[ok], strata[ok]
    n = len(y)
    if n < 2:
        raise AccountingError(
            f"Only {n} site(s) with both measurements and map values; a design-based estimate needs at least 2. "
            "Re-measure more of the baseline sites, or check that the sites lie inside the mapped fields."
        )
    b, e = _regression(y, a, strata, method)
    groups = pd.DataFrame({"s": strata, "y": y, "a": a, "e": e}).groupby("s")
    n_h = groups.size()
    ybar, abar = groups["y"].mean(), groups["a"].mean()
    ss_h = groups["e"].apply(lambda v: float(np.sum((v - v.mean()) ** 2)))
    n_strata = len(n_h)
    slope_df = 0 if method != "regression" else 1
    df_pooled = n - n_strata - slope_df
    s2_pooled = float(ss_h.sum() / df_pooled) if df_pooled > 0 else math.nan
    all_ybar, all_abar = float(y.mean()), float(a.mean())
    fields: dict[str, DesignEstimate] = {}
    for z in zones:
        aux = float(zone_aux_mean.get(z, math.nan))
        if z in n_h.index:
            nz = int(n_h[z])
            adj = b * (aux - float(abar[z])) if math.isfinite(aux) else 0.0
            fields[z] = DesignEstimate(
                float(ybar[z]) + adj, math.sqrt(s2_pooled / nz), float(df_pooled), nz, confidence
            )
        else:
            synth = all_ybar + (b * (aux - all_abar) if math.isfinite(aux) else 0.0)
            fields[z] = DesignEstimate(synth, math.nan, math.nan, 0, confidence, design_based=False)
    total_area = float(sum(area_ha[z] for z in zones))
    w = {z: area_ha[z] / total_area for z in zones}
    mean = float(sum(w[z] * fields[z].mean_t_ha for z in zones))
    unsampled = [z for z in zones if z not in n_h.index]
    var, df = _project_variance(w, n_h, ss_h, sum(w[z] for z in unsampled), df_pooled)
    project = DesignEstimate(mean, math.sqrt(var), df, n, confidence)
    info = {
        "slope_b": b,
        "method": method,
        "residual_sd_pooled_t_ha": math.sqrt(s2_pooled) if math.isfinite(s2_pooled) else None,
        "df_pooled": df_pooled,
        "n_sites": n,
        "n_strata_sampled": n_strata,
        "strata_without_sites": unsampled,
    }
    return fields, project, info


def design_change(
    pairs: pd.DataFrame,
    *,
    zones: Sequence[str],
    zone_map_change_t_ha: Mapping[str, float],
    area_ha: Mapping[str, float],
    confidence: float = 0.9,
    method: Literal["regression", "difference", "none"] = "regression",
) -> tuple[dict[str, DesignEstimate], DesignEstimate, dict[str, Any]]:
    """Field and project stock change (t C/ha) from re-measured sites with the map change as auxiliary.

    ``pairs`` needs ``field_id``, ``stock_first_t_ha``, ``stock_last_t_ha`` and ``map_change_t_ha`` (the
    out-of-fold map change at the site). ``zone_map_change_t_ha`` is each field's mean map change and
    ``area_ha`` its area. Returns ``(fields, project, info)``; see the module docstring for the formulas.
    """
    if len(pairs) < MIN_PAIRS:
        raise AccountingError(
            f"Only {len(pairs)} site(s) of the last round re-measure a first-round site (same field, within "
            f"accounting.pair_distance_m); a design-based change needs at least {MIN_PAIRS}. VM0042 v2.2 Sect. 8.6.2 "
            "visits the same sample points at both times: re-sample the baseline sites at their recorded coordinates, "
            "or set accounting.change_estimator: map (not design-based)."
        )
    d = pairs["stock_last_t_ha"].to_numpy(float) - pairs["stock_first_t_ha"].to_numpy(float)
    a = pairs["map_change_t_ha"].to_numpy(float) if "map_change_t_ha" in pairs else np.zeros(len(pairs))
    return _estimate(
        d, a, pairs["field_id"].astype(str).to_numpy(), zones, zone_map_change_t_ha, area_ha,
        confidence=confidence, method=method,
    )  # fmt: skip


def design_stock(
    sites: pd.DataFrame,
    *,
    zones: Sequence[str],
    zone_map_mean_t_ha: Mapping[str, float],
    area_ha: Mapping[str, float],
    confidence: float = 0.9,
    method: Literal["none", "difference"] = "none",
) -> tuple[dict[str, DesignEstimate], DesignEstimate, dict[str, Any]]:
    """One round's field and project mean stock (t C/ha) from its lab sites, stratified by field.

    ``sites`` needs ``field_id`` and ``soc_stock_t_ha`` (observed), and ``predicted_t_ha`` (out-of-fold
    map value at the site) for ``method="difference"`` (``map mean + mean residual``, Saerndal et al.
    1992 Sect. 6.3). The default ``none`` is the direct stratified mean (see the module docstring).
    """
    y = sites["soc_stock_t_ha"].to_numpy(float)
    a = sites["predicted_t_ha"].to_numpy(float) if "predicted_t_ha" in sites else np.zeros(len(sites))
    return _estimate(
        y, a, sites["field_id"].astype(str).to_numpy(), zones, zone_map_mean_t_ha, area_ha,
        confidence=confidence, method=method,
    )  # fmt: skip
