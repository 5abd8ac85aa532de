"""Fit the SOC model, cross-validate it spatially and calibrate its intervals.

Any model kind of :func:`mrv.modeling.model.fit_estimator` goes through the same steps: random CV
(shown for comparison; its out-of-fold residuals give the autocorrelation range), spatial block CV
(block size from that range with ``cv_block_size_m: auto``), cross-conformal metrics, the CQR margin
from all spatial out-of-fold predictions, final fit.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from mrv.config import ModelConfig
from mrv.errors import ModelError
from mrv.modeling.model import GBMQuantileModel, SOCModel, calibrated, conformal_margin, fit_estimator
from mrv.modeling.validation import Metrics, fold_indices, metrics
from mrv.modeling.variogram import BlockSizeChoice, choose_block_size, estimate_variogram

MIN_TRAINING_SAMPLES = 20


@dataclass(frozen=True)
class TrainingResult:
    model: SOCModel | GBMQuantileModel
    spatial_cv: Metrics
    """Held-out accuracy over spatial blocks, intervals calibrated without the held-out fold."""
    random_cv: Metrics
    """Random K-fold: optimistic under spatial autocorrelation, shown only beside ``spatial_cv``."""
    oof: pd.DataFrame
    """Out-of-fold predictions of the spatial CV (for error variograms)."""
    block: BlockSizeChoice
    """The spatial-CV block size and the variogram it came from."""


def sample_weights(sd: np.ndarray, *, process_sd: float) -> np.ndarray:
    """Inverse-variance weights 1 / (process_sd^2 + sd_i^2), scaled to mean 1."""
    w = 1.0 / (process_sd**2 + np.asarray(sd, dtype=float) ** 2)
    return w / w.mean()


def _cross_validate(
    X: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    cfg: ModelConfig,
    covariates: tuple[str, ...],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Out-of-fold mean, raw lower/upper quantiles, training-mean baseline and fold id."""
    mean, lo, hi, base, fold_id = (np.full(y.size, np.nan) for _ in range(5))
    for k, (tr, te) in enumerate(folds):
        out = fit_estimator(cfg, X[tr], y[tr], w[tr], covariates).predict(X[te])  # margin 0: raw quantiles
        mean[te], lo[te], hi[te] = out[:, 0], out[:, 1], out[:, 3]
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


def cv_block_size(xs: np.ndarray, ys: np.ndarray, y: np.ndarray, residual: np.ndarray, cfg: ModelConfig) -> BlockSizeChoice:
    """``cfg.cv_block_size_m``, or with ``auto`` the rule of :func:`choose_block_size` applied to the
    autocorrelation range of ``residual`` (out-of-fold residuals of a random-CV first model).

    Residuals, not the stock itself: autocorrelation the covariates explain does not make held-out
    blocks dependent on the training data (Roberts et al. 2017, Sect. "Blocking"). The target's range is
    recorded too. With a configured size the residual variogram is still estimated when possible.
    """
    try:
        target_range: float | None = estimate_variogram(xs, ys, y, seed=cfg.seed).range_m
    except ModelError:
        target_range = None
    if cfg.cv_block_size_m == "auto":
        choice = choose_block_size(
            xs, ys, residual, n_folds=cfg.cv_folds, min_block_m=cfg.cv_min_block_m, seed=cfg.seed,
            what="random-CV residuals of the model",
        )  # fmt: skip
        return replace(choice, target_range_m=target_range)
    try:
        vg = estimate_variogram(xs, ys, residual, seed=cfg.seed)
    except ModelError:
        vg = None
    return BlockSizeChoice(
        block_size_m=float(cfg.cv_block_size_m),
        rule="configured (model.cv_block_size_m)",
        variogram=vg,
        target_range_m=target_range,
    )


def train(table: pd.DataFrame, covariates: list[str], cfg: ModelConfig) -> TrainingResult:
    """Fit on ``table`` (covariate columns, ``soc_stock_t_ha``, ``soc_stock_sd_t_ha``, ``x``, ``y``)."""
    usable = table.dropna(subset=[*covariates, "soc_stock_t_ha"])
    if len(usable) < MIN_TRAINING_SAMPLES:
        raise ModelError(
            f"Only {len(usable)} samples have both a stock and imagery covariates; at least "
            f"{MIN_TRAINING_SAMPLES} are needed. Add samples or widen the imagery period."
        )
    covs = tuple(covariates)
    X = usable[covariates].to_numpy(dtype="float32")
    y = usable["soc_stock_t_ha"].to_numpy(dtype=float)
    w = sample_weights(usable["soc_stock_sd_t_ha"].to_numpy(dtype=float), process_sd=cfg.process_sd_t_ha)
    xs, ys = usable["x"].to_numpy(dtype=float), usable["y"].to_numpy(dtype=float)

    rnd = fold_indices(xs, ys, n_folds=cfg.cv_folds, block_size_m=None, seed=cfg.seed)
    rnd_cv = _cross_validate(X, y, w, rnd, cfg, covs)
    random_metrics = _cross_conformal_metrics(y, *rnd_cv, cfg.confidence)

    block = cv_block_size(xs, ys, y, y - rnd_cv[0], cfg)
    spatial = fold_indices(xs, ys, n_folds=cfg.cv_folds, block_size_m=block.block_size_m, seed=cfg.seed)
    if len(spatial) < 2:
        raise ModelError(
            f"All samples fall in one {block.block_size_m:g} m CV block; spatial CV needs at least 2. "
            "Set a smaller model.cv_block_size_m or add samples elsewhere in the region."
        )
    mean, lo, hi, base, fold_id = _cross_validate(X, y, w, spatial, cfg, covs)
    spatial_metrics = _cross_conformal_metrics(y, mean, lo, hi, base, fold_id, cfg.confidence)
    margin = conformal_margin(y, lo, hi, confidence=cfg.confidence)

    digest = hashlib.sha256(
        pd.util.hash_pandas_object(usable[[*covariates, "soc_stock_t_ha"]], index=False).to_numpy().tobytes()
    ).hexdigest()
    metadata: dict[str, object] = {
        "training_sha256": digest,
        "n_train": int(y.size),
        "cv_block_size_m": block.block_size_m,
        "autocorrelation_range_m": block.variogram.range_m if block.variogram is not None else None,
    }
    model = calibrated(fit_estimator(cfg, X, y, w, covs), margin_t_ha=margin, metadata=metadata)
    oof = pd.DataFrame(
        {"x": xs, "y": ys, "observed": y, "predicted": mean, "lower": lo - margin, "upper": hi + margin, "fold": fold_id}
    )
    return TrainingResult(model=model, spatial_cv=spatial_metrics, random_cv=random_metrics, oof=oof, block=block)
