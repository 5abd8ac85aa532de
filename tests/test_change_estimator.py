"""Design-based change from re-measured sites (mrv.accounting.change) against generated truth on many seeds."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mrv.accounting.change import design_change, design_stock, pair_sites
from mrv.synthetic import SceneSpec, make_lab_samples, make_truth, soc_stock_t_ha

# Short correlation ranges keep the generator fast (the truth of ~1,100 regions is drawn below, 1,000 in slow tests).
SPEC = SceneSpec(width_px=80, height_px=80, n_fields=4, n_lab_sites=24, n_crowd=10, soc_range_m=400.0, detail_range_m=100.0)


def _site_stocks(lab: pd.DataFrame) -> pd.DataFrame:
    """0-30 cm stock per lab site from its measured layers (the same formula the pipeline uses)."""
    lab = lab.assign(
        stock=soc_stock_t_ha(lab.soc_g_kg, lab.bulk_density_g_cm3, lab.bottom_cm - lab.top_cm, lab.coarse_fragments_vol_pct)
    )
    g = lab.groupby("site_id", sort=False)
    return pd.DataFrame(
        {"x": g.x.first(), "y": g.y.first(), "field_id": g.field_id.first(), "soc_stock_t_ha": g.stock.sum()}
    ).reset_index(drop=True)


def _map_at(img: np.ndarray, spec: SceneSpec, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    c = ((x - spec.origin_x) // spec.resolution_m).astype(int)
    r = ((spec.origin_y - y) // spec.resolution_m).astype(int)
    return img[r, c]


def _one_region(spec: SceneSpec, imagery_shift_t_ha: float) -> dict[str, object]:
    """Paired lab sites of a generated region, and an auxiliary 'map' whose second round is shifted as a whole
    (what an imagery difference between rounds does to a pooled model) and noisy per pixel."""
    truth = make_truth(spec)
    first, last = (r.name for r in spec.rounds)
    rng = np.random.default_rng(spec.seed + 1000)
    maps = {}
    for k, name in enumerate((first, last)):
        t = truth.states[name].stock_0_30cm_t_ha
        maps[name] = 0.6 * t + 0.4 * t.mean() + rng.normal(0, 3.0, t.shape) + k * imagery_shift_t_ha
    a, b = (_site_stocks(make_lab_samples(truth, n)) for n in (first, last))
    pairs = pair_sites(a, b, max_distance_m=10.0)
    pairs["map_change_t_ha"] = _map_at(maps[last], spec, pairs.x.to_numpy(), pairs.y.to_numpy()) - _map_at(
        maps[first], spec, pairs.x.to_numpy(), pairs.y.to_numpy()
    )
    idx = truth.fields.field_index
    ids = list(truth.fields.field_ids)
    area = {f: float((idx == i + 1).sum()) * 0.01 for i, f in enumerate(ids)}
    zone_change = {f: float((maps[last] - maps[first])[idx == i + 1].mean()) for i, f in enumerate(ids)}
    fields, project, info = design_change(pairs, zones=ids, zone_map_change_t_ha=zone_change, area_ha=area)
    true_f = np.subtract(truth.field_mean_stock(last), truth.field_mean_stock(first))
    w = np.array([area[f] for f in ids])
    return {
        "fields": fields, "project": project, "info": info, "true_fields": dict(zip(ids, true_f, strict=True)),
        "true_project": float(np.average(true_f, weights=w)), "n_pairs": len(pairs),
        "map_project": float(np.average([zone_change[f] for f in ids], weights=w)),
    }  # fmt: skip


def test_pairs_are_the_remeasured_sites() -> None:
    truth = make_truth(SPEC)
    a, b = (_site_stocks(make_lab_samples(truth, r.name)) for r in SPEC.rounds)
    pairs = pair_sites(a, b, max_distance_m=10.0)
    assert len(pairs) == SPEC.n_lab_sites  # remeasured_share 1
    assert pairs.distance_m.max() < 6.0
    fresh = _site_stocks(make_lab_samples(make_truth(replace(SPEC, remeasured_share=0.25)), "2024"))
    assert len(pair_sites(a, fresh, max_distance_m=10.0)) == pytest.approx(0.25 * SPEC.n_lab_sites, abs=2)


def test_hand_computed_single_stratum() -> None:
    """One field, b fixed at 0: the paired-difference mean with VM0042 v2.2 Eq. 71's variance
    (s_f^2 + s_s^2 - 2 COV) / n, the covariance estimated from the pairs, t with n - 1 df; the difference
    estimator adds the map's mean change minus its mean at the sites."""
    first = np.array([48.0, 52, 55, 47, 60, 51, 49, 58, 53, 50])
    d = np.array([1.0, 3, -1, 2, 5, 0, 4, 2, 1, 3])
    last = first + d
    aux = np.array([0.5, 0.5, 0, 1, 1, 0, 0.5, 0.5, 1, 0])
    pairs = pd.DataFrame({"field_id": "F1", "stock_first_t_ha": first, "stock_last_t_ha": last, "map_change_t_ha": aux})
    kw = {"zones": ["F1"], "zone_map_change_t_ha": {"F1": 0.2}, "area_ha": {"F1": 10.0}}
    f, p, _ = design_change(pairs, **kw, method="none")  # type: ignore[arg-type]
    n = len(d)
    eq71 = (np.var(last, ddof=1) + np.var(first, ddof=1) - 2 * np.cov(first, last)[0, 1]) / n
    assert p.mean_t_ha == pytest.approx(d.mean())
    assert p.se_t_ha**2 == pytest.approx(eq71)
    assert p.df == pytest.approx(n - 1)
    lo, hi = p.interval()
    assert hi - p.mean_t_ha == pytest.approx(stats.t.ppf(0.95, n - 1) * p.se_t_ha)
    f, p, _ = design_change(pairs, **kw, method="difference")  # type: ignore[arg-type]
    assert p.mean_t_ha == pytest.approx(0.2 + np.mean(d - aux))
    assert p.se_t_ha == pytest.approx(np.std(d - aux, ddof=1) / math.sqrt(n))
    assert p.to_dict(area_ha=10.0)["co2e"]["mean"] == pytest.approx(10.0 * p.mean_t_ha * 44 / 12)


