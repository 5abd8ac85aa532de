"""Spatial structure of the model's prediction errors, estimated from cross-validation residuals.

The Monte Carlo of :mod:`mrv.accounting.aggregate` needs the correlation model of the map errors
(Wadoux & Heuvelink 2023, Geoderma 437:116588, Sect. 2.3; Verra VT0014 Appendix 6). It is estimated
here from the out-of-fold (spatial cross-validation) predictions at the sampling sites:

1. Standardized errors ``z_i = (observed_i - predicted_i) / sd_i`` with ``sd_i`` the Gaussian-equivalent
   SD of the calibrated interval, ``(upper_i - lower_i) / (2 z_{(1+c)/2})`` (1.645 for c = 0.9), the same
   definition as the ``sd`` map (:meth:`mrv.modeling.model.SOCModel.predict`). Dividing by ``sd_i``
   removes the heteroscedasticity the ``sd`` map already carries, so what is left is the correlation.
2. The Matheron (method-of-moments) semivariogram ``g(h_k) = sum (z_i - z_j)^2 / (2 N_k)`` over the
   ``N_k`` pairs in distance bin ``k`` (Webster & Oliver 2007, Geostatistics for Environmental
   Scientists, 2nd ed., eq. 4.1), pairs only within a monitoring round when rounds are given, up to
   half the largest pair distance, bins with fewer than 30 pairs dropped (Journel & Huijbregts 1978).
3. An exponential model ``g(h) = c0 + c1 (1 - exp(-h / a))`` fitted by the weighted least squares of
   Cressie (1985, Math. Geol. 17:563-586, eq. 3.3): minimise ``sum_k N_k (g_hat_k / g(h_k) - 1)^2``.

``a`` is the *distance parameter* of the exponential correlation ``exp(-h / a)`` used by
:func:`mrv.accounting.simulate.exponential_grf`; the practical range (95 % of the sill) is ``3 a``.
The nugget share ``c0 / (c0 + c1)`` is the part of the error variance without spatial correlation
(micro-scale variation and the sample's own measurement error).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
from scipy import stats

from mrv.errors import AccountingError
from mrv.geostats import (
    MIN_PAIRS_PER_BIN,
    EmpiricalVariogram,
    ExponentialVariogram,
    VariogramError,
    empirical_variogram,
    fit_exponential,
)

__all__ = [
    "MIN_PAIRS_PER_BIN",
    "MIN_POINTS",
    "EmpiricalVariogram",
    "ExponentialVariogram",
    "cross_round_correlation",
    "empirical_variogram",
    "fit_cv_error_variogram",
    "fit_exponential",
    "standardized_errors",
]

#: Fewer cross-validation points than this cannot support a variogram fit.
MIN_POINTS = 30


def standardized_errors(oof: pd.DataFrame, *, confidence: float) -> np.ndarray:
    """``(observed - predicted) / sd`` with ``sd = (upper - lower) / (2 z_{(1+confidence)/2})``."""
    missing = [c for c in ("observed", "predicted", "lower", "upper") if c not in oof.columns]
    if missing:
        raise AccountingError(
            f"The cross-validation predictions lack the column(s) {missing}; re-run the training step "
            "(it writes model/cv_predictions.csv with observed, predicted, lower and upper)."
        )
    z_q = float(stats.norm.ppf(0.5 + confidence / 2))
    sd = (oof["upper"].to_numpy(float) - oof["lower"].to_numpy(float)) / (2 * z_q)
    err = oof["observed"].to_numpy(float) - oof["predicted"].to_numpy(float)
    return np.divide(err, sd, out=np.full_like(err, np.nan), where=sd > 0)


def fit_cv_error_variogram(
    oof: pd.DataFrame, *, confidence: float, groups: np.ndarray | None = None, n_bins: int = 15
) -> ExponentialVariogram:
    """Exponential variogram of the standardized out-of-fold errors (see the module docstring)."""
    z = standardized_errors(oof, confidence=confidence)
    ok = np.isfinite(z)
    if int(ok.sum()) < MIN_POINTS:
        raise AccountingError(
            f"Only {int(ok.sum())} cross-validation points have a usable error; at least {MIN_POINTS} are needed "
            "to fit the error variogram. Add samples, or set accounting.error_range_m to a number (metres)."
        )
    g = None if groups is None else np.asarray(groups)[ok]
    x, y = oof["x"].to_numpy(float)[ok], oof["y"].to_numpy(float)[ok]
    try:
        fit = fit_exponential(empirical_variogram(x, y, z[ok], n_bins=n_bins, groups=g))
    except VariogramError as exc:
        raise AccountingError(
            f"The error variogram cannot be fitted: {exc}. Add samples, or set accounting.error_range_m to a "
            "number (metres)."
        ) from exc
    return replace(fit, n_points=int(ok.sum()))


def cross_round_correlation(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, rounds: np.ndarray, first: object, last: object,
    model: ExponentialVariogram,
) -> tuple[float, int]:  # fmt: skip
    """Correlation of the spatially structured errors of two rounds, and the number of pairs used.

    Intrinsic coregionalization model (Wackernagel 2003, Multivariate Geostatistics, 3rd ed., Ch. 23):
    both rounds' errors share the fitted correlation function, and the cross-covariance between a
    point of ``first`` and one of ``last`` at distance ``h`` is ``rho c1 exp(-h/a)`` (the nugget parts
    are independent). ``rho`` is the least-squares solution over every cross-round pair closer than
    ``a``: ``rho = sum z_i z_j k_ij / sum k_ij^2`` with ``k_ij = c1 exp(-h_ij/a)`` and ``z`` centred
    per round. Returns ``(nan, 0)`` when no pair is close enough. The sampling error of ``rho`` is
    not propagated.
    """
    x, y, z = (np.asarray(a, dtype=float) for a in (x, y, z))
    rounds = np.asarray(rounds)
    ia = np.flatnonzero((rounds == first) & np.isfinite(z))
    ib = np.flatnonzero((rounds == last) & np.isfinite(z))
    if ia.size == 0 or ib.size == 0 or model.partial_sill <= 0:
        return float("nan"), 0
    za = z[ia] - z[ia].mean()
    zb = z[ib] - z[ib].mean()
    h = np.hypot(x[ia][:, None] - x[ib][None, :], y[ia][:, None] - y[ib][None, :])
    near = h <= model.range_m
    if not near.any():
        return float("nan"), 0
    k = model.partial_sill * np.exp(-h[near] / model.range_m)
    prod = (za[:, None] * zb[None, :])[near]
    rho = float(np.sum(prod * k) / np.sum(k * k))
    return float(np.clip(rho, -1.0, 1.0)), int(near.sum())
