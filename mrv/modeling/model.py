"""SOC stock models with conformalized 90 % intervals behind one interface (:class:`SOCPredictor`).

``kind: qrf`` (default): quantile regression forests (Meinshausen 2006, JMLR 7:983-999) as used for digital soil mapping
by SoilGrids 2.0 (Poggio et al. 2021, SOIL 7:217-240). Intervals are calibrated by conformalized
quantile regression (Romano, Patterson & Candes 2019, NeurIPS): with out-of-fold conformity
scores E_i = max(q_lo(x_i) - y_i, y_i - q_hi(x_i)) from *spatial* cross-validation, the interval
[q_lo - Q, q_hi + Q] with Q the ceil((n+1)(1-alpha))/n empirical quantile of E covers with
probability >= 1 - alpha under exchangeability of the held-out blocks.

``kind: gbm_quantile``: gradient-boosted trees (scikit-learn ``HistGradientBoostingRegressor``) fitted
with the pinball loss rho_tau(u) = u (tau - 1[u < 0]) (Koenker & Bassett 1978, Econometrica 46:33-50;
Friedman 2001, Ann. Stat. 29:1189-1232) for tau = alpha/2, 0.5, 1 - alpha/2, plus a squared-error
model for the mean; calibrated with the same CQR margin. Crossing quantiles are rearranged
(sorted per pixel; Chernozhukov, Fernandez-Val & Galichon 2010, Econometrica 78:1093-1125), which
never lowers the coverage of the outer pair.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from quantile_forest import RandomForestQuantileRegressor
from scipy.stats import norm
from sklearn.ensemble import HistGradientBoostingRegressor
from threadpoolctl import threadpool_limits

from mrv.config import ModelConfig
from mrv.errors import CovariateMismatch, ModelError
from mrv.fsio import sha256_bytes

__all__ = [
    "OUTPUTS",
    "GBMQuantileModel",
    "SOCModel",
    "SOCPredictor",
    "calibrated",
    "check_covariate_names",
    "conformal_margin",
    "conformal_rank",
    "fit_estimator",
    "make_forest",
    "make_gbm",
]

#: Output layers of :meth:`SOCPredictor.predict`, in order.
OUTPUTS = ("mean", "p05", "p50", "p95", "sd")
#: Model kinds accepted by ``model.kind``.
KINDS = ("qrf", "gbm_quantile")


@runtime_checkable
class SOCPredictor(Protocol):
    """What training, the registry and map prediction need from a fitted SOC model."""

    kind: ClassVar[str]
    covariates: tuple[str, ...]
    confidence: float
    margin_t_ha: float
    metadata: dict[str, object]

    @property
    def model_id(self) -> str: ...

    def params(self) -> dict[str, Any]: ...

    def check_covariates(self, names: tuple[str, ...] | list[str]) -> None: ...

    def predict(self, X: np.ndarray, *, batch: int = ..., row_px: int | None = ...) -> np.ndarray:
        """``(n, 5)`` mean, p05, p50, p95, sd (t C/ha); ``row_px``: X is an image row by row (a speed hint)."""
        ...


def check_covariate_names(expected: tuple[str, ...], names: tuple[str, ...] | list[str]) -> None:
    """Raise :class:`CovariateMismatch` naming the missing and unexpected covariates (order matters too)."""
    if tuple(names) != expected:
        missing = sorted(set(expected) - set(names))
        extra = sorted(set(names) - set(expected))
        problem = f"missing {missing}, unexpected {extra}" if missing or extra else "same covariates in a different order"
        raise CovariateMismatch(
            f"The model was trained on covariates {list(expected)} but the stack has {list(names)} "
            f"({problem}). Rebuild the covariate stack with the model's imagery bands in the model's order, "
            "or retrain the model."
        )


def _assemble(mean: np.ndarray, q: np.ndarray, margin: float, z: float) -> np.ndarray:
    """``(n, 5)`` mean, p05 - Q, p50, p95 + Q, sd = (p95 - p05) / (2 z) from raw quantiles ``q`` (n, 3)."""
    lo = q[:, 0] - margin
    hi = q[:, 2] + margin
    return np.column_stack([mean, lo, q[:, 1], hi, (hi - lo) / (2.0 * z)])


def _content_id(prefix: str, *parts: object) -> str:
    return prefix + "-" + sha256_bytes(repr(parts).encode())[:12]


def make_forest(cfg: ModelConfig, *, n_jobs: int = 1) -> RandomForestQuantileRegressor:
    return RandomForestQuantileRegressor(
        n_estimators=cfg.n_estimators,
        min_samples_leaf=cfg.min_samples_leaf,
        max_features=cfg.max_features,
        random_state=cfg.seed,
        n_jobs=n_jobs,
    )


def conformal_rank(n: int, confidence: float) -> int:
    """1-based rank k = ceil((n + 1) * confidence) of the conformity score that sets the CQR margin.

    Romano, Patterson & Candes (2019, NeurIPS), Eq. 7 / Thm. 1: Q is the k-th smallest of the n scores.
    ``k > n`` (fewer than ``confidence / (1 - confidence)`` scores, i.e. n < 9 at 0.9) makes Q infinite
    in theory; :func:`conformal_margin` then uses the largest score (k capped at n) and the
    finite-sample guarantee no longer holds, which callers record (``conformal_rank(n, c) > n``).
    """
    # The small epsilon keeps (n + 1) * 0.9 = 9.000000000000002 from rounding up to 10.
    return int(math.ceil((n + 1) * confidence - 1e-9))


def conformal_margin(y: np.ndarray, lower: np.ndarray, upper: np.ndarray, *, confidence: float) -> float:
    """CQR margin Q (same units as ``y``) from out-of-fold quantile predictions (Romano et al. 2019, Thm. 1).

    Scores E_i = max(lower_i - y_i, y_i - upper_i); Q is the k-th smallest with k = ceil((n + 1) * confidence)
    (:func:`conformal_rank`), the largest score when k > n. (Up to v0.x this took numpy's "higher"
    quantile at level k/n, which is the (k+1)-th smallest score: intervals ~8 % too wide, more on small n.)
    """
    scores = np.sort(np.asarray(np.maximum(lower - y, y - upper), dtype=float))
    n = scores.size
    if n == 0:
        raise ModelError("No held-out predictions to calibrate the intervals with; add samples.")
    k = min(conformal_rank(n, confidence), n)
    return float(scores[k - 1])


@dataclass
class SOCModel:
    """A fitted quantile regression forest plus the calibration that turns its quantiles into honest intervals."""

    kind: ClassVar[str] = "qrf"

    forest: RandomForestQuantileRegressor
    covariates: tuple[str, ...]
    confidence: float
    margin_t_ha: float = 0.0
    """Conformal widening added to each side of the raw quantile interval (t C/ha)."""
    metadata: dict[str, object] = field(default_factory=dict)

    @property
    def quantiles(self) -> tuple[float, float, float]:
        a = (1.0 - self.confidence) / 2.0
        return (a, 0.5, 1.0 - a)

    def check_covariates(self, names: tuple[str, ...] | list[str]) -> None:
        check_covariate_names(self.covariates, names)

    def params(self) -> dict[str, Any]:
        return dict(self.forest.get_params())

    def raw_quantiles(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.forest.predict(X, quantiles=list(self.quantiles)))

    def _leaf_values(self) -> np.ndarray | None:
        """``(n_trees, n_nodes)`` float32: the one training value quantile-forest keeps per leaf.

        Only for the default configuration (``max_samples_leaf=1``, one output, no monotonic
        constraints); ``None`` otherwise, and :meth:`predict` then uses quantile-forest's own path.
        """
        f = self.forest
        if f.max_samples_leaf != 1 or f.monotonic_cst is not None or f.n_outputs_ != 1:
            return None
        idx = np.asarray(f.forest_.y_train_leaves)[:, :, 0, 0]  # 1-based training index, 0 = no sample
        y_train = np.asarray(f.forest_.y_train)[0]
        return np.where(idx > 0, y_train[np.maximum(idx, 1) - 1], np.nan).astype("float32")

    def _compiled(self) -> tuple[Any, np.ndarray] | None:
        """The forest flattened for the compiled walk and its selection network, or ``None`` (unsupported).

        Built once per fitted forest and process (:func:`mrv.modeling.forest_walk.cached_forest`);
        never pickled with the model.
        """
        from mrv.modeling import forest_walk

        try:
            import mrv.modeling._forest_kernel  # noqa: F401  (numba)
        except ImportError:  # pragma: no cover - numba is a dependency; keep the numpy path usable without it
            return None
        lo, hi, _ = forest_walk.order_positions(len(self.forest.estimators_), self.quantiles)
        wanted = tuple(sorted({*lo.tolist(), *hi.tolist()}))
        compiled, network = forest_walk.cached_forest(self.forest, self._leaf_values, wanted)
        return None if compiled is None else (compiled, network)

    def predict(self, X: np.ndarray, *, batch: int = 65_536, row_px: int | None = None) -> np.ndarray:
        """``(n, 5)`` float32: mean, p05, p50, p95 (calibrated) and sd (t C/ha); NaN rows stay NaN.

        sd is the Gaussian-equivalent SD of the calibrated interval: (p95 - p05) / (2 z_0.95).
        With the default forest (one training value per leaf) every tree gives one value per pixel;
        the mean and the quantiles (linear interpolation between order statistics, as quantile-forest
        computes them with equal weights) come from those values. The compiled walk
        (:mod:`mrv.modeling.forest_walk`, numba) computes them without a sort and returns a view of a
        ``(5, n)`` array (F-ordered ``(n, 5)``), so a block's transpose is free; without numba the
        numpy path below does the same in row batches (``batch``); other forests use
        quantile-forest's own predict. ``row_px``: X is an image block, row by row with that many pixels
        per row; the compiled walk then groups 2-D neighbourhoods (same numbers, less time).
        """
        fast = self._compiled()
        if fast is not None:
            from mrv.modeling.forest_walk import predict_forest

            z = norm.ppf(0.5 + self.confidence / 2.0)
            bands = self._band_arrays()
            out = predict_forest(fast[0], fast[1], X, self.quantiles, margin=self.margin_t_ha, z=z, bands=bands, row_px=row_px)
            return out.T
        return self._predict_numpy(X, batch=batch)

    def _band_arrays(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Band edges and margins for the compiled walk's banded interval; ``None``: the pooled margin alone."""
        return None

    def _predict_numpy(self, X: np.ndarray, *, batch: int = 65_536) -> np.ndarray:
        """:meth:`predict` with one ``tree_.apply`` per tree and a full sort (the reference path)."""
        out = np.full((X.shape[0], len(OUTPUTS)), np.nan, dtype="float32")
        ok = np.flatnonzero(np.all(np.isfinite(X), axis=1))
        z = norm.ppf(0.5 + self.confidence / 2.0)
        lut = self._leaf_values()
        trees = self.forest.estimators_
        pos = np.asarray(self.quantiles) * (len(trees) - 1)
        lo_i = np.floor(pos).astype(int)
        hi_i = np.minimum(lo_i + 1, len(trees) - 1)
        frac = np.asarray(pos - lo_i, dtype="float32")
        for start in range(0, ok.size, batch):
            rows = ok[start : start + batch]
            Xb = np.ascontiguousarray(X[rows], dtype="float32")
            if lut is None:
                q = self.raw_quantiles(Xb)
                mean = np.asarray(self.forest.predict(Xb, quantiles="mean"))
            else:
                vals = np.empty((rows.size, len(trees)), dtype="float32")
                for t, est in enumerate(trees):
                    vals[:, t] = lut[t, est.tree_.apply(Xb)]
                mean = vals.mean(axis=1)
                vals.sort(axis=1)
                q = vals[:, lo_i] + frac * (vals[:, hi_i] - vals[:, lo_i])
            out[rows] = _assemble(mean, q, self.margin_t_ha, z)
        return out

    @property
    def model_id(self) -> str:
        """Content id: hash of training-data hash, covariates, settings and calibration."""
        return _content_id("qrf", self.metadata.get("training_sha256"), self.covariates, self.params(), self.margin_t_ha)