def test_design_stock_difference_and_direct() -> None:
    sites = pd.DataFrame({"field_id": ["A"] * 4 + ["B"] * 4, "soc_stock_t_ha": [50, 52, 48, 54, 40, 42, 41, 39.0],
                          "predicted_t_ha": [49, 50, 50, 51, 44, 43, 42, 43.0]})  # fmt: skip
    kw = {"zones": ["A", "B"], "zone_map_mean_t_ha": {"A": 50.0, "B": 43.0}, "area_ha": {"A": 3.0, "B": 1.0}}
    f, p, _ = design_stock(sites, **kw, method="difference")  # type: ignore[arg-type]
    assert f["A"].mean_t_ha == pytest.approx(50.0 + 1.0)
    assert f["B"].mean_t_ha == pytest.approx(43.0 - 2.5)
    assert p.mean_t_ha == pytest.approx(0.75 * 51.0 + 0.25 * 40.5)
    f, p, _ = design_stock(sites, **kw)  # type: ignore[arg-type]  # direct: area-weighted field means
    assert p.mean_t_ha == pytest.approx(0.75 * 51.0 + 0.25 * 40.5)
    # stratum variances (Cochran Eq. 5.6): sum W_h^2 s_h^2 / n_h
    s2a, s2b = np.var([50, 52, 48, 54], ddof=1), np.var([40, 42, 41, 39], ddof=1)
    assert p.se_t_ha == pytest.approx(math.sqrt(0.75**2 * s2a / 4 + 0.25**2 * s2b / 4))


