"""Design-based change from re-measured sites (mrv.accounting.change) against generated truth on many seeds."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mrv.accounting.change import design_change, design_stock, pair_sites
from mrv.synthetic import SceneSpec, make_lab_samples, make_truth, soc_stock_t_ha

# Short correlation ranges keep the generator fast (the truth of 140 regions is drawn below).
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
