"""The compiled forest walk (``mrv.modeling.forest_walk``) gives the numbers of the numpy path and of quantile-forest.

Truth here is generated, not the kernel itself: the reference path walks each tree with
scikit-learn's ``tree_.apply`` and sorts the leaf values with numpy; quantile-forest's own
``predict`` is the second reference. Many seeds, tree counts (odd, even, not a multiple of the
32-pixel block) and input layouts.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from quantile_forest import RandomForestQuantileRegressor

from mrv.config import ModelConfig
from mrv.modeling import forest_walk
from mrv.modeling.model import SOCModel, make_forest


def _model(seed: int, *, n_trees: int, n_feat: int, n: int = 400, min_leaf: int = 5) -> SOCModel:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_feat)).astype("float32")
    # Duplicated target values make ties among the trees' leaf values (order statistics with ties).
    y = np.round(40 + 6 * np.sin(2 * X[:, 0]) + 3 * X[:, -1] ** 2 + rng.normal(0, 2, n), 0)
    forest = make_forest(ModelConfig(n_estimators=n_trees, min_samples_leaf=min_leaf, seed=seed)).fit(X, y)
    return SOCModel(forest, tuple(f"c{i}" for i in range(n_feat)), 0.9, margin_t_ha=0.7 + seed % 3)


def _pixels(seed: int, n: int, n_feat: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 1000)
    X = rng.normal(scale=1.3, size=(n, n_feat)).astype("float32")
    X[rng.integers(0, n, 5), rng.integers(0, n_feat, 5)] = np.nan
    X[rng.integers(0, n, 2), 0] = np.inf
    return X


@pytest.mark.parametrize(("seed", "n_trees", "n_feat"), [(0, 100, 10), (1, 7, 3), (2, 50, 6), (3, 33, 1), (4, 64, 12)])
def test_compiled_walk_matches_numpy_path_and_quantile_forest(seed: int, n_trees: int, n_feat: int) -> None:
    model = _model(seed, n_trees=n_trees, n_feat=n_feat)
    assert model._compiled() is not None
    X = _pixels(seed, 3001, n_feat)  # not a multiple of the 48-pixel block
    fast = model.predict(X)
    ref = model._predict_numpy(X, batch=1000)
    assert fast.shape == ref.shape == (3001, 5)
    assert fast.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(fast), np.isnan(ref))
    np.testing.assert_allclose(fast, ref, atol=1e-4, rtol=0)
    ok = np.isfinite(X).all(axis=1)
    assert not ok.all()
    q = np.asarray(model.forest.predict(X[ok], quantiles=list(model.quantiles)))
    mean = np.asarray(model.forest.predict(X[ok], quantiles="mean"))
    m = model.margin_t_ha
    np.testing.assert_allclose(fast[ok, 0], mean, atol=1e-4)
    np.testing.assert_allclose(fast[ok, 1], q[:, 0] - m, atol=1e-4)
    np.testing.assert_allclose(fast[ok, 2], q[:, 1], atol=1e-4)
    np.testing.assert_allclose(fast[ok, 3], q[:, 2] + m, atol=1e-4)


def test_input_layouts_and_sizes() -> None:
    model = _model(5, n_trees=40, n_feat=4)
    X = _pixels(5, 700, 4)
    ref = model._predict_numpy(X)
    block_t = np.ascontiguousarray(X.T)  # (covariate, pixel) as predict_block hands it over
    for variant in (X, X.astype("float64"), block_t.T, np.asfortranarray(X)):
        np.testing.assert_allclose(model.predict(variant), ref, atol=1e-4)
    assert model.predict(X[:0]).shape == (0, 5)
    np.testing.assert_allclose(model.predict(X[:1]), ref[:1], atol=1e-4)


def _smooth_scene(seed: int, ny: int, nx: int, n_feat: int) -> np.ndarray:
    """``(ny * nx, n_feat)`` pixels of smooth fields (neighbours share most of their paths through a tree),
    with a masked rectangle wider than a 48-pixel block and scattered NaN pixels."""
    rng = np.random.default_rng(seed + 2000)
    r, c = np.mgrid[0:ny, 0:nx] / 40.0
    X = np.stack([np.sin(r * (1 + i) + rng.uniform(0, 6)) * np.cos(c * (2 - i / n_feat)) * 1.5 for i in range(n_feat)], -1)
    X = (X + rng.normal(scale=0.02, size=X.shape)).astype("float32")
    X[5:9, 10:70] = np.nan  # whole blocks without a pixel, and blocks half masked
    X[rng.integers(0, ny, 40), rng.integers(0, nx, 40), rng.integers(0, n_feat, 40)] = np.nan
    return X.reshape(-1, n_feat)


@pytest.mark.parametrize(("seed", "n_feat"), [(12, 3), (13, 8)])
def test_smooth_masked_scene_matches_numpy_path(seed: int, n_feat: int) -> None:
    """Map-like input: the lane groups start deep in the trees (shared paths) and masked pixels stay NaN."""
    model = _model(seed, n_trees=60, n_feat=n_feat)
    X = _smooth_scene(seed, 41, 97, n_feat)  # neither rows nor columns a multiple of the 4 x 12 tile
    ref = model._predict_numpy(X)
    for row_px in (None, 97):  # runs of 48 pixels; 2-D patches of an image 97 pixels wide
        fast = model.predict(X, row_px=row_px)
        np.testing.assert_array_equal(np.isnan(fast), np.isnan(ref))
        np.testing.assert_allclose(fast, ref, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="not rows of 96"):
        model.predict(X, row_px=96)


def test_shared_start_is_on_every_pixels_path() -> None:
    """The node a lane group starts from is an ancestor of (or is) every one of its pixels' leaves, and deeper
    than the root for coherent groups: walking every pixel from the root in Python passes through it."""
    from mrv.modeling._forest_kernel import _shared_starts4

    model = _model(14, n_trees=20, n_feat=4)
    compiled = model._compiled()
    assert compiled is not None
    forest = compiled[0]
    X = np.concatenate([_smooth_scene(14, 8, 96, 4), _pixels(14, 4 * 12 * 16, 4)])  # coherent, then random groups
    X = X[np.isfinite(X).all(axis=1)]
    keys = forest_walk.order_key(X)
    low = (forest.node & np.uint64(0xFFFFFFFF)).astype(np.int64)
    key_of = (forest.node >> np.uint64(32)).astype(np.int64)
    deeper = 0
    for g0 in range(0, keys.shape[0] - 47, 48):
        groups = keys[g0 : g0 + 48].reshape(4, 12, -1)
        kmin = np.zeros(4 * forest_walk.FEATURE_SLOTS, dtype=np.uint32)
        kmax = np.zeros_like(kmin)
        for g in range(4):
            kmin[g * forest_walk.FEATURE_SLOTS : g * forest_walk.FEATURE_SLOTS + 4] = groups[g].min(axis=0)
            kmax[g * forest_walk.FEATURE_SLOTS : g * forest_walk.FEATURE_SLOTS + 4] = groups[g].max(axis=0)
        for r in forest.root:
            starts = _shared_starts4(forest.node, np.uint32(r), kmin, kmax)
            deeper += sum(int(s) != int(r) for s in starts)
            for g, start in enumerate(starts):
                for px in groups[g]:
                    k, path = int(r), {int(r)}
                    while forest.height[k] > 0:
                        f = low[k] & (forest_walk.FEATURE_SLOTS - 1)
                        k = (low[k] >> forest_walk.FEATURE_BITS) + int(px[f] > key_of[k])
                        path.add(k)
                    assert int(start) in path
    assert deeper > 0


def test_float32_threshold_is_exact_for_float32_inputs() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=20_000).astype("float32")
    # Thresholds as scikit-learn makes them: midpoints of two float32 values, in float64.
    a, b = rng.choice(x, size=(2, 20_000))
    t = (a.astype("float64") + b.astype("float64")) / 2
    t32 = forest_walk.float32_threshold(t)
    xs = x[rng.integers(0, x.size, size=(20_000,))]
    np.testing.assert_array_equal(xs.astype("float64") <= t, xs <= t32)
    near = np.nextafter(t32, np.float32(np.inf))  # the float32 just above: must be on the other side when above t
    np.testing.assert_array_equal(near.astype("float64") <= t, near <= t32)


@pytest.mark.parametrize("n", [1, 2, 5, 31, 100, 129, 200])
def test_selection_network_puts_order_statistics_in_place(n: int) -> None:
    wanted = tuple(sorted({0, n // 20, n // 2, n - 1 - n // 20, n - 1}))
    net = forest_walk.selection_network(n, wanted)
    rng = np.random.default_rng(n)
    vals = np.round(rng.normal(size=(n, 500)), 1).astype("float32")  # ties
    expect = np.sort(vals, axis=0)[list(wanted)]
    for i, j in net:
        lo, hi = np.minimum(vals[i], vals[j]), np.maximum(vals[i], vals[j])
        vals[i], vals[j] = lo, hi
    np.testing.assert_array_equal(vals[list(wanted)], expect)
    full = len(forest_walk._batcher_pairs(1 << max(0, (n - 1).bit_length())))
    assert len(net) <= full


def test_unsupported_forest_falls_back_to_quantile_forest() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 3))
    y = X[:, 0] * 4 + rng.normal(size=300) + 30
    forest = RandomForestQuantileRegressor(n_estimators=20, max_samples_leaf=None, random_state=0).fit(X, y)
    model = SOCModel(forest, ("a", "b", "c"), 0.9, margin_t_ha=0.5)
    assert model._compiled() is None
    Xt = rng.normal(size=(50, 3)).astype("float32")
    out = model.predict(Xt)
    q = forest.predict(Xt, quantiles=list(model.quantiles))
    np.testing.assert_allclose(out[:, 2], q[:, 1], atol=1e-4)
    np.testing.assert_allclose(out[:, 0], forest.predict(Xt, quantiles="mean"), atol=1e-4)


def test_pickled_model_predicts_the_same_and_carries_no_compiled_layout() -> None:
    model = _model(9, n_trees=30, n_feat=5)
    X = _pixels(9, 200, 5)
    before = model.predict(X)
    blob = pickle.dumps(model)
    assert b"CompiledForest" not in blob
    again = pickle.loads(blob)
    np.testing.assert_array_equal(again.predict(X), before)


@pytest.mark.parametrize("n_feat", [forest_walk.FEATURE_SLOTS, forest_walk.FEATURE_SLOTS + 1])
def test_covariate_count_at_and_beyond_the_packed_layout(n_feat: int) -> None:
    """Up to FEATURE_SLOTS covariates the compiled walk runs; beyond, the numpy path gives the same numbers."""
    model = _model(11, n_trees=12, n_feat=n_feat, n=300)
    compiled = model._compiled()
    assert (compiled is not None) == (n_feat <= forest_walk.FEATURE_SLOTS)
    X = _pixels(11, 500, n_feat)
    ok = np.isfinite(X).all(axis=1)
    out = model.predict(X)
    q = np.asarray(model.forest.predict(X[ok], quantiles=list(model.quantiles)))
    np.testing.assert_allclose(out[ok, 2], q[:, 1], atol=1e-4)
    np.testing.assert_allclose(out[ok, 0], model.forest.predict(X[ok], quantiles="mean"), atol=1e-4)
    assert np.isnan(out[~ok]).all()