@pytest.mark.parametrize("shift", [0.0, 4.0])
def test_change_intervals_cover_the_truth_over_seeds(shift: float) -> None:
    """90 % intervals of field and project change cover the generated truth about 90 % of the time, whatever
    whole-map shift the imagery puts between the rounds (the map is only the auxiliary)."""
    runs = [_one_region(replace(SPEC, seed=s), shift) for s in range(40)]
    field_hits = [
        lo <= r["true_fields"][f] <= hi  # type: ignore[index]
        for r in runs for f, e in r["fields"].items()  # type: ignore[attr-defined]
        for lo, hi in [e.interval()]
    ]  # fmt: skip
    proj = [r["project"] for r in runs]
    proj_hits = [p.interval()[0] <= r["true_project"] <= p.interval()[1] for p, r in zip(proj, runs, strict=True)]  # type: ignore[attr-defined]
    assert 0.84 <= np.mean(field_hits) <= 0.96, np.mean(field_hits)
    assert 0.8 <= np.mean(proj_hits) <= 0.98, np.mean(proj_hits)
    err = np.array([p.mean_t_ha - r["true_project"] for p, r in zip(proj, runs, strict=True)])  # type: ignore[attr-defined]
    se = np.array([p.se_t_ha for p in proj])  # type: ignore[attr-defined]
    assert abs(err.mean()) < 3 * np.sqrt(np.mean(se**2) / len(runs))  # no systematic shift
    if shift:
        map_err = np.array([r["map_project"] - r["true_project"] for r in runs])
        assert map_err.mean() > 0.8 * shift  # the map change alone carries the imagery shift


def test_zero_true_change_covers_zero_without_shift() -> None:
    """A region with no true change: the project change interval covers zero about 90 % of the time over seeds,
    and the estimates scatter around zero, though the second round's imagery shifts the map by +3 t C/ha."""
    runs = [_one_region(replace(SPEC, seed=100 + s, change_scale=0.0), 3.0) for s in range(60)]
    proj = [r["project"] for r in runs]
    assert all(abs(r["true_project"]) < 1e-9 for r in runs)
    covers = np.mean([p.interval()[0] <= 0 <= p.interval()[1] for p in proj])  # type: ignore[attr-defined]
    assert 0.82 <= covers <= 0.98, covers
    est = np.array([p.mean_t_ha for p in proj])  # type: ignore[attr-defined]
    se = np.array([p.se_t_ha for p in proj])  # type: ignore[attr-defined]
    assert abs(est.mean()) < 3 * np.sqrt(np.mean(se**2) / len(runs))


def test_field_without_remeasured_sites_is_not_design_based() -> None:
    pairs = pd.DataFrame({"field_id": ["A"] * 6 + ["B"] * 6, "stock_first_t_ha": 50.0,
                          "stock_last_t_ha": [51, 52, 50, 49, 50, 51.0] * 2, "map_change_t_ha": 0.0})  # fmt: skip
    f, p, info = design_change(
        pairs, zones=["A", "B", "C"], zone_map_change_t_ha={"A": 0, "B": 0, "C": 0}, area_ha={"A": 1, "B": 1, "C": 1}
    )
    assert not f["C"].design_based
    assert math.isnan(f["C"].interval()[0])
    assert f["A"].design_based
    assert info["strata_without_sites"] == ["C"]
    assert math.isfinite(p.se_t_ha)


def test_too_few_pairs_is_an_error_that_says_what_to_do() -> None:
    from mrv.errors import AccountingError

    pairs = pd.DataFrame({"field_id": ["A"] * 3, "stock_first_t_ha": 50.0, "stock_last_t_ha": [51, 52, 50.0]})
    with pytest.raises(AccountingError, match="re-sample the baseline sites"):
        design_change(pairs, zones=["A"], zone_map_change_t_ha={"A": 0.0}, area_ha={"A": 1.0})


