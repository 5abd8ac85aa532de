"""numba kernels of :mod:`mrv.modeling.forest_walk` (imported on first use: importing numba takes ~0.3 s).

The walk keeps 12 pixels' node ids in scalar locals (registers) rather than an array, so the
12 independent walks interleave in the CPU's out-of-order window; written out lane by lane because
numba has no fixed-size register arrays. 12 lanes, not 16: x86-64 has 16 general registers, and with
16 lanes the node and covariate pointers were spilled to the stack (1.05 vs 1.22 us per pixel for 100
trees, same outputs; 8, 10, 11, 13, 14 lanes were slower too, benchmarks/README.md).

Neighbouring pixels share most of their path through a tree. Before its lanes walk, each group of 12
descends as one while its pixels' smallest and largest key of the node's covariate fall on the same side of
the threshold (:func:`_shared_starts4`; the bounding-box test of a k-d tree search), so the lanes start
where the pixels part. On the benchmark scene a 4 x 3 patch of pixels shares 7.8 of its ~11.4 levels per
tree; with the patches the walk took 0.67x the time of the walk from the roots over runs of 12 pixels in a
row (0.86x with the shared starts over those runs; benchmarks/README.md). ``cache=True`` stores the machine
code in ``__pycache__``, so the first process after an install compiles (~7 s) and later ones load it (~0.1-0.3 s).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["band_kernel", "predict_kernel"]


def _ensure_cache_dir() -> None:
    """numba caches beside this file; in a read-only install (site-packages owned by root, a container
    run as another user) ``cache=True`` would fail with "no locator available". Point numba at a
    writable per-user cache then (``NUMBA_CACHE_DIR``, read when numba is imported)."""
    if os.environ.get("NUMBA_CACHE_DIR") or os.access(Path(__file__).parent, os.W_OK):
        return
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    for candidate in (Path(base) / "mrv" / "numba", Path(tempfile.gettempdir()) / f"mrv-numba-{os.getuid()}"):
        try:
            candidate.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(candidate, os.W_OK):
            os.environ["NUMBA_CACHE_DIR"] = str(candidate)
            return


_ensure_cache_dir()

from numba import njit  # noqa: E402 - after the cache directory is chosen

from mrv.modeling.forest_walk import FEATURE_BITS, FEATURE_SLOTS  # noqa: E402

#: Lane groups per block: each walks 12 lanes from the deepest node its 12 pixels all pass through.
GROUPS = 4
#: Pixels per block: four groups of 12 walked lanes; the selection network runs over all 48 at once
#: (one vectorised min/max over 48 float32 per compare-exchange).
BLOCK = 12 * GROUPS
#: A lane group of an image is a patch of 4 rows x 3 columns: it shares more of its path through a tree than a run
#: of 12 pixels in one row (benchmark scene: 7.8 against 7.0 levels in common, 6.5 against 7.9 levels left).
PATCH_ROWS = 4
PATCH_COLS = 3
#: Levels walked before the lanes' subtree heights are looked up (twice); 6 was fastest of 4-8 on the benchmark scene.
FIRST_LEVELS = 6
_FEATURE_BITS = np.uint32(FEATURE_BITS)
_FEATURE_MASK = np.uint32(FEATURE_SLOTS - 1)
_LOW = np.uint64(0xFFFFFFFF)
_HIGH = np.uint64(32)


@njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _step(k, node, xk, lane):  # type: ignore[no-untyped-def]  # pragma: no cover
    """One level down: left child + 1 when the pixel's covariate key exceeds the node's threshold key.

    ``lane`` is a literal after inlining, so ``lane * FEATURE_SLOTS`` is an address displacement and a
    step is one node load, one covariate load (``xk[lane][feature]``), a compare and an add-with-carry.
    """
    c = node[k]
    low = np.uint32(c & _LOW)
    return (low >> _FEATURE_BITS) + np.uint32(xk[lane * FEATURE_SLOTS + (low & _FEATURE_MASK)] > np.uint32(c >> _HIGH))


@njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _steps12(node, xk, base, count, k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, k10, k11):  # type: ignore[no-untyped-def]  # pragma: no cover
    """``count`` levels down for 12 lanes (node ids in and out as scalars, kept in registers once inlined)."""
    for _ in range(count):
        k0 = _step(k0, node, xk, base + 0)
        k1 = _step(k1, node, xk, base + 1)
        k2 = _step(k2, node, xk, base + 2)
        k3 = _step(k3, node, xk, base + 3)
        k4 = _step(k4, node, xk, base + 4)
        k5 = _step(k5, node, xk, base + 5)
        k6 = _step(k6, node, xk, base + 6)
        k7 = _step(k7, node, xk, base + 7)
        k8 = _step(k8, node, xk, base + 8)
        k9 = _step(k9, node, xk, base + 9)
        k10 = _step(k10, node, xk, base + 10)
        k11 = _step(k11, node, xk, base + 11)
    return k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, k10, k11


@njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _walk12(node, height, value, r, d, xk, base, vals, t):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Leaf values of tree ``t`` for lanes ``base .. base + 11`` into ``vals[t]``, walked from node ``r`` (the root, or
    the group's shared start) whose subtree height is ``d``.

    Neighbouring pixels mostly fall into the same subtrees, so after a few levels the lanes need
    only as many more steps as the highest subtree they are in (``height``), not the tree's depth.
    """
    k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, k10, k11 = r, r, r, r, r, r, r, r, r, r, r, r
    first = min(FIRST_LEVELS, d)
    k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, k10, k11 = _steps12(node, xk, base, first, k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, k10, k11)
    more = min(FIRST_LEVELS, max(height[k0], height[k1], height[k2], height[k3], height[k4], height[k5], height[k6], height[k7], height[k8], height[k9], height[k10], height[k11]))
    k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, k10, k11 = _steps12(node, xk, base, more, k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, k10, k11)
    rest = max(height[k0], height[k1], height[k2], height[k3], height[k4], height[k5], height[k6], height[k7], height[k8], height[k9], height[k10], height[k11])
    k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, k10, k11 = _steps12(node, xk, base, rest, k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, k10, k11)
    vals[t, base + 0] = value[k0]
    vals[t, base + 1] = value[k1]
    vals[t, base + 2] = value[k2]
    vals[t, base + 3] = value[k3]
    vals[t, base + 4] = value[k4]
    vals[t, base + 5] = value[k5]
    vals[t, base + 6] = value[k6]
    vals[t, base + 7] = value[k7]
    vals[t, base + 8] = value[k8]
    vals[t, base + 9] = value[k9]
    vals[t, base + 10] = value[k10]
    vals[t, base + 11] = value[k11]


@njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _box_step(k, node, kmin, kmax, g):  # type: ignore[no-untyped-def]  # pragma: no cover
    """One level down for a whole lane group, if its pixels all take the same branch.

    ``kmin``/``kmax`` hold the group's smallest and largest key of every covariate: all its pixels go
    left when the largest key is not above the threshold key, right when the smallest is above it.
    Otherwise (and at a leaf, whose child is itself) the group stays; returns (node, moved). Branch-free.
    """
    c = node[k]
    low = np.uint32(c & _LOW)
    f = g * FEATURE_SLOTS + (low & _FEATURE_MASK)
    thr = np.uint32(c >> _HIGH)
    right = kmin[f] > thr
    nxt = (low >> _FEATURE_BITS) + np.uint32(right)
    moved = ((kmax[f] <= thr) | right) & (nxt != k)
    return (nxt if moved else k), moved


@njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _shared_starts4(node, r, kmin, kmax):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Deepest node below root ``r`` that every pixel of each of the 4 lane groups passes through.

    The four groups descend together (independent chains, interleaved) until none can go further; their
    lanes then walk from there. Exact: a group moves only where all its pixels' comparisons agree.
    """
    k0 = k1 = k2 = k3 = r
    while True:
        k0, m0 = _box_step(k0, node, kmin, kmax, 0)
        k1, m1 = _box_step(k1, node, kmin, kmax, 1)
        k2, m2 = _box_step(k2, node, kmin, kmax, 2)
        k3, m3 = _box_step(k3, node, kmin, kmax, 3)
        if not (m0 | m1 | m2 | m3):
            return k0, k1, k2, k3


@njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _order_statistics(vals, acc, net, k_lo, k_hi, frac, margin, inv_2z, good, pix, out):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Mean and interpolated order statistics of each lane's tree values (``vals``, trees x lanes) into ``out``."""
    n_trees = vals.shape[0]
    for b in range(BLOCK):
        acc[b] = 0.0
    for t in range(n_trees):
        for b in range(BLOCK):
            acc[b] += vals[t, b]
    for c in range(net.shape[0]):
        i = net[c, 0]
        j = net[c, 1]
        for b in range(BLOCK):
            u = vals[i, b]
            v = vals[j, b]
            vals[i, b] = min(u, v)
            vals[j, b] = max(u, v)
    for b in range(BLOCK):
        p = pix[b]
        if p < 0:
            continue
        if not good[b]:
            for o in range(5):
                out[o, p] = np.nan
            continue
        a = vals[k_lo[0], b]
        lo90 = a + frac[0] * (vals[k_hi[0], b] - a) - margin
        a = vals[k_lo[1], b]
        med = a + frac[1] * (vals[k_hi[1], b] - a)
        a = vals[k_lo[2], b]
        hi90 = a + frac[2] * (vals[k_hi[2], b] - a) + margin
        out[0, p] = acc[b] / n_trees
        out[1, p] = lo90
        out[2, p] = med
        out[3, p] = hi90
        out[4, p] = (hi90 - lo90) * inv_2z


