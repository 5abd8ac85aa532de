"""Variograms: Matheron's empirical semivariogram and an exponential model fitted by Cressie's WLS.

Shared by the spatial-CV block size (:mod:`mrv.modeling.variogram`) and the error model of the
Monte Carlo accounting (:mod:`mrv.accounting.variogram`).

- Matheron (method-of-moments) estimator ``g(h_k) = sum (z_i - z_j)^2 / (2 N_k)`` over the ``N_k``
  pairs in distance bin ``k`` (Webster & Oliver 2007, Geostatistics for Environmental Scientists,
  2nd ed., eq. 4.1); coincident points are left out.
- Exponential model ``g(h) = c0 + c1 (1 - exp(-h / a))`` (practical range ``3 a``) fitted by the
  weighted least squares of Cressie (1985, Math. Geol. 17:563-586, eq. 3.3): minimise
  ``sum_k N_k (g_hat_k / g(h_k) - 1)^2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy.spatial.distance import pdist

from mrv.errors import MRVError

__all__ = [
    "MIN_PAIRS_PER_BIN",
    "EmpiricalVariogram",
    "ExponentialVariogram",
    "VariogramError",
    "empirical_variogram",
    "fit_exponential",
]


#: Bins with fewer pairs are dropped by default (Journel & Huijbregts 1978, Mining Geostatistics, p. 194).
MIN_PAIRS_PER_BIN = 30


class VariogramError(MRVError):
    """Too few points or pairs to estimate a variogram; callers re-raise with what to configure instead."""


@dataclass(frozen=True)
class EmpiricalVariogram:
    """Binned semivariogram: mean pair distance, semivariance and pair count per bin."""

    lag_m: np.ndarray
    gamma: np.ndarray
    n_pairs: np.ndarray


@dataclass(frozen=True)
class ExponentialVariogram:
    """``g(h) = nugget + partial_sill * (1 - exp(-h / range_m))`` for ``h > 0``."""

    nugget: float
    partial_sill: float
    range_m: float
    """Distance parameter ``a`` of ``exp(-h / a)``; the practical range is ``3 a``."""
    n_points: int = 0
    n_pairs: int = 0
    max_lag_m: float = float("nan")
    range_at_bound: bool = False
    """True when the fitted range sits on a search bound: the data do not identify it."""
    empirical: EmpiricalVariogram | None = None

    @property
    def sill(self) -> float:
        return self.nugget + self.partial_sill

    @property
    def nugget_share(self) -> float:
        """``c0 / (c0 + c1)``: share of the error variance that is spatially uncorrelated."""
        return self.nugget / self.sill if self.sill > 0 else 1.0

    def gamma(self, h: np.ndarray) -> np.ndarray:
        h = np.asarray(h, dtype=float)
        return np.where(h > 0, self.nugget + self.partial_sill * (1 - np.exp(-h / self.range_m)), 0.0)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "model": "exponential",
            "fit": "weighted least squares, Cressie (1985) weights N_k / g(h_k)^2",
            "nugget": self.nugget,
            "partial_sill": self.partial_sill,
            "sill": self.sill,
            "nugget_share": self.nugget_share,
            "range_m": self.range_m,
            "practical_range_m": 3 * self.range_m,
            "n_points": self.n_points,
            "n_pairs": self.n_pairs,
            "max_lag_m": self.max_lag_m,
            "range_at_bound": self.range_at_bound,
        }
        if self.empirical is not None:
            out["empirical"] = {
                "lag_m": [float(v) for v in self.empirical.lag_m],
                "gamma": [float(v) for v in self.empirical.gamma],
                "n_pairs": [int(v) for v in self.empirical.n_pairs],
            }
        return out


def _pairs(x: np.ndarray, y: np.ndarray, groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Condensed pair distances and the two point indices of each pair (within groups if given)."""
    n = x.size
    i, j = np.triu_indices(n, k=1)
    h = pdist(np.column_stack([x, y]))
    if groups is not None:
        same = groups[i] == groups[j]
        i, j, h = i[same], j[same], h[same]
    return h, i, j