def test_project_df_counts_the_pooled_variance_once() -> None:
    """Fields with < 3 pairs share one pooled variance s_p^2 (df n - H); the project variance is then a linear
    combination of the fields' independent sums of squares SS_h, and its Satterthwaite (1946) df is that
    combination's, so it can never exceed n - H (counting s_p^2 once per field that uses it, as if independent,
    gave 32.5 df from 13 pairs and 8 pooled df here)."""
    d = {"A": [1.0, 4.0], "B": [0.0, 5.0], "C": [2.0, 1.0], "D": [3.0, -1.0], "E": [1.0, 2.0, 0.0, 3.0, 1.5]}
    rows = [(f, v) for f, vs in d.items() for v in vs]
    pairs = pd.DataFrame({"field_id": [f for f, _ in rows], "stock_first_t_ha": 50.0,
                          "stock_last_t_ha": [50.0 + v for _, v in rows]})  # fmt: skip
    area = {"A": 2.0, "B": 2.0, "C": 2.0, "D": 2.0, "E": 1.0}
    pairs = pd.concat([pairs] * 2, ignore_index=True)  # 10 pairs at least (MIN_PAIRS); each field's SS doubles
    _, p, info = design_change(pairs, zones=list(area), zone_map_change_t_ha={}, area_ha=area, method="none")
    n_h = {f: 2 * len(v) for f, v in d.items()}
    ss = {f: 2 * float(np.sum((np.array(v) - np.mean(v)) ** 2)) for f, v in d.items()}
    n, h = sum(n_h.values()), len(n_h)
    w = {f: a / sum(area.values()) for f, a in area.items()}
    own = {f: n_h[f] >= 3 for f in d}
    assert all(own.values())  # doubled: every field has >= 3 pairs -> own variances, Cochran Eq. 5.16
    parts = np.array([w[f] ** 2 * ss[f] / (n_h[f] - 1) / n_h[f] for f in d])
    assert p.se_t_ha**2 == pytest.approx(parts.sum())
    assert p.df == pytest.approx(parts.sum() ** 2 / np.sum(parts**2 / np.array([n_h[f] - 1 for f in d])))
    # single pairs per field in A-D: they use s_p^2 = sum SS / (n - H)
    one = pd.DataFrame({"field_id": [f for f, _ in rows], "stock_first_t_ha": 50.0,
                        "stock_last_t_ha": [50.0 + v for _, v in rows]})  # fmt: skip
    _, p, info = design_change(one, zones=list(area), zone_map_change_t_ha={}, area_ha=area, method="none")
    n_h = {f: len(v) for f, v in d.items()}
    ss = {f: float(np.sum((np.array(v) - np.mean(v)) ** 2)) for f, v in d.items()}
    n = sum(n_h.values())
    df_p = n - h
    sp2 = sum(ss.values()) / df_p
    pooled = sum(w[f] ** 2 / n_h[f] for f in "ABCD")
    assert p.se_t_ha**2 == pytest.approx(pooled * sp2 + w["E"] ** 2 * ss["E"] / (n_h["E"] - 1) / n_h["E"])
    # Satterthwaite over the independent SS_h: coefficient a_h of SS_h, its df f_h, its variance estimated with
    # the variance the field is assigned (own s_E^2 for E, the pooled s_p^2 for A-D)
    a = {f: pooled / df_p + (w[f] ** 2 / n_h[f] / (n_h[f] - 1) if f == "E" else 0.0) for f in d}
    f_h = {f: n_h[f] - 1 for f in d}
    s2 = {f: ss[f] / f_h[f] if f == "E" else sp2 for f in d}
    terms = np.array([a[f] * f_h[f] * s2[f] for f in d])
    assert p.df == pytest.approx(terms.sum() ** 2 / np.sum(terms**2 / np.array(list(f_h.values()))))
    assert p.df == pytest.approx(6.462, abs=1e-3)
    assert p.df <= df_p == info["df_pooled"]
    # every field on the pooled variance: the df is the pooled variance's, n - H
    two = pd.DataFrame({"field_id": list("AABBCCDDGGHH"), "stock_first_t_ha": 50.0,
                        "stock_last_t_ha": 50.0 + np.array([1, 4, 0, 5, 2, 1, 3, -1, 0, 0.5, 2, 6.0])})  # fmt: skip
    _, p, info = design_change(two, zones=list("ABCDGH"), zone_map_change_t_ha={},
                               area_ha=dict(zip("ABCDGH", [1, 2, 3, 1, 5, 2], strict=True)), method="none")  # fmt: skip
    assert info["df_pooled"] == 12 - 6
    assert p.df == pytest.approx(info["df_pooled"])


