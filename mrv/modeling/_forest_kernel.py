"""numba kernels of :mod:`mrv.modeling.forest_walk` (imported on first use: importing numba takes ~0.3 s).

The walk keeps 12 pixels' node ids in scalar locals (registers) rather than an array, so the
12 independent walks interleave in the CPU's out-of-order window; written out lane by lane because
numba has no fixed-size register arrays. 12 lanes, not 16: x86-64 has 16 general registers, and with
16 lanes the node and covariate pointers were spilled to the stack (1.05 vs 1.22 us per pixel for 100
trees, same outputs; 8, 10, 11, 13, 14 lanes were slower too, benchmarks/README.md). ``cache=True`` stores the machine code in ``__pycache__``,
so the first process after an install compiles (~7 s) and later ones load it (~0.1-0.3 s).
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

#: Pixels per block: four groups of 12 walked lanes; the selection network runs over all 48 at once
#: (one vectorised min/max over 48 float32 per compare-exchange).
BLOCK = 48
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
    """Leaf values of tree ``t`` (root ``r``, depth ``d``) for lanes ``base .. base + 11`` into ``vals[t]``.

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


@njit(cache=True, nogil=True, boundscheck=False)
def predict_kernel(  # type: ignore[no-untyped-def]  # pragma: no cover
    XT, node, height, value, root, depth, net, k_lo, k_hi, frac, margin, inv_2z, out
):
    """Fill ``out`` (5, n) from ``XT`` (covariates, n); see :func:`mrv.modeling.forest_walk.predict_forest`."""
    n_feat, n = XT.shape
    n_trees = root.shape[0]
    xb = np.zeros(n_feat * BLOCK, dtype=np.float32)
    xu = xb.view(np.uint32)
    xk = np.zeros(BLOCK * FEATURE_SLOTS, dtype=np.uint32)  # xk[lane * FEATURE_SLOTS + covariate]
    vals = np.empty((n_trees, BLOCK), dtype=np.float32)
    acc = np.empty(BLOCK, dtype=np.float64)
    good = np.empty(BLOCK, dtype=np.bool_)
    for p0 in range(0, n, BLOCK):
        m = min(BLOCK, n - p0)
        for b in range(BLOCK):
            good[b] = b < m
        for f in range(n_feat):
            for b in range(BLOCK):
                x = XT[f, p0 + b] if b < m else np.float32(0.0)
                if not np.isfinite(x):
                    good[b] = False
                    x = np.float32(0.0)  # walked like any pixel (never off the tree), output NaN
                xb[f * BLOCK + b] = x + np.float32(0.0)  # -0.0 -> +0.0
        for f in range(n_feat):  # order keys (mrv.modeling.forest_walk.order_key), lane-major
            for b in range(BLOCK):
                u = xu[f * BLOCK + b]
                xk[b * FEATURE_SLOTS + f] = ~u if u >> np.uint32(31) else u | np.uint32(0x80000000)
        for t in range(n_trees):
            _walk12(node, height, value, root[t], depth[t], xk, 0, vals, t)
            _walk12(node, height, value, root[t], depth[t], xk, 12, vals, t)
            _walk12(node, height, value, root[t], depth[t], xk, 24, vals, t)
            _walk12(node, height, value, root[t], depth[t], xk, 36, vals, t)
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
        for b in range(m):
            p = p0 + b
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
