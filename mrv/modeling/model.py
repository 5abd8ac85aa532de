"""SOC stock model: quantile regression forest with conformalized 90 % intervals.

Quantile regression forests (Meinshausen 2006, JMLR 7:983-999) as used for digital soil mapping
by SoilGrids 2.0 (Poggio et al. 2021, SOIL 7:217-240). Intervals are calibrated by conformalized
quantile regression (Romano, Patterson & Candes 2019, NeurIPS): with out-of-fold conformity
scores E_i = max(q_lo(x_i) - y_i, y_i - q_hi(x_i)) from *spatial* cross-validation, the interval
[q_lo - Q, q_hi + Q] with Q the ceil((n+1)(1-alpha))/n empirical quantile of E covers with
probability >= 1 - alpha under exchangeability of the held-out blocks.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np
from quantile_forest import RandomForestQuantileRegressor
from scipy.stats import norm

from mrv.config import ModelConfig
from mrv.errors import CovariateMismatch, ModelError

#: Output layers of :meth:`SOCModel.predict`, in order.
OUTPUTS = ("mean", "p05", "p50", "p95", "sd")


def make_forest(cfg: ModelConfig, *, n_jobs: int = 1) -> RandomForestQuantileRegressor:
    return RandomForestQuantileRegressor(
        n_estimators=cfg.n_estimators,
        min_samples_leaf=cfg.min_samples_leaf,
        max_features=cfg.max_features,
        random_state=cfg.seed,
        n_jobs=n_jobs,
    )


def conformal_margin(y: np.ndarray, lower: np.ndarray, upper: np.ndarray, *, confidence: float) -> float:
    """CQR margin Q (same units as ``y``) from out-of-fold quantile predictions (Romano et al. 2019, Thm. 1)."""
    scores = np.maximum(lower - y, y - upper)
    n = scores.size
    if n == 0:
        raise ModelError("No held-out predictions to calibrate the intervals with; add samples.")
    level = min(1.0, math.ceil((n + 1) * confidence) / n)
    return float(np.quantile(scores, level, method="higher"))


@dataclass
class SOCModel:
    """A fitted forest plus the calibration that turns its quantiles into honest intervals."""

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
        if tuple(names) != self.covariates:
            missing = sorted(set(self.covariates) - set(names))
            extra = sorted(set(names) - set(self.covariates))
            raise CovariateMismatch(
                f"The model was trained on covariates {list(self.covariates)} but the stack has {list(names)} "
                f"(missing {missing}, unexpected {extra}). Rebuild the covariate stack with the model's "
                "imagery bands or retrain the model."
            )

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

    def predict(self, X: np.ndarray, *, batch: int = 65_536) -> np.ndarray:
        """``(n, 5)`` float32: mean, p05, p50, p95 (calibrated) and sd (t C/ha); NaN rows stay NaN.

        sd is the Gaussian-equivalent SD of the calibrated interval: (p95 - p05) / (2 z_0.95).
        With the default forest each tree is walked once per pixel: the leaf's stored training
        value is looked up and the mean and the quantiles (linear interpolation, as
        quantile-forest computes them) come from the same per-pixel sample of tree values.
        Rows are processed in batches so memory does not depend on the block size.
        """
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
            lo = q[:, 0] - self.margin_t_ha
            hi = q[:, 2] + self.margin_t_ha
            out[rows] = np.column_stack([mean, lo, q[:, 1], hi, (hi - lo) / (2.0 * z)])
        return out

    @property
    def model_id(self) -> str:
        """Content id: hash of training-data hash, covariates, settings and calibration."""
        key = repr((self.metadata.get("training_sha256"), self.covariates, self.forest.get_params(), self.margin_t_ha))
        return "qrf-" + hashlib.sha256(key.encode()).hexdigest()[:12]
