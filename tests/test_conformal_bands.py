"""The maps' interval (issue 13.4): pooled CQR joined with label-conditional margins by decile; the banded
models predict it on every path."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from mrv.config import ModelConfig
from mrv.modeling.conformal import (
    BandedGBMModel,
    BandedSOCModel,
    LabelConditionalMargins,
    band_confidence,
    band_count,
    banded_interval,
    fit_label_conditional,
    with_bands,
)
from mrv.modeling.model import conformal_margin, fit_estimator
from mrv.modeling.train import fit_bands


def test_band_count_and_level() -> None:
    assert band_count(144) == 10
    assert band_count(57) == 5  # fewer, wider bands when a decile would hold fewer than 10 points
    assert band_count(19) == 1
    assert band_confidence(0.9) == pytest.approx(0.85)


def test_banded_interval_hand_example() -> None:
    m = LabelConditionalMargins((-np.inf, 50.0, np.inf), (1.0, 10.0))
    lo, hi = banded_interval(np.array([44.0, 20.0, np.nan]), np.array([48.0, 25.0, np.nan]), m, 2.0)
    # hull [43, 58] and [19, 26] joined with the pooled [42, 50] and [18, 27]
    assert lo[:2].tolist() == [42.0, 18.0]
    assert hi[:2].tolist() == [58.0, 27.0]
    assert np.isnan(lo[2])
    assert np.isnan(hi[2])
    lo, hi = banded_interval(np.array([44.0]), np.array([48.0]), None, 2.0)  # no bands: pooled alone
    assert (lo.tolist(), hi.tolist()) == ([42.0], [50.0])


def test_too_few_calibration_points_fall_back_to_the_pooled_margin() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(50, 10, 15)
    assert fit_bands(y, y - 5, y + 5, 0.9) is None
    m = fit_bands(rng.normal(50, 10, 35), np.full(35, 45.0), np.full(35, 55.0), 0.9)
    assert m is not None
    assert len(m.margins_t_ha) == 3
    assert m.confidence == pytest.approx(0.85)
    assert sum(m.n_per_band) == 35
    assert min(m.n_per_band) >= 11


def test_band_margins_are_conformal_margins_of_each_decile() -> None:
    rng = np.random.default_rng(3)
    y = rng.gamma(9, 7, 200)
    lo, hi = np.full(200, 40.0), np.full(200, 80.0)
    m = fit_label_conditional(y, lo, hi, confidence=0.85, min_points=10)
    edges = np.quantile(y, np.linspace(0, 1, 11))
    top = y >= edges[9]
    assert m.margins_t_ha[-1] == pytest.approx(conformal_margin(y[top], lo[top], hi[top], confidence=0.85))
    assert all(m.finite_sample)


def _data(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 1, (300, 4)).astype("float32")
    y = 40 + 30 * X[:, 0] + 10 * X[:, 1] ** 2 + rng.normal(0, 5, 300)
    return X, y


@pytest.mark.parametrize("kind", ["qrf", "gbm_quantile"])
def test_banded_model_predicts_the_banded_interval(kind: str) -> None:
    X, y = _data()
    cfg = ModelConfig(kind=kind, n_estimators=40, gbm_max_iter=40, seed=0)
    covs = ("a", "b", "c", "d")
    raw_model = fit_estimator(cfg, X[:200], y[:200], np.ones(200), covs)
    raw = raw_model.predict(X[200:])  # margin 0: raw quantiles
    bands = fit_label_conditional(y[200:], raw[:, 1], raw[:, 3], confidence=0.85, min_points=10)
    model = with_bands(raw_model, margin_t_ha=1.5, bands=bands, metadata={"training_sha256": "x"})
    assert isinstance(model, BandedSOCModel if kind == "qrf" else BandedGBMModel)
    Xt = X[:50].copy()
    Xt[3, 1] = np.nan
    out = model.predict(Xt)
    ref = raw_model.predict(Xt)
    lo, hi = banded_interval(ref[:, 1], ref[:, 3], bands, 1.5)
    ok = np.isfinite(ref[:, 0])
    np.testing.assert_allclose(out[ok, 1], lo[ok], rtol=1e-6)
    np.testing.assert_allclose(out[ok, 3], hi[ok], rtol=1e-6)
    np.testing.assert_allclose(out[ok, 0], ref[ok, 0])  # mean and median untouched
    np.testing.assert_allclose(out[ok, 2], ref[ok, 2])
    np.testing.assert_allclose(out[ok, 4], (hi[ok] - lo[ok]) / (2 * 1.6448536), rtol=1e-5)
    assert np.isnan(out[3]).all()
    assert (out[ok, 1] <= ref[ok, 1] - 1.5 + 1e-4).all()  # never narrower than the pooled interval
    if kind == "qrf":
        assert isinstance(model, BandedSOCModel)
        np.testing.assert_allclose(model._predict_numpy(Xt)[ok], out[ok], rtol=1e-5)  # numpy path = compiled path
    # the calibration is part of the content id
    other = with_bands(raw_model, margin_t_ha=1.5, bands=None, metadata={"training_sha256": "x"})
    assert other.model_id != model.model_id


@pytest.mark.parametrize("with_calibration_bands", [True, False])
def test_compiled_walk_applies_the_bands_bit_for_bit(with_calibration_bands: bool) -> None:
    """The walk's per-pixel banding (mrv.modeling._forest_kernel._banded) = banded_interval on its raw output."""
    X, y = _data(7)
    raw_model = fit_estimator(ModelConfig(n_estimators=60, seed=3), X[:200], y[:200], np.ones(200), ("a", "b", "c", "d"))
    assert raw_model._compiled() is not None
    raw = raw_model.predict(X[200:])
    bands = fit_label_conditional(y[200:], raw[:, 1], raw[:, 3], confidence=0.85, min_points=10)
    assert len(bands.margins_t_ha) == 10
    model = with_bands(raw_model, margin_t_ha=0.7, bands=bands if with_calibration_bands else None, metadata={})
    Xt = np.random.default_rng(8).uniform(-0.2, 1.2, (5000, 4)).astype("float32")  # beyond the training range too
    Xt[::97, 2] = np.nan
    out = model.predict(Xt)
    ref = np.array(raw_model.predict(Xt))
    lo, hi = banded_interval(ref[:, 1], ref[:, 3], model.bands, 0.7)
    expected = ref.copy()
    expected[:, 1], expected[:, 3] = lo, hi
    expected[:, 4] = (hi - lo) / (2.0 * norm.ppf(0.95))
    np.testing.assert_array_equal(out, expected)  # NaN rows included
    if with_calibration_bands:  # the bands do cut: some intervals differ from the pooled one
        assert (out[:, 3] != ref[:, 3] + np.float32(0.7)).sum() > 100
