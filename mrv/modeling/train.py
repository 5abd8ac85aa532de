"""Fit the SOC model, cross-validate it spatially and calibrate its intervals."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mrv.config import ModelConfig
from mrv.errors import ModelError
from mrv.modeling.model import SOCModel, conformal_margin, make_forest
from mrv.modeling.validation import Metrics, fold_indices, metrics

MIN_TRAINING_SAMPLES = 20


@dataclass(frozen=True)
class TrainingResult:
    model: SOCModel
    spatial_cv: Metrics
    """Held-out accuracy over spatial blocks, intervals calibrated without the held-out fold."""
    random_cv: Metrics
    """Random K-fold: optimistic under spatial autocorrelation, shown only beside ``spatial_cv``."""
    oof: pd.DataFrame
    """Out-of-fold predictions of the spatial CV (for error variograms)."""


def sample_weights(sd: np.ndarray, *, process_sd: float) -> np.ndarray:
    """Inverse-variance weights 1 / (process_sd^2 + sd_i^2), scaled to mean 1."""
    w = 1.0 / (process_sd**2 + np.asarray(sd, dtype=float) ** 2)
    return w / w.mean()


def _cross_validate(
    X: np.ndarray, y: np.ndarray, w: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]], cfg: ModelConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Out-of-fold mean, raw lower/upper quantiles, training-mean baseline and fold id."""
    mean, lo, hi, base, fold_id = (np.full(y.size, np.nan) for _ in range(5))
    a = (1 - cfg.confidence) / 2
    for k, (tr, te) in enumerate(folds):
        forest = make_forest(cfg).fit(X[tr], y[tr], sample_weight=w[tr])
        q = np.asarray(forest.predict(X[te], quantiles=[a, 1 - a]))
        lo[te], hi[te] = q[:, 0], q[:, 1]
        mean[te] = forest.predict(X[te], quantiles="mean")
        base[te] = np.average(y[tr], weights=w[tr])
        fold_id[te] = k
    return mean, lo, hi, base, fold_id


def _cross_conformal_metrics(
    y: np.ndarray, mean: np.ndarray, lo: np.ndarray, hi: np.ndarray, base: np.ndarray, fold_id: np.ndarray, confidence: float
) -> Metrics:
    """Metrics where each fold's interval is widened by a margin computed from the *other* folds only."""
    lower, upper = lo.copy(), hi.copy()
    for k in np.unique(fold_id):
        inside = fold_id == k
        q = conformal_margin(y[~inside], lo[~inside], hi[~inside], confidence=confidence)
        lower[inside] -= q
        upper[inside] += q
    return metrics(y, mean, lower, upper, base)


def train(table: pd.DataFrame, covariates: list[str], cfg: ModelConfig) -> TrainingResult:
    """Fit on ``table`` (covariate columns, ``soc_stock_t_ha``, ``soc_stock_sd_t_ha``, ``x``, ``y``)."""
    usable = table.dropna(subset=[*covariates, "soc_stock_t_ha"])
    if len(usable) < MIN_TRAINING_SAMPLES:
        raise ModelError(
            f"Only {len(usable)} samples have both a stock and imagery covariates; at least "
            f"{MIN_TRAINING_SAMPLES} are needed. Add samples or widen the imagery period."
        )
    X = usable[covariates].to_numpy(dtype="float32")
    y = usable["soc_stock_t_ha"].to_numpy(dtype=float)
    w = sample_weights(usable["soc_stock_sd_t_ha"].to_numpy(dtype=float), process_sd=cfg.process_sd_t_ha)
    xs, ys = usable["x"].to_numpy(dtype=float), usable["y"].to_numpy(dtype=float)

    spatial = fold_indices(xs, ys, n_folds=cfg.cv_folds, block_size_m=cfg.cv_block_size_m, seed=cfg.seed)
    mean, lo, hi, base, fold_id = _cross_validate(X, y, w, spatial, cfg)
    spatial_metrics = _cross_conformal_metrics(y, mean, lo, hi, base, fold_id, cfg.confidence)
    margin = conformal_margin(y, lo, hi, confidence=cfg.confidence)

    rnd = fold_indices(xs, ys, n_folds=cfg.cv_folds, block_size_m=None, seed=cfg.seed)
    random_metrics = _cross_conformal_metrics(y, *_cross_validate(X, y, w, rnd, cfg), cfg.confidence)

    forest = make_forest(cfg).fit(X, y, sample_weight=w)
    digest = hashlib.sha256(pd.util.hash_pandas_object(usable[[*covariates, "soc_stock_t_ha"]], index=False).to_numpy().tobytes()).hexdigest()
    model = SOCModel(
        forest=forest,
        covariates=tuple(covariates),
        confidence=cfg.confidence,
        margin_t_ha=margin,
        metadata={"training_sha256": digest, "n_train": int(y.size)},
    )
    oof = pd.DataFrame({"x": xs, "y": ys, "observed": y, "predicted": mean, "lower": lo - margin, "upper": hi + margin})
    return TrainingResult(model=model, spatial_cv=spatial_metrics, random_cv=random_metrics, oof=oof)