@njit(cache=True, nogil=True, boundscheck=False)
def predict_kernel(  # type: ignore[no-untyped-def]  # pragma: no cover
    XT, width, node, height, value, root, net, k_lo, k_hi, frac, margin, inv_2z, out
):
    """Fill ``out`` (5, n) from ``XT`` (covariates, n); see :func:`mrv.modeling.forest_walk.predict_forest`.

    ``width`` > 0: the n pixels are an image of rows of ``width`` pixels (row-major), walked in tiles of
    :data:`PATCH_ROWS` rows by ``4 * PATCH_COLS`` columns, each lane group a ``PATCH_ROWS x PATCH_COLS`` patch;
    ``width`` 0: pixels in runs of 48 (points, or an image whose width is not known).
    """
    n_feat, n = XT.shape
    n_trees = root.shape[0]
    tile_rows, tile_cols = (PATCH_ROWS, GROUPS * PATCH_COLS) if width > 0 else (1, BLOCK)
    row_px = width if width > 0 else max(n, 1)
    n_rows = n // row_px
    lane_row = np.empty(BLOCK, dtype=np.int64)
    lane_col = np.empty(BLOCK, dtype=np.int64)
    for b in range(BLOCK):
        if width > 0:  # group b // 12 is the (b // 12)-th patch of the tile, lanes row by row within it
            lane_row[b] = (b % 12) // PATCH_COLS
            lane_col[b] = (b // 12) * PATCH_COLS + (b % 12) % PATCH_COLS
        else:
            lane_row[b] = 0
            lane_col[b] = b
    pix = np.empty(BLOCK, dtype=np.int64)  # pixel of each lane, -1 outside the image
    xb = np.zeros(n_feat * BLOCK, dtype=np.float32)
    xu = xb.view(np.uint32)
    xk = np.zeros(BLOCK * FEATURE_SLOTS, dtype=np.uint32)  # xk[lane * FEATURE_SLOTS + covariate]
    kmin = np.zeros(GROUPS * FEATURE_SLOTS, dtype=np.uint32)  # kmin[group * FEATURE_SLOTS + covariate]
    kmax = np.zeros(GROUPS * FEATURE_SLOTS, dtype=np.uint32)
    vals = np.empty((n_trees, BLOCK), dtype=np.float32)
    acc = np.empty(BLOCK, dtype=np.float64)
    good = np.empty(BLOCK, dtype=np.bool_)
    source = np.empty(BLOCK, dtype=np.int64)
    for r0 in range(0, n_rows, tile_rows):
        for c0 in range(0, row_px, tile_cols):
            for b in range(BLOCK):
                r = r0 + lane_row[b]
                c = c0 + lane_col[b]
                pix[b] = r * row_px + c if r < n_rows and c < row_px else -1
                good[b] = pix[b] >= 0
            for f in range(n_feat):
                for b in range(BLOCK):
                    x = XT[f, pix[b]] if pix[b] >= 0 else np.float32(0.0)
                    if not np.isfinite(x):
                        good[b] = False
                    xb[f * BLOCK + b] = x + np.float32(0.0)  # -0.0 -> +0.0
            # A lane without a valid pixel (a NaN covariate, outside the image) walks a copy of a valid lane of its
            # group (else of the tile): its output is NaN, and its group's key ranges stay those of its pixels.
            any_good = -1
            for b in range(BLOCK):
                if good[b]:
                    any_good = b
                    break
            if any_good < 0:  # no pixel with all covariates: nothing to walk
                for b in range(BLOCK):
                    if pix[b] >= 0:
                        for o in range(5):
                            out[o, pix[b]] = np.nan
                continue
            for g in range(GROUPS):
                in_group = any_good
                for b in range(g * 12, g * 12 + 12):
                    if good[b]:
                        in_group = b
                        break
                for b in range(g * 12, g * 12 + 12):
                    source[b] = b if good[b] else in_group
            for f in range(n_feat):  # order keys (mrv.modeling.forest_walk.order_key), lane-major
                for b in range(BLOCK):
                    u = xu[f * BLOCK + source[b]]
                    xk[b * FEATURE_SLOTS + f] = ~u if u >> np.uint32(31) else u | np.uint32(0x80000000)
            for g in range(GROUPS):
                for f in range(n_feat):
                    lo = np.uint32(0xFFFFFFFF)
                    hi = np.uint32(0)
                    for b in range(g * 12, g * 12 + 12):
                        v = xk[b * FEATURE_SLOTS + f]
                        lo = min(lo, v)
                        hi = max(hi, v)
                    kmin[g * FEATURE_SLOTS + f] = lo
                    kmax[g * FEATURE_SLOTS + f] = hi
            for t in range(n_trees):
                s0, s1, s2, s3 = _shared_starts4(node, root[t], kmin, kmax)
                _walk12(node, height, value, s0, height[s0], xk, 0, vals, t)
                _walk12(node, height, value, s1, height[s1], xk, 12, vals, t)
                _walk12(node, height, value, s2, height[s2], xk, 24, vals, t)
                _walk12(node, height, value, s3, height[s3], xk, 36, vals, t)
            _order_statistics(vals, acc, net, k_lo, k_hi, frac, margin, inv_2z, good, pix, out)


@njit(cache=True, nogil=True, boundscheck=False)
def band_kernel(out, edges, band_margin, pooled, two_z):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Rewrite p05, p95 and sd of a ``(5, n)`` :func:`predict_kernel` output made with margin 0 (in place).

    Per pixel, :func:`mrv.modeling.conformal.banded_interval` with the same float64 operations in the
    same order: the hull of the label-conditional set (band k: [max(lower - Q_k, e_k), min(upper + Q_k,
    e_k+1)] where not empty) joined with the pooled interval [lower - Q, upper + Q]; NaN stays NaN. A
    separate pass, not a branch inside :func:`predict_kernel`: there its extra live values made the
    12-lane walk spill registers (1.51 against 1.17 CPU s per Mpx, the banding itself costs ~0.03).
    """
    for p in range(out.shape[1]):
        lower = np.float64(out[1, p])
        upper = np.float64(out[3, p])
        if not (np.isfinite(lower) and np.isfinite(upper)):
            continue
        lo = np.inf
        hi = -np.inf
        for k in range(band_margin.shape[0]):
            lk = max(lower - band_margin[k], edges[k])
            uk = min(upper + band_margin[k], edges[k + 1])
            if lk <= uk:
                lo = min(lo, lk)
                hi = max(hi, uk)
        if not np.isfinite(lo):
            lo = lower - band_margin.max()
            hi = upper + band_margin.max()
        lo = min(lower - pooled, lo)
        hi = max(upper + pooled, hi)
        out[1, p] = lo
        out[3, p] = hi
        out[4, p] = (hi - lo) / two_z
