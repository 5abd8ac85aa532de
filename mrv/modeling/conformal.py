"""Label-conditional (Mondrian) CQR: intervals that cover at the nominal level within each band of the stock range.

A single CQR margin (:func:`mrv.modeling.model.conformal_margin`) guarantees *marginal* coverage; where
estimates shrink toward the mean, the highest and lowest observed stocks are covered less often (66 % in the
top tenth of fields in issue 13). The label-conditional conformal predictor takes the Mondrian taxonomy on the
label (Vovk, Gammerman & Shafer 2005, Sect. 4.5; Vovk 2012, "Conditional validity of inductive conformal
predictors", ACML, Sect. 5): calibration scores E_i = max(q_lo(x_i) - y_i, y_i - q_hi(x_i)) are split into
``n_bands`` bands of the observed stock (equal counts), each band k gets its own margin Q_k (the
ceil((n_k + 1)(1 - alpha))-th smallest of its scores), and the prediction set is

    C(x) = union_k { y in band k : q_lo(x) - Q_k <= y <= q_hi(x) + Q_k },

so P(Y in C(X) | Y in band k) >= 1 - alpha for every band under exchangeability. The union is reported as its
convex hull [min_k l_k, max_k u_k] (never less coverage). Units: those of ``y`` (t C/ha).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mrv.errors import ModelError
from mrv.modeling.model import conformal_margin

#: Bands of the observed stock; 3 kept >= 80 % coverage in every decile on generated regions
#: (tests/test_calibration_deciles.py) at ~12 % more width than one margin.
N_BANDS = 3


@dataclass(frozen=True)
class LabelConditionalMargins:
    """Band edges (t C/ha; the outer ones infinite) and the CQR margin of each band."""

    edges_t_ha: tuple[float, ...]
    margins_t_ha: tuple[float, ...]

    def to_dict(self) -> dict[str, object]:
        inner = [float(e) for e in self.edges_t_ha[1:-1]]
        return {"inner_edges_t_ha": inner, "margins_t_ha": list(self.margins_t_ha), "n_bands": len(self.margins_t_ha)}


def fit_label_conditional(
    y: np.ndarray, lower: np.ndarray, upper: np.ndarray, *, confidence: float, n_bands: int = N_BANDS
) -> LabelConditionalMargins:
    """Margins per band of observed ``y`` from raw calibration quantiles ``lower``/``upper``."""
    y, lower, upper = (np.asarray(v, dtype=float) for v in (y, lower, upper))
    if y.size < 2 * n_bands:
        raise ModelError(f"Label-conditional calibration needs at least {2 * n_bands} points, got {y.size}.")
    edges = np.quantile(y, np.linspace(0, 1, n_bands + 1))
    edges[0], edges[-1] = -np.inf, np.inf
    band = np.clip(np.searchsorted(edges, y, side="right") - 1, 0, n_bands - 1)
    margins = tuple(
        conformal_margin(y[band == k], lower[band == k], upper[band == k], confidence=confidence) for k in range(n_bands)
    )
    return LabelConditionalMargins(tuple(float(e) for e in edges), margins)


def label_conditional_interval(
    lower: np.ndarray, upper: np.ndarray, margins: LabelConditionalMargins
) -> tuple[np.ndarray, np.ndarray]:
    """Convex hull of the label-conditional prediction set for raw quantiles ``lower``/``upper`` (any shape)."""
    lower, upper = np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)
    lo_out = np.full(lower.shape, np.inf)
    hi_out = np.full(lower.shape, -np.inf)
    e = margins.edges_t_ha
    for k, q in enumerate(margins.margins_t_ha):
        lk = np.maximum(lower - q, e[k])
        uk = np.minimum(upper + q, e[k + 1])
        ok = lk <= uk
        lo_out = np.where(ok, np.minimum(lo_out, lk), lo_out)
        hi_out = np.where(ok, np.maximum(hi_out, uk), hi_out)
    empty = ~np.isfinite(lo_out)
    if empty.any():  # no band reachable (cannot happen with finite margins >= the band gaps); fall back to the hull
        lo_out = np.where(empty, lower - max(margins.margins_t_ha), lo_out)
        hi_out = np.where(empty, upper + max(margins.margins_t_ha), hi_out)
    return lo_out, hi_out