@dataclass
class GBMQuantileModel:
    """Quantile gradient boosting (p05/p50/p95) plus a mean model, with the same CQR calibration."""

    kind: ClassVar[str] = "gbm_quantile"
    mean_model: HistGradientBoostingRegressor
    quantile_models: tuple[HistGradientBoostingRegressor, HistGradientBoostingRegressor, HistGradientBoostingRegressor]
    covariates: tuple[str, ...]
    confidence: float
    margin_t_ha: float = 0.0
    metadata: dict[str, object] = field(default_factory=dict)

    def check_covariates(self, names: tuple[str, ...] | list[str]) -> None:
        check_covariate_names(self.covariates, names)

    def params(self) -> dict[str, Any]:
        out = {f"mean.{k}": v for k, v in self.mean_model.get_params().items()}
        for name, m in zip(("lower", "median", "upper"), self.quantile_models, strict=True):
            out.update({f"{name}.{k}": v for k, v in m.get_params().items()})
        return out

    def predict(self, X: np.ndarray, *, batch: int = 65_536, row_px: int | None = None) -> np.ndarray:
        """``(n, 5)`` float32: mean, p05, p50, p95 (calibrated, rearranged) and sd; NaN rows stay NaN (``row_px`` unused)."""
        out = np.full((X.shape[0], len(OUTPUTS)), np.nan, dtype="float32")
        ok = np.flatnonzero(np.all(np.isfinite(X), axis=1))
        z = norm.ppf(0.5 + self.confidence / 2.0)
        for start in range(0, ok.size, batch):
            rows = ok[start : start + batch]
            Xb = np.ascontiguousarray(X[rows], dtype="float32")
            with threadpool_limits(limits=1, user_api="openmp"):  # see fit_estimator
                q = np.column_stack([m.predict(Xb) for m in self.quantile_models])
                mean = self.mean_model.predict(Xb)
            q.sort(axis=1)  # rearrangement of crossing quantiles
            out[rows] = _assemble(mean, q, self.margin_t_ha, z)
        return out

    @property
    def model_id(self) -> str:
        """Content id: hash of training-data hash, covariates, settings and calibration."""
        return _content_id("gbm", self.metadata.get("training_sha256"), self.covariates, self.params(), self.margin_t_ha)


