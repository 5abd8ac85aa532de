"""Label-conditional (Mondrian) CQR by deciles of the stock: the intervals the maps use.

A single CQR margin (:func:`mrv.modeling.model.conformal_margin`) guarantees *marginal* coverage; where
estimates shrink toward the mean (errors correlate about -0.7 with the truth), the highest and lowest
observed stocks are covered less often: 0.65-0.68 in the top decile of the spatial CV on generated regions
(issue 13.4). Bins of the *predicted* stock (Mondrian by prediction) or scores normalised by the raw
interval width (Lei et al. 2018, JASA 113:1094-1111, Sect. 5.2; Sesia & Candes 2020, Stat 9:e261) do not
change that (0.68-0.70): conditional on the prediction the errors are fine; conditional on the *label*
they are not, and only a label-conditional predictor targets coverage by decile of the observed stock.

The label-conditional conformal predictor takes the Mondrian taxonomy on the label (Vovk, Gammerman &
Shafer 2005, Sect. 4.5; Vovk 2012, "Conditional validity of inductive conformal predictors", ACML, Sect. 5):
calibration scores E_i = max(q_lo(x_i) - y_i, y_i - q_hi(x_i)) are split into ``n_bands`` bands of the
observed stock (equal counts: deciles by default), band k gets its own margin Q_k (the
ceil((n_k + 1) * beta)-th smallest of its scores, :func:`mrv.modeling.model.conformal_margin`), and the
prediction set is

    C(x) = union_k { y in band k : q_lo(x) - Q_k <= y <= q_hi(x) + Q_k },

so P(Y in C(X) | Y in band k) >= beta for every band under exchangeability. The maps report the convex
hull of C(x) joined with the single-margin interval [q_lo - Q, q_hi + Q] (:func:`banded_interval`): the
hull never covers less than C(x), and the join keeps the marginal 1 - alpha guarantee of the pooled CQR
margin Q (Romano, Patterson & Candes 2019, Thm. 1), so the maps' 90 % intervals cover >= 90 % overall
and >= ``beta`` within every decile.

``beta`` is :func:`band_confidence` (0.85 at 0.90 nominal, ``confidence - BAND_CONFIDENCE_SHORTFALL``): the
target is 0.80 per decile, and the spatial CV's held-out blocks are less exchangeable than the theory
assumes (beta = 0.80 left the top decile at 0.77-0.78 on 32 generated regions). A band needs
``MIN_BAND_POINTS`` calibration points; with fewer, the stock range is cut into fewer, wider bands, and
below two bands only the pooled margin is used (``None`` from :func:`mrv.modeling.train.fit_bands`).

Measured (spatial CV, pooled over regions; ``benchmarks/validity.py``, 5 spatial folds of 500 m blocks):
30 default-sized regions (5 x 5 km, 360 lab sites) lowest decile 0.837, 9 of 300 (region, decile) cells
below 0.80 (one margin 0.707, 47 cells), PICP 0.931, width x1.20; 20 small regions (2 x 2 km, 144 lab
sites) lowest decile 0.745 (top), 23 of 200 cells below 0.80 (one margin 0.619, 41 cells), PICP 0.917,
width x1.26. Small regions stay the weak case, and not for lack of calibration points: on average 60 % of a
small region's top-decile sites fall in one spatial fold (37 % on default regions), so when that fold is
held out the other folds hold no label as high, and no per-band level or rank can help (a band of ~11
points already uses its largest score: beta = 0.90 gives the same intervals as 0.85). Tried on the same
cross-validation predictions and not adopted: fewer, wider bands (>= 20 points each) 0.667; band edges
from all labels 0.728; a label-dependent score on quantiles de-shrunk by the slope of the out-of-fold
prediction on the label (inverse calibration, ``m + (q - m) / s``) reaches >= 0.85 in every decile but
widens the intervals x1.49-1.65 on small and x1.31-1.43 on default regions.

With ``model.cv_design: knndm`` (the default, :func:`mrv.modeling.validation.knndm_folds`) the CV's
held-out-to-training distances match the field-pixel-to-site distances (field pixels lie a median 82-131 m
from the nearest lab site; 500 m blocks hold sites out a median 233-284 m), and kNNDM chose random K-fold over
site locations on every generated region: the one-fold concentration of the top decile is a property of 500 m
blocks on 2 km regions, not of the maps' prediction situation. Same regions: 20 small regions lowest decile
0.891 (top), 6 of 200 cells below 0.80, PICP 0.953, width x1.29; 16 default regions lowest decile 0.847
(bottom), 0 of 160 cells below 0.80, PICP 0.933, width x1.17. The maps' 90 % intervals cover 0.966 (small) and
0.943 (default) of the true pixels (blocks 0.987, 0.954) at mean widths of 44.6 and 47.8 t C/ha (blocks 55.7, 50.5).
Units: those of ``y`` (t C/ha).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import norm

from mrv.errors import ModelError
from mrv.modeling.model import GBMQuantileModel, SOCModel, _content_id, conformal_margin, conformal_rank

__all__ = [
    "BAND_CONFIDENCE_SHORTFALL",
    "MIN_BAND_POINTS",
    "N_BANDS",
    "BandedGBMModel",
    "BandedSOCModel",
    "LabelConditionalMargins",
    "band_count",
    "band_confidence",
    "banded_interval",
    "fit_label_conditional",
    "label_conditional_interval",
    "with_bands",
]

#: Bands of the observed stock: deciles, the taxonomy the issue's coverage check uses.
N_BANDS = 10
#: Per-band confidence beta = confidence - this (0.85 at 0.90): 0.80 per decile with room for spatial CV.
BAND_CONFIDENCE_SHORTFALL = 0.05
#: Calibration points a band needs (its margin is then at most the band's largest score, k <= n_k).
MIN_BAND_POINTS = 10


def band_confidence(confidence: float) -> float:
    """Per-band level beta of the label-conditional margins for a nominal ``confidence``."""
    return max(confidence - BAND_CONFIDENCE_SHORTFALL, 0.5)


def band_count(n: int, *, n_bands: int = N_BANDS, min_points: int = MIN_BAND_POINTS) -> int:
    """Bands for ``n`` calibration points: ``n_bands``, fewer when a band would hold < ``min_points``."""
    return int(min(n_bands, n // max(min_points, 1)))


@dataclass(frozen=True)
class LabelConditionalMargins:
    """Band edges (t C/ha; the outer ones infinite), the CQR margin of each band and the band level."""

    edges_t_ha: tuple[float, ...]
    margins_t_ha: tuple[float, ...]
    confidence: float = 0.9
    """Per-band level beta of the margins."""
    n_per_band: tuple[int, ...] = ()
    finite_sample: tuple[bool, ...] = ()
    """Per band: conformal rank k <= n_k (the band's guarantee holds; else its largest score was used)."""

    def to_dict(self) -> dict[str, object]:
        inner = [float(e) for e in self.edges_t_ha[1:-1]]
        return {
            "inner_edges_t_ha": inner, "margins_t_ha": list(self.margins_t_ha), "n_bands": len(self.margins_t_ha),
            "band_confidence": self.confidence, "n_per_band": list(self.n_per_band),
            "finite_sample_guarantee_per_band": list(self.finite_sample),
        }  # fmt: skip


def fit_label_conditional(
    y: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    *,
    confidence: float,
    n_bands: int = N_BANDS,
    min_points: int = 2,
) -> LabelConditionalMargins:
    """Margins at level ``confidence`` per band of observed ``y`` from raw calibration quantiles ``lower``/``upper``.

    ``n_bands`` is reduced (:func:`band_count`) so every band holds at least ``min_points`` points.
    """
    y, lower, upper = (np.asarray(v, dtype=float) for v in (y, lower, upper))
    n_bands = band_count(y.size, n_bands=n_bands, min_points=min_points)
    if n_bands < 1:
        raise ModelError(f"Label-conditional calibration needs at least {min_points} points, got {y.size}.")
    edges = np.quantile(y, np.linspace(0, 1, n_bands + 1))
    edges[0], edges[-1] = -np.inf, np.inf
    band = np.clip(np.searchsorted(edges, y, side="right") - 1, 0, n_bands - 1)
    counts = tuple(int((band == k).sum()) for k in range(n_bands))
    if min(counts) < 1:  # ties in y can empty a band: merge by falling back to fewer bands
        if n_bands == 1:
            raise ModelError("Label-conditional calibration has no points.")
        return fit_label_conditional(y, lower, upper, confidence=confidence, n_bands=n_bands - 1, min_points=min_points)
    margins = tuple(
        conformal_margin(y[band == k], lower[band == k], upper[band == k], confidence=confidence)
        for k in range(n_bands)
    )
    finite = tuple(conformal_rank(n, confidence) <= n for n in counts)
    return LabelConditionalMargins(tuple(float(e) for e in edges), margins, float(confidence), counts, finite)


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


def banded_interval(
    lower: np.ndarray, upper: np.ndarray, margins: LabelConditionalMargins | None, pooled_margin_t_ha: float
) -> tuple[np.ndarray, np.ndarray]:
    """The maps' interval: hull of the label-conditional set joined with [lower - Q, upper + Q] (Q pooled).

    ``margins=None`` (too few calibration points for two bands) gives the pooled CQR interval alone.
    NaN in ``lower``/``upper`` stays NaN.
    """
    lower, upper = np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)
    lo, hi = lower - pooled_margin_t_ha, upper + pooled_margin_t_ha
    if margins is None:
        return lo, hi
    lc_lo, lc_hi = label_conditional_interval(lower, upper, margins)
    return np.fmin(lo, lc_lo), np.fmax(hi, lc_hi)


