"""Spatial block cross-validation and the accuracy metrics verifiers ask for.

Random K-fold on spatially autocorrelated samples gives optimistic accuracy (Roberts et al. 2017,
Ecography 40:913-929; Wadoux et al. 2021, Ecol. Model. 457:109692). Folds here hold out whole
square blocks of ``block_size_m``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.model_selection import KFold

from mrv.errors import ModelError

__all__ = ["Metrics", "balanced_block_folds", "fold_indices", "fold_sizes", "lins_ccc", "metrics", "spatial_blocks"]


def spatial_blocks(x: np.ndarray, y: np.ndarray, *, block_size_m: float) -> np.ndarray:
    """Integer block id (0..n_blocks-1, occupied blocks only) of each point on a square grid of ``block_size_m``."""
    bx = np.floor(np.asarray(x) / block_size_m).astype(np.int64)
    by = np.floor(np.asarray(y) / block_size_m).astype(np.int64)
    _, ids = np.unique(np.column_stack([bx, by]), axis=0, return_inverse=True)
    return ids.ravel()


def balanced_block_folds(groups: np.ndarray, n_folds: int, *, seed: int) -> np.ndarray:
    """Fold id (0..n_folds-1) of each point: whole blocks assigned to folds so fold sizes are balanced.

    Longest-processing-time greedy (Graham 1969, SIAM J. Appl. Math. 17:416-429): blocks in decreasing
    order of sample count (ties in a seeded random order) each go to the fold with the fewest samples so
    far. With at least ``n_folds`` blocks every fold is non-empty, and the largest fold exceeds the
    smallest by at most the largest block.
    """
    groups = np.asarray(groups)
    labels, counts = np.unique(groups, return_counts=True)
    if labels.size < n_folds:
        raise ModelError(
            f"Spatial CV needs at least {n_folds} occupied blocks for {n_folds} folds, got {labels.size}; "
            "set a smaller model.cv_block_size_m (or 'auto') or fewer model.cv_folds."
        )
    tie = np.random.default_rng(seed).permutation(labels.size)
    order = np.lexsort((tie, -counts))
    load = np.zeros(n_folds, dtype=np.int64)
    fold_of_block = np.empty(labels.size, dtype=np.int64)
    for b in order:
        f = int(np.argmin(load))  # first of the least-loaded folds
        fold_of_block[b] = f
        load[f] += counts[b]
    return fold_of_block[np.searchsorted(labels, groups)]


def fold_indices(
    x: np.ndarray, y: np.ndarray, *, n_folds: int, block_size_m: float | None, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train/test index pairs: exactly ``n_folds`` non-empty folds.

    With ``block_size_m`` whole square blocks are held out, assigned to folds by size
    (:func:`balanced_block_folds`); without it, random K-fold.
    """
    idx = np.arange(len(x))
    if block_size_m is None:
        return list(KFold(n_splits=n_folds, shuffle=True, random_state=seed).split(idx))
    fold = balanced_block_folds(spatial_blocks(x, y, block_size_m=block_size_m), n_folds, seed=seed)
    return [(np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in range(n_folds)]


def fold_sizes(folds: list[tuple[np.ndarray, np.ndarray]]) -> list[int]:
    """Held-out points per fold."""
    return [int(te.size) for _, te in folds]


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