def calibrated(
    model: SOCModel | GBMQuantileModel, *, margin_t_ha: float, metadata: dict[str, object]
) -> SOCModel | GBMQuantileModel:
    """A copy of ``model`` with the CQR margin and metadata set (the fitted estimators are shared)."""
    return replace(model, margin_t_ha=margin_t_ha, metadata=metadata)


#: Histogram bins per covariate. With sample weights scikit-learn finds bin edges by weighted percentiles,
#: one call per edge: 255 bins made binning dominate the fit on a few hundred samples, which 64 bins resolve.
GBM_MAX_BINS = 64


def make_gbm(cfg: ModelConfig, *, quantile: float | None) -> HistGradientBoostingRegressor:
    """Pinball-loss model for ``quantile``, or the squared-error mean model for ``None``."""
    return HistGradientBoostingRegressor(
        loss="squared_error" if quantile is None else "quantile",
        quantile=quantile,
        learning_rate=cfg.gbm_learning_rate,
        max_iter=cfg.gbm_max_iter,
        max_leaf_nodes=cfg.gbm_max_leaf_nodes,
        min_samples_leaf=cfg.gbm_min_samples_leaf,
        max_bins=GBM_MAX_BINS,
        early_stopping=False,
        random_state=cfg.seed,
    )


def fit_estimator(
    cfg: ModelConfig, X: np.ndarray, y: np.ndarray, w: np.ndarray, covariates: tuple[str, ...]
) -> SOCModel | GBMQuantileModel:
    """Fit the model of ``cfg.kind`` with sample weights ``w``; uncalibrated (margin 0)."""
    if cfg.kind == "qrf":
        forest = make_forest(cfg).fit(X, y, sample_weight=w)
        return SOCModel(forest=forest, covariates=covariates, confidence=cfg.confidence)
    if cfg.kind == "gbm_quantile":
        a = (1.0 - cfg.confidence) / 2.0
        # One OpenMP thread: on a few hundred samples threads only add synchronisation, and on a loaded
        # 2-core machine (Dask workers, other steps) OpenMP spin-waiting made fits ~20x slower.
        with threadpool_limits(limits=1, user_api="openmp"):
            qs = tuple(make_gbm(cfg, quantile=tau).fit(X, y, sample_weight=w) for tau in (a, 0.5, 1.0 - a))
            mean = make_gbm(cfg, quantile=None).fit(X, y, sample_weight=w)
        return GBMQuantileModel(
            mean_model=mean,
            quantile_models=(qs[0], qs[1], qs[2]),
            covariates=covariates,
            confidence=cfg.confidence,
        )
    raise ModelError(f"model.kind {cfg.kind!r} is not available; use one of {list(KINDS)}.")
