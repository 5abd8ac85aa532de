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

    def predict(self, X: np.ndarray) -> np.ndarray:
        """``(n, 5)`` float32: mean, p05, p50, p95 (calibrated) and sd (t C/ha); NaN rows stay NaN.

        sd is the Gaussian-equivalent SD of the calibrated interval: (p95 - p05) / (2 z_0.95).
        """
        out = np.full((X.shape[0], len(OUTPUTS)), np.nan, dtype="float32")
        ok = np.all(np.isfinite(X), axis=1)
        if not ok.any():
            return out
        Xo = X[ok]
        q = self.raw_quantiles(Xo)
        mean = np.asarray(self.forest.predict(Xo, quantiles="mean"))
        lo = q[:, 0] - self.margin_t_ha
        hi = q[:, 2] + self.margin_t_ha
        z = norm.ppf(0.5 + self.confidence / 2.0)
        out[ok] = np.column_stack([mean, lo, q[:, 1], hi, (hi - lo) / (2.0 * z)])
        return out

    @property
    def model_id(self) -> str:
        """Content id: hash of training-data hash, covariates, settings and calibration."""
        key = repr((self.metadata.get("training_sha256"), self.covariates, self.forest.get_params(), self.margin_t_ha))
        return "qrf-" + hashlib.sha256(key.encode()).hexdigest()[:12]
