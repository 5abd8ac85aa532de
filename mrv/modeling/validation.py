"""Spatial block cross-validation and the accuracy metrics verifiers ask for.

Random K-fold on spatially autocorrelated samples gives optimistic accuracy (Roberts et al. 2017,
Ecography 40:913-929; Wadoux et al. 2021, Ecol. Model. 457:109692). Folds here hold out whole
square blocks of ``block_size_m``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.model_selection import GroupKFold, KFold


def spatial_blocks(x: np.ndarray, y: np.ndarray, *, block_size_m: float) -> np.ndarray:
    """Integer block id of each point on a square grid of ``block_size_m``."""
    bx = np.floor(np.asarray(x) / block_size_m).astype(np.int64)
    by = np.floor(np.asarray(y) / block_size_m).astype(np.int64)
    _, ids = np.unique(np.column_stack([bx, by]), axis=0, return_inverse=True)
    return ids.ravel()


def fold_indices(
    x: np.ndarray, y: np.ndarray, *, n_folds: int, block_size_m: float | None, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train/test index pairs; spatial blocks when ``block_size_m`` is given, else random K-fold."""
    idx = np.arange(len(x))
    if block_size_m is None:
        return list(KFold(n_splits=n_folds, shuffle=True, random_state=seed).split(idx))
    groups = spatial_blocks(x, y, block_size_m=block_size_m)
    n = min(n_folds, np.unique(groups).size)
    # Shuffle block labels so folds are not spatial stripes.
    perm = np.random.default_rng(seed).permutation(groups.max() + 1)
    return list(GroupKFold(n_splits=n).split(idx, groups=perm[groups]))


@dataclass(frozen=True)
class Metrics:
    """Accuracy of point predictions (t C/ha) and of the nominal-``confidence`` intervals."""

    n: int
    rmse: float
    bias: float
    """Mean of predicted minus observed."""
    r2: float
    """Model efficiency coefficient 1 - SSE/SST (can be negative)."""
    ccc: float
    """Lin's (1989) concordance correlation coefficient."""
    picp_90: float
    """Prediction interval coverage probability."""
    mean_width_90: float
    baseline_rmse: float
    """RMSE of predicting every held-out point with the training mean."""

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def lins_ccc(obs: np.ndarray, pred: np.ndarray) -> float:
    """Lin (1989), Biometrics 45:255-268: 2 s_xy / (s_x^2 + s_y^2 + (mean_x - mean_y)^2)."""
    mx, my = obs.mean(), pred.mean()
    sxy = np.mean((obs - mx) * (pred - my))
    return float(2 * sxy / (obs.var() + pred.var() + (mx - my) ** 2))


def metrics(obs: np.ndarray, pred: np.ndarray, lower: np.ndarray, upper: np.ndarray, baseline: np.ndarray) -> Metrics:
    err = pred - obs
    sst = np.sum((obs - obs.mean()) ** 2)
    return Metrics(
        n=int(obs.size),
        rmse=float(np.sqrt(np.mean(err**2))),
        bias=float(err.mean()),
        r2=float(1 - np.sum(err**2) / sst) if sst > 0 else float("nan"),
        ccc=lins_ccc(obs, pred),
        picp_90=float(np.mean((obs >= lower) & (obs <= upper))),
        mean_width_90=float(np.mean(upper - lower)),
        baseline_rmse=float(np.sqrt(np.mean((baseline - obs) ** 2))),
    )