def empirical_variogram(
    x: np.ndarray,
    y: np.ndarray,
    values: np.ndarray,
    *,
    n_bins: int = 15,
    max_lag_m: float | None = None,
    min_pairs: int = MIN_PAIRS_PER_BIN,
    groups: np.ndarray | None = None,
) -> EmpiricalVariogram:
    """Matheron's estimator in ``n_bins`` equal-width distance bins from 0 to ``max_lag_m``.

    ``max_lag_m`` defaults to half the largest pair distance. With ``groups`` (e.g. the round of
    each point) only pairs inside the same group are used.
    """
    x, y, values = (np.asarray(a, dtype=float) for a in (x, y, values))
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(values)
    g = None if groups is None else np.asarray(groups)[ok]
    h, i, j = _pairs(x[ok], y[ok], g)
    v = values[ok]
    if h.size == 0:
        raise VariogramError("No pair of points to compute a variogram from; at least two points are needed.")
    top = float(max_lag_m) if max_lag_m is not None else float(h.max()) / 2
    edges = np.linspace(0.0, top, n_bins + 1)
    keep = (h > 0) & (h <= top)  # coincident points say nothing about spatial correlation
    h, d2 = h[keep], (v[i[keep]] - v[j[keep]]) ** 2
    k = np.clip(np.searchsorted(edges, h, side="right") - 1, 0, n_bins - 1)
    n = np.bincount(k, minlength=n_bins)
    gamma = np.bincount(k, weights=d2, minlength=n_bins) / np.maximum(2 * n, 1)
    lag = np.bincount(k, weights=h, minlength=n_bins) / np.maximum(n, 1)
    use = n >= min_pairs
    return EmpiricalVariogram(lag_m=lag[use], gamma=gamma[use], n_pairs=n[use])


def fit_exponential(emp: EmpiricalVariogram, *, max_range_factor: float = 3.0) -> ExponentialVariogram:
    """Fit ``c0 + c1 (1 - exp(-h/a))`` by Cressie's (1985) WLS: minimise ``sum N_k (g_hat/g - 1)^2``.

    The distance parameter ``a`` is searched between a tenth of the first lag and
    ``max_range_factor`` times the last lag; several starting values are tried and the lowest
    criterion is kept. Raises :class:`VariogramError` with fewer than 3 bins.
    """
    if emp.lag_m.size < 3:
        raise VariogramError(
            f"only {emp.lag_m.size} distance bins have enough point pairs; a variogram needs 3 or more"
        )
    h, g, w = emp.lag_m, emp.gamma, np.sqrt(emp.n_pairs.astype(float))
    a_lo, a_hi = float(h[0]) / 10, max_range_factor * float(h[-1])
    scale = float(np.max(g)) or 1.0

    def resid(p: np.ndarray) -> np.ndarray:
        c0, c1, a = p
        model = c0 + c1 * (1 - np.exp(-h / a))
        return np.asarray(w * (g / scale / np.maximum(model, 1e-12) - 1))

    best: optimize.OptimizeResult | None = None
    for frac in (0.05, 0.15, 0.4, 1.0):
        a0 = float(np.clip(frac * h[-1], a_lo * 1.01, a_hi * 0.99))
        c0 = 0.5 * float(g[0]) / scale
        start = np.array([c0, max(1.0 - c0, 1e-3), a0])
        res = optimize.least_squares(
            resid, start, bounds=([0.0, 1e-9, a_lo], [np.inf, np.inf, a_hi]), x_scale=[1.0, 1.0, a0], method="trf"
        )
        if best is None or res.cost < best.cost:
            best = res
    assert best is not None
    c0, c1, a = (float(v) for v in best.x)
    at_bound = a <= a_lo * 1.01 or a >= a_hi * 0.99
    return ExponentialVariogram(
        nugget=c0 * scale,
        partial_sill=c1 * scale,
        range_m=a,
        n_pairs=int(emp.n_pairs.sum()),
        max_lag_m=float(h[-1]),
        range_at_bound=bool(at_bound),
        empirical=emp,
    )
