"""Coverage across the stock range (issue 13.4): by decile of the observed stock, on generated regions.

The maps' interval joins the pooled CQR interval with the label-conditional CQR set over deciles
(:mod:`mrv.modeling.conformal`). Coverage is pooled over ten seeds (about 18 sites per decile per region:
one region alone cannot tell 0.8 from 0.9).
"""

from __future__ import annotations

import numpy as np
import pytest
from test_calibration_sources import BANDS, CFG, region_sites

from mrv.modeling.conformal import LabelConditionalMargins, fit_label_conditional, label_conditional_interval
from mrv.modeling.train import coverage_by_decile, train

SEEDS = tuple(range(10))


def test_coverage_by_decile_hand_example() -> None:
    obs = np.arange(20.0)
    lower, upper = obs - 1, obs + 1
    upper[18:] = obs[18:] - 0.5  # the top two points fall outside
    d = coverage_by_decile(obs, lower, upper)
    assert [e["n"] for e in d] == [2] * 10
    assert [e["picp"] for e in d] == [1.0] * 9 + [0.0]
    assert d[0]["observed_min_t_ha"] == 0.0
    assert d[-1]["observed_max_t_ha"] == 19.0


def test_label_conditional_interval_hand_example() -> None:
    # two bands split at 50 with margins 1 and 10: a pixel with raw [44, 48] reaches band 2 only if 48 + 10 >= 50
    m = LabelConditionalMargins((-np.inf, 50.0, np.inf), (1.0, 10.0))
    lo, hi = label_conditional_interval(np.array([44.0, 20.0]), np.array([48.0, 25.0]), m)
    assert lo.tolist() == [43.0, 19.0]
    assert hi.tolist() == [58.0, 26.0]  # 48 + 10 in band 2; the low pixel cannot reach 50


@pytest.mark.slow
def test_every_decile_is_covered_at_least_80_percent_on_generated_regions() -> None:
    maps = np.zeros((10, 2))
    single = np.zeros((10, 2))
    width = {"maps": [], "single": []}
    picp = []
    for seed in SEEDS:
        res = train(region_sites(seed), BANDS, CFG)
        d = res.coverage_by_decile  # what the model card reports: the intervals the maps use
        assert len(d) == 10
        for e in d:
            maps[e["decile"] - 1] += [e["picp"] * e["n"], e["n"]]
        sm = res.calibration["single_margin"]
        assert isinstance(sm, dict)
        for e in sm["cv_coverage_by_decile"]:
            single[e["decile"] - 1] += [e["picp"] * e["n"], e["n"]]
        lc = res.calibration["label_conditional"]
        assert isinstance(lc, dict)
        assert lc["used_by_maps"] is True
        assert lc["n_bands"] == 10
        width["maps"].append(res.spatial_cv.mean_width_90)
        width["single"].append(sm["cv_mean_width_t_ha"])
        picp.append(res.spatial_cv.picp_90)
    cov_maps = maps[:, 0] / maps[:, 1]
    cov_single = single[:, 0] / single[:, 1]
    # one margin: marginal 0.9 but the tails of the stock range fall short (shrinkage toward the mean)
    assert cov_single.min() < 0.8 < cov_single.mean()
    # the maps' intervals: every decile >= 80 %, overall >= 90 %, for a bounded extra width
    assert cov_maps.min() >= 0.8, np.round(cov_maps, 2)
    assert 0.9 <= np.mean(picp) <= 0.97
    assert np.mean(width["maps"]) < 1.3 * np.mean(width["single"])


def test_label_conditional_covers_each_band_at_its_level_on_exchangeable_data() -> None:
    # Mondrian validity: with exchangeable calibration and test points, coverage within each band >= its level
    rng = np.random.default_rng(7)
    level = 0.85
    hits = np.zeros(10)
    counts = np.zeros(10)
    for _ in range(200):
        x = rng.uniform(0, 1, 400)
        y = 40 + 20 * x + rng.normal(0, 4 + 6 * x)  # heteroscedastic
        pred = 40 + 20 * (0.5 + 0.7 * (x - 0.5))  # a shrunk model
        lo, hi = pred - 3, pred + 3
        m = fit_label_conditional(y[:300], lo[:300], hi[:300], confidence=level, min_points=10)
        assert len(m.margins_t_ha) == 10
        L, U = label_conditional_interval(lo[300:], hi[300:], m)
        band = np.clip(np.searchsorted(np.asarray(m.edges_t_ha), y[300:], side="right") - 1, 0, 9)
        for k in range(10):
            sel = band == k
            hits[k] += np.sum((y[300:][sel] >= L[sel]) & (y[300:][sel] <= U[sel]))
            counts[k] += sel.sum()
    assert np.all(hits / counts >= level - 0.015), hits / counts
    # a single margin on the same data misses the tails (the shrunk model): the check can fail
