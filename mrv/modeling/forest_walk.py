"""Compiled prediction of a quantile regression forest whose leaves each keep one training value.

quantile-forest with ``max_samples_leaf=1`` (the default) keeps one training value per leaf. For a pixel
x, tree t gives the value v_t(x) of the leaf x falls in; every tree's leaf has weight 1, so the forest's
conditional distribution (Meinshausen 2006, JMLR 7:983-999, Eq. 4 with one value per leaf) is the
empirical distribution of v_1(x) .. v_T(x). Its mean is their average and its quantile tau is the
linear interpolation between order statistics v_(k) and v_(k+1) at k = tau (T - 1) (0-based; the same
positions quantile-forest's ``predict(quantiles=...)`` interpolates when all weights are equal).

This module computes that without one ``tree_.apply`` call per tree and without a full sort:

* :func:`compile_forest` flattens scikit-learn's tree arrays (``tree_.children_left/right``,
  ``feature``, ``threshold``) into one node table. Leaves point to themselves, so lanes walked
  together take a common number of steps, without a data-dependent branch (``node = child[2 node + (x >
  thr)]``), a lane at its leaf staying there. Thresholds are stored as the largest float32 not above scikit-learn's float64 threshold:
  for a float32 covariate x, ``x <= t64`` exactly when ``x <= t32``, so leaves are those of ``apply``.
  The comparison is done on integer keys with the order of the floats (:func:`order_key`), so the
  threshold and the node's links come from one 8-byte load. 12 neighbouring pixels (a 4 x 3 patch of
  an image) walk together: first as one group down the path they all share (the node's threshold is
  outside the range of their keys), then each lane on its own, taking only as many more steps as the
  highest subtree the lanes are in.
* the order statistics come from a sorting network (Batcher's odd-even merge sort, Knuth TAOCP vol.
  3, 5.3.4, Algorithm M) pruned to the comparators that reach the needed positions, applied to
  blocks of 48 pixels at once, so each compare-exchange is a vector min/max over pixels.

Outputs are float32; :func:`predict_forest` writes them into a ``(5, n)`` array (mean, p05, p50, p95,
sd of the calibrated interval), so a ``(covariate, y, x)`` block maps to ``(output, y, x)`` without
a transpose copy.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "FEATURE_BITS",
    "FEATURE_SLOTS",
    "CompiledForest",
    "cached_forest",
    "compile_forest",
    "float32_threshold",
    "kernel",
    "order_key",
    "order_positions",
    "predict_forest",
    "selection_network",
]


#: Bits of a node's low word holding the covariate index (the left child id is the low word >> this):
#: a constant, so the kernel's shift and mask are immediates and ``xk[lane][covariate]`` has a fixed stride.
FEATURE_BITS = 6
#: Covariates the packed layout supports; a forest on more falls back to the numpy path.
FEATURE_SLOTS = 1 << FEATURE_BITS


@dataclass(frozen=True)
class CompiledForest:
    """A forest as flat arrays for :func:`predict_forest` (global node ids over all trees).

    Nodes are renumbered breadth-first per tree so that the two children of a node are adjacent:
    the right child is the left child + 1, and one step of the walk is ``k = left(k) + (x > thr(k))``,
    with one 8-byte load per node.
    """

    node: np.ndarray
    """uint64 ``(nodes,)``: ``order_key(threshold) << 32 | left child << FEATURE_BITS | covariate``; a leaf has
    the key of +inf and itself as left child, so a walk that reached a leaf stays there."""
    height: np.ndarray
    """int32 ``(nodes,)``: levels from each node down to the deepest leaf below it (0 at leaves)."""
    value: np.ndarray
    """float32 ``(nodes,)``: the training value kept at each leaf (NaN at internal nodes)."""
    root: np.ndarray
    """uint32 ``(trees,)``: node id of each tree's root."""
    n_features: int


def order_key(x: np.ndarray) -> np.ndarray:
    """uint32 keys with the order of float32 ``x`` (-0.0 taken as +0.0): ``x > t`` iff ``key(x) > key(t)``.

    Non-negative floats get the sign bit set, negative ones all bits flipped (the usual radix-sort
    mapping). Not for NaN.
    """
    bits = (np.asarray(x, dtype="float32") + np.float32(0.0)).view(np.uint32)
    return np.where(bits >> 31 == 1, ~bits, bits | np.uint32(0x80000000)).astype(np.uint32)


