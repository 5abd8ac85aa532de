"""Accuracy metrics and spatial folds against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from mrv.errors import ModelError
from mrv.modeling.model import conformal_margin, conformal_rank
from mrv.modeling.validation import (
    balanced_block_folds,
    fold_indices,
    fold_sizes,
    lins_ccc,
    metrics,
    spatial_blocks,
)


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


def test_too_few_blocks_for_the_folds_is_a_clear_error() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.uniform(0, 1500, 60), rng.uniform(0, 900, 60)  # 2 x 1 blocks of 1000 m
    with pytest.raises(ModelError, match="at least 5 occupied blocks"):
        fold_indices(x, y, n_folds=5, block_size_m=1000, seed=0)


def test_conformal_margin_takes_the_kth_smallest_score() -> None:
    # Romano et al. (2019): Q = k-th smallest score, k = ceil((n + 1)(1 - alpha)).
    # n = 27 at 0.9: k = ceil(25.2) = 26 -> 26 (the old numpy 'higher' quantile at k/n gave 27, the maximum).
    scores = np.arange(1.0, 28.0)
    rng = np.random.default_rng(0)
    perm = rng.permutation(scores)
    y = np.zeros(27)
    assert conformal_rank(27, 0.9) == 26
    assert conformal_margin(y, -np.inf * np.ones(27), -perm, confidence=0.9) == 26.0  # score = y - upper = perm
    # n = 100: k = ceil(90.9) = 91 (was rank 92)
    s100 = rng.permutation(np.arange(1.0, 101.0))
    assert conformal_margin(np.zeros(100), -np.inf * np.ones(100), -s100, confidence=0.9) == 91.0
    # k > n (n = 5 < 9): the largest score, and the rank says the guarantee is lost
    assert conformal_rank(5, 0.9) == 6
    assert conformal_margin(np.zeros(5), np.full(5, -np.inf), -np.arange(1.0, 6.0), confidence=0.9) == 5.0
    # lower side: score = lower - y
    assert conformal_margin(np.zeros(3), np.array([1.0, 2.0, 3.0]), np.full(3, np.inf), confidence=0.5) == 2.0


def test_conformal_margin_covers_at_nominal_on_exchangeable_scores() -> None:
    # Thm. 1: P(score_{n+1} <= Q) >= 1 - alpha, and < 1 - alpha + 1/(n+1) for continuous scores.
    rng = np.random.default_rng(42)
    n, reps = 30, 4000
    hits = 0
    for _ in range(reps):
        s = rng.normal(size=n + 1)
        q = conformal_margin(np.zeros(n), np.full(n, -np.inf), -s[:n], confidence=0.9)
        hits += s[n] <= q
    cover = hits / reps
    assert 0.9 - 0.015 <= cover <= 0.9 + 1 / 31 + 0.015, cover


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_spatial_folds_are_all_non_empty_and_balanced(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # clustered samples: a few blocks hold most points (the 65/31/2/2/1 case of GroupKFold)
    centres = rng.uniform(0, 3000, size=(6, 2))
    k = rng.integers(0, 6, 120)
    xy = centres[k] + rng.normal(0, 150, size=(120, 2))
    folds = fold_indices(xy[:, 0], xy[:, 1], n_folds=5, block_size_m=200, seed=seed)
    sizes = fold_sizes(folds)
    blocks = spatial_blocks(xy[:, 0], xy[:, 1], block_size_m=200)
    assert len(sizes) == 5
    assert min(sizes) > 0
    assert sum(sizes) == 120
    assert max(sizes) - min(sizes) <= np.bincount(blocks).max()
    for train, test in folds:
        assert not set(blocks[train]) & set(blocks[test])


def test_balanced_block_folds_hand_example() -> None:
    # blocks of sizes 5, 4, 3, 3, 1 into 2 folds by LPT: 5 -> A, 4 -> B, 3 -> B (7), 3 -> A (8), 1 -> B (8)
    groups = np.repeat([0, 1, 2, 3, 4], [5, 4, 3, 3, 1])
    fold = balanced_block_folds(groups, 2, seed=0)
    assert sorted(np.bincount(fold).tolist()) == [8, 8]