def _apply_bands(
    out: np.ndarray, bands: LabelConditionalMargins | None, margin: float, confidence: float
) -> np.ndarray:
    """Rewrite p05, p95 and sd of a ``(n, 5)`` prediction made with margin 0 (in place; NaN rows stay NaN)."""
    lo, hi = banded_interval(out[:, 1], out[:, 3], bands, margin)
    z = norm.ppf(0.5 + confidence / 2.0)
    out[:, 1], out[:, 3] = lo, hi
    out[:, 4] = (hi - lo) / (2.0 * z)
    return out


@dataclass
class BandedSOCModel(SOCModel):
    """A quantile regression forest whose intervals are :func:`banded_interval` (``margin_t_ha`` is the pooled Q)."""

    bands: LabelConditionalMargins | None = field(default=None)

    # predict() is SOCModel's: on the compiled path a compiled pass over the walk's output applies the bands
    # (_band_arrays, _forest_kernel.band_kernel); the numpy reference path below applies banded_interval.
    # Both do the same float64 operations, so they agree bit for bit.

    def _band_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Edges and margins of the bands; without bands one band over all stocks with the pooled margin
        (the walk then gives [lower - Q, upper + Q] from the float32 raw quantiles, as the numpy path)."""
        if self.bands is None:
            return np.asarray([-np.inf, np.inf]), np.asarray([self.margin_t_ha], dtype="float64")
        return np.asarray(self.bands.edges_t_ha, dtype="float64"), np.asarray(self.bands.margins_t_ha, dtype="float64")

    def _predict_numpy(self, X: np.ndarray, *, batch: int = 65_536) -> np.ndarray:
        """:meth:`predict` through the numpy reference path."""
        out = SOCModel._predict_numpy(self._raw(), X, batch=batch)
        return _apply_bands(out, self.bands, self.margin_t_ha, self.confidence)

    def _raw(self) -> SOCModel:
        """The same forest (shared, so its compiled walk is cached once) with margin 0: raw quantiles."""
        return SOCModel(
            forest=self.forest, covariates=self.covariates, confidence=self.confidence, metadata=self.metadata
        )

    @property
    def model_id(self) -> str:
        bands = None if self.bands is None else self.bands.to_dict()
        return _content_id(
            "qrf", self.metadata.get("training_sha256"), self.covariates, self.params(), self.margin_t_ha, repr(bands)
        )


@dataclass
class BandedGBMModel(GBMQuantileModel):
    """Quantile gradient boosting with the intervals of :func:`banded_interval`."""

    bands: LabelConditionalMargins | None = field(default=None)

    def predict(self, X: np.ndarray, *, batch: int = 65_536, row_px: int | None = None) -> np.ndarray:
        raw = GBMQuantileModel(
            mean_model=self.mean_model, quantile_models=self.quantile_models, covariates=self.covariates,
            confidence=self.confidence, metadata=self.metadata,
        )  # fmt: skip
        out = np.asarray(GBMQuantileModel.predict(raw, X, batch=batch))
        return _apply_bands(out, self.bands, self.margin_t_ha, self.confidence)

    @property
    def model_id(self) -> str:
        bands = None if self.bands is None else self.bands.to_dict()
        return _content_id(
            "gbm", self.metadata.get("training_sha256"), self.covariates, self.params(), self.margin_t_ha, repr(bands)
        )


def with_bands(
    model: SOCModel | GBMQuantileModel,
    *,
    margin_t_ha: float,
    bands: LabelConditionalMargins | None,
    metadata: dict[str, object],
) -> BandedSOCModel | BandedGBMModel:
    """The fitted ``model`` (estimators shared, not copied) calibrated with the pooled margin and the bands."""
    common: dict[str, Any] = {
        "covariates": model.covariates, "confidence": model.confidence, "margin_t_ha": float(margin_t_ha),
        "metadata": metadata, "bands": bands,
    }  # fmt: skip
    if isinstance(model, SOCModel):
        return BandedSOCModel(forest=model.forest, **common)
    return BandedGBMModel(mean_model=model.mean_model, quantile_models=model.quantile_models, **common)