def _alone(spec: SceneSpec) -> dict[str, Any]:
    """The stratified estimators alone (b = 0) on one generated region's lab sites: ``(estimate, truth)`` of the
    last round's project stock, the project change and each field's change (truth = the generated true,
    pixel-weighted, field means), and the change's pooled df ``n - H``."""
    truth = make_truth(spec)
    first, last = (r.name for r in spec.rounds)
    a, b = (_site_stocks(make_lab_samples(truth, n)) for n in (first, last))
    idx = truth.fields.field_index
    ids = list(truth.fields.field_ids)
    area = {f: float((idx == i + 1).sum()) for i, f in enumerate(ids)}
    w = np.array([area[f] for f in ids])
    tl, tf = np.array(truth.field_mean_stock(last)), np.array(truth.field_mean_stock(first))
    _, stock, _ = design_stock(b, zones=ids, zone_map_mean_t_ha={}, area_ha=area)
    pairs = pair_sites(a, b, max_distance_m=10.0)
    fields, change, info = design_change(pairs, zones=ids, zone_map_change_t_ha={}, area_ha=area, method="none")
    return {
        "stock": [(stock, float(np.average(tl, weights=w)))],
        "change": [(change, float(np.average(tl - tf, weights=w)))],
        "field change": [(fields[f], float(tl[i] - tf[i])) for i, f in enumerate(ids) if fields[f].design_based],
        "df_pooled": info["df_pooled"],
    }


def _variance_ratio(records: list[tuple[object, float]]) -> tuple[float, float, float]:
    """mean(err^2) / mean(se^2) with its standard error (ratio estimator, Cochran 1977 Eq. 6.9), and coverage."""
    err = np.array([e.mean_t_ha - t for e, t in records])  # type: ignore[attr-defined]
    se2 = np.array([e.se_t_ha**2 for e, _ in records])  # type: ignore[attr-defined]
    r = float(np.mean(err**2) / np.mean(se2))
    se_r = float(np.std(err**2 - r * se2, ddof=1) / (math.sqrt(len(err)) * np.mean(se2)))
    cover = float(np.mean([e.interval()[0] <= t <= e.interval()[1] for e, t in records]))  # type: ignore[attr-defined]
    return r, se_r, cover


@pytest.mark.slow
def test_design_variances_match_the_true_errors_over_many_regions() -> None:
    """On 600 generated regions the realised squared errors (against the generated truth) average to the estimated
    variances: project stock and change within 3 SE of a ratio of 1, 90 % t intervals covering ~90 %. Field
    change (2,400 fields, pooled variance) is precise enough to have power: a variance 20 % too small (a ratio
    1.25 x the true one) would lie outside the band."""
    runs = [_alone(replace(SPEC, seed=5000 + s)) for s in range(600)]
    for name in ("stock", "change", "field change"):
        r, se_r, cover = _variance_ratio([x for run in runs for x in run[name]])
        assert abs(r - 1) < 3 * se_r, (name, r, se_r)
        assert 0.87 <= cover <= 0.95, (name, cover)  # binomial SE 0.012 (project), 0.006 (fields)
    r, se_r, _ = _variance_ratio([x for run in runs for x in run["field change"]])
    assert abs(r - 0.8) > 3 * se_r, (r, se_r)  # power: the band excludes a variance 20 % too small


@pytest.mark.slow
def test_project_change_with_few_pairs_per_field_covers_and_bounds_its_df() -> None:
    """Most baseline sites not re-measured (share 0.6: ~3.6 pairs per field, many fields on the pooled variance):
    the project change interval still covers the generated truth ~90 % of the time, and its df never exceeds
    the pooled variance's n - H (the df once counted the pooled variance once per field, up to H-fold)."""
    recs, dfs, bounds = [], [], []
    for s in range(400):
        run = _alone(replace(SPEC, seed=7000 + s, remeasured_share=0.6))
        recs += run["change"]
        dfs.append(run["change"][0][0].df)
        bounds.append(run["df_pooled"])
    r, se_r, cover = _variance_ratio(recs)
    assert 0.86 <= cover <= 0.96, cover
    assert abs(r - 1) < 3 * se_r, (r, se_r)
    assert all(d <= b + 1e-9 for d, b in zip(dfs, bounds, strict=True))
