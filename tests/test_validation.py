"""Accuracy metrics and spatial folds against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from mrv.modeling.model import conformal_margin
from mrv.modeling.validation import fold_indices, lins_ccc, metrics, spatial_blocks


def test_lins_ccc_hand_example() -> None:
    obs = np.array([1.0, 2.0, 3.0])
    pred = np.array([2.0, 3.0, 4.0])
    # s_xy = 2/3, s_x^2 = s_y^2 = 2/3, (mean diff)^2 = 1 -> 2*(2/3) / (4/3 + 1) = 4/7
    assert lins_ccc(obs, pred) == pytest.approx(4 / 7)


def test_metrics_hand_example() -> None:
    obs = np.array([10.0, 20.0, 30.0, 40.0])
    pred = np.array([12.0, 18.0, 33.0, 41.0])
    m = metrics(obs, pred, pred - 2.5, pred + 2.5, np.full(4, 25.0))
    assert m.rmse == pytest.approx(np.sqrt((4 + 4 + 9 + 1) / 4))
    assert m.bias == pytest.approx(1.0)
    assert m.r2 == pytest.approx(1 - 18 / 500)
    assert m.picp_90 == pytest.approx(0.75)  # the 3 t C/ha miss falls outside +-2.5
    assert m.mean_width_90 == pytest.approx(5.0)
    assert m.baseline_rmse == pytest.approx(np.sqrt((225 + 25 + 25 + 225) / 4))


def test_conformal_margin_is_finite_sample_quantile() -> None:
    y = np.arange(10.0)
    lo, hi = y - 1, y + 1
    hi[:3] = y[:3] - 2  # three points 2 above the upper bound -> score 2
    # n = 10, level ceil(11 * 0.9) / 10 = 1.0 -> the largest score
    assert conformal_margin(y, lo, hi, confidence=0.9) == pytest.approx(2.0)
    assert conformal_margin(y, lo, hi, confidence=0.5) == pytest.approx(-1.0)


def test_spatial_folds_never_split_a_block() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 5000, 300), rng.uniform(0, 5000, 300)
    blocks = spatial_blocks(x, y, block_size_m=1000)
    for train, test in fold_indices(x, y, n_folds=5, block_size_m=1000, seed=0):
        assert not set(blocks[train]) & set(blocks[test])


def test_fewer_folds_when_blocks_are_scarce() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.uniform(0, 1500, 60), rng.uniform(0, 900, 60)  # 2 x 1 blocks of 1000 m
    folds = fold_indices(x, y, n_folds=5, block_size_m=1000, seed=0)
    assert len(folds) == np.unique(spatial_blocks(x, y, block_size_m=1000)).size == 2