def float32_threshold(t: np.ndarray) -> np.ndarray:
    """The largest float32 <= each float64 threshold: for float32 x, ``x <= t`` iff ``x <= result``."""
    t32 = t.astype("float32")
    above = t32.astype("float64") > t
    t32[above] = np.nextafter(t32[above], np.float32(-np.inf))
    return t32


def _breadth_first(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Old node ids in the new order: root first, then the children of each node, left before right."""
    order = [0]
    i = 0
    while i < len(order):
        k = order[i]
        if left[k] >= 0:
            order += (int(left[k]), int(right[k]))
        i += 1
    return np.asarray(order, dtype=np.int64)


def _heights(left: np.ndarray, leaf: np.ndarray) -> np.ndarray:
    """Subtree height of every node of one breadth-first tree (children after parents; right = left + 1)."""
    h = np.zeros(leaf.size, dtype=np.int64)
    for k in np.flatnonzero(~leaf)[::-1]:
        h[k] = 1 + max(h[left[k]], h[left[k] + 1])
    return h.astype("int32")


def compile_forest(estimators: list[Any], leaf_values: np.ndarray, n_features: int) -> CompiledForest | None:
    """Flatten fitted scikit-learn trees; ``leaf_values`` is ``(trees, max_nodes)`` float32 (NaN off-leaf).

    ``None`` when the forest does not fit the 32-bit packed layout (more than :data:`FEATURE_SLOTS`
    covariates or 2**26 nodes; then the caller falls back).
    """
    shift = FEATURE_BITS
    total = sum(int(e.tree_.node_count) for e in estimators)
    if n_features > FEATURE_SLOTS or total >= 2 ** (32 - shift):
        return None
    nodes, heights, vals, roots = [], [], [], []
    offset = 0
    for t, est in enumerate(estimators):
        tree = est.tree_
        left = np.asarray(tree.children_left, dtype=np.int64)
        right = np.asarray(tree.children_right, dtype=np.int64)
        order = _breadth_first(left, right)
        new_id = np.empty(order.size, dtype=np.int64)
        new_id[order] = np.arange(order.size)
        leaf = left[order] < 0
        own = np.arange(order.size, dtype=np.int64)
        child = np.where(leaf, own, new_id[np.maximum(left[order], 0)]) + offset
        feature = np.where(leaf, 0, np.asarray(tree.feature, dtype=np.int64)[order])
        t32 = float32_threshold(np.asarray(tree.threshold, dtype="float64")[order])
        key = order_key(np.where(leaf, np.float32(np.inf), t32)).astype(np.uint64)
        nodes.append((key << np.uint64(32)) | ((child << shift) | feature).astype(np.uint64))
        vals.append(np.where(leaf, leaf_values[t, order], np.nan).astype("float32"))
        heights.append(_heights(child - offset, leaf))
        roots.append(offset)
        offset += order.size
    return CompiledForest(
        node=np.concatenate(nodes),
        height=np.concatenate(heights),
        value=np.concatenate(vals),
        root=np.asarray(roots, dtype="uint32"),
        n_features=n_features,
    )


def _batcher_pairs(n: int) -> list[tuple[int, int]]:
    """Comparators (i < j, min to i) of Batcher's odd-even merge sort for ``n`` a power of two."""
    pairs: list[tuple[int, int]] = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return pairs


def selection_network(n: int, wanted: tuple[int, ...]) -> np.ndarray:
    """``(comparators, 2)`` int32 network that puts the order statistics ``wanted`` of ``n`` values in place.

    Batcher's network for the next power of two with the inputs beyond ``n`` taken as +inf: a
    comparator (i, j) with j >= n never moves anything (position j keeps +inf), so it is dropped.
    Then, from the outputs back, only comparators that feed a wanted position are kept.
    """
    size = 1 << max(0, math.ceil(math.log2(max(n, 1))))
    pairs = [(i, j) for i, j in _batcher_pairs(size) if j < n]
    need = set(wanted)
    kept: list[tuple[int, int]] = []
    for i, j in reversed(pairs):
        if i in need or j in need:
            kept.append((i, j))
            need.update((i, j))
    kept.reverse()
    return np.asarray(kept, dtype="int32").reshape(-1, 2)


_CACHE: weakref.WeakKeyDictionary[Any, tuple[CompiledForest | None, np.ndarray]] = weakref.WeakKeyDictionary()
_CACHE_LOCK = threading.Lock()


def cached_forest(
    forest: Any, leaf_values: Callable[[], np.ndarray | None], wanted: tuple[int, ...]
) -> tuple[CompiledForest | None, np.ndarray]:
    """:func:`compile_forest` and :func:`selection_network` once per fitted forest object (per process).

    ``leaf_values()`` gives the ``(trees, max_nodes)`` values or ``None`` when the forest keeps more
    than one value per leaf; the layout is ``None`` then, and when a leaf has no value.
    """
    with _CACHE_LOCK:
        hit = _CACHE.get(forest)
        if hit is None:
            values = leaf_values()
            compiled = None
            if values is not None:
                compiled = compile_forest(list(forest.estimators_), values, int(forest.n_features_in_))
            leaf_key = np.uint64(order_key(np.asarray([np.inf]))[0]) << np.uint64(32)
            if compiled is not None and bool(np.isnan(compiled.value[compiled.node >= leaf_key]).any()):
                compiled = None
            hit = (compiled, selection_network(len(forest.estimators_), wanted))
            _CACHE[forest] = hit
        return hit


def kernel() -> Any:
    """The compiled kernel (numba; compiled, or loaded from numba's on-disk cache, on first use per process)."""
    from mrv.modeling._forest_kernel import predict_kernel

    return predict_kernel


def order_positions(n_trees: int, quantiles: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """0-based order statistics (k, k + 1) and interpolation weights of ``quantiles`` among ``n_trees`` values."""
    pos = np.asarray(quantiles, dtype="float64") * (n_trees - 1)
    lo = np.floor(pos).astype("int32")
    hi = np.minimum(lo + 1, n_trees - 1).astype("int32")
    return lo, hi, (pos - lo).astype("float64")


def predict_forest(
    compiled: CompiledForest,
    network: np.ndarray,
    X: np.ndarray,
    quantiles: tuple[float, float, float],
    *,
    margin: float,
    z: float,
    bands: tuple[np.ndarray, np.ndarray] | None = None,
    row_px: int | None = None,
) -> np.ndarray:
    """``(5, n)`` float32 mean, q_lo - margin, q_50, q_hi + margin, sd = width / (2 z); NaN where X has NaN.

    With ``bands`` (float64 band edges ``(k + 1,)``, outer ones infinite, and band margins ``(k,)``, t C/ha)
    the interval is :func:`mrv.modeling.conformal.banded_interval` of the raw float32 quantiles with
    ``margin`` as the pooled one, computed per pixel by a compiled pass over the walk's output.
    ``X`` is ``(n, covariates)``; an F-ordered float32 ``X`` (the transpose of a ``(covariate, pixel)``
    block) is read without a copy. Releases the GIL, so Dask threads predict blocks in parallel.
    ``row_px``: ``X`` holds an image's pixels row by row, ``row_px`` per row; lane groups are then 2-D patches
    (closer neighbours, longer shared paths: the same numbers, sooner).
    """
    XT = np.ascontiguousarray(np.asarray(X).T, dtype="float32")
    if XT.shape[0] != compiled.n_features:
        raise ValueError(f"X has {XT.shape[0]} covariates, the forest {compiled.n_features}")
    if row_px is not None and (row_px < 1 or XT.shape[1] % row_px):
        raise ValueError(f"{XT.shape[1]} pixels are not rows of {row_px}")
    lo, hi, frac = order_positions(compiled.root.size, quantiles)
    out = np.empty((5, XT.shape[1]), dtype="float32")
    kernel()(
        XT, row_px or 0, compiled.node, compiled.height, compiled.value, compiled.root,
        network, lo, hi, frac, 0.0 if bands is not None else float(margin), 1.0 / (2.0 * z), out,
    )  # fmt: skip
    if bands is not None:
        edges, band_margin = (np.ascontiguousarray(b, dtype="float64") for b in bands)
        if edges.shape != (band_margin.size + 1,):
            raise ValueError(f"{edges.size} band edges for {band_margin.size} bands")
        from mrv.modeling._forest_kernel import band_kernel

        band_kernel(out, edges, band_margin, float(margin), 2.0 * z)
    return out
