"""Autocorrelation range of the SOC stock from an empirical semivariogram, and the CV block size it implies.

The semivariogram and its exponential fit ``c0 + c1 (1 - exp(-h / a))`` come from :mod:`mrv.geostats`
(Matheron's estimator, Cressie's 1985 WLS); the *practical range* (95 % of the sill) is ``3 a``,
searched up to the largest lag. Bins reach a third of the diagonal
of the samples' bounding box (the default cutoff of gstat, Pebesma 2004, Comput. Geosci. 30:683-691):
longer lags have few independent pairs and let one realisation's large-scale drift dominate the fit.

Block size rule for spatial cross-validation: blocks at least as large as the autocorrelation
range of the model's *residuals* make held-out blocks approximately independent of the training
data (training uses the residuals of a random-CV first model; the target's own range, which also
contains the covariate-explained pattern, is recorded beside it) (Roberts et al. 2017,
Ecography 40:913-929; Valavi et al. 2019, Methods Ecol. Evol. 10:225-232, ``blockCV::spatialAutoRange``,
which also sizes blocks by the fitted range)::

    floor = max(2 x median nearest-neighbour spacing, min(min_block_m, extent / 3))
    block = max(practical_range, floor)            (rounded up to 10 m)

The floor follows the region and the sampling: a configured minimum (500 m by default) larger than a
third of the sampled extent would leave a field of 250 m in one block, and blocks narrower than
twice the sample spacing hold single points (leave-one-out, not blocked CV). The size is then reduced
(by 10 % steps) until the blocks deal into ``n_folds`` folds of balanced size (the smallest fold holds
at least half of n / n_folds points, :func:`mrv.modeling.validation.balanced_block_folds`); the
reduction (``capped``), and a range the fit could not resolve, are recorded.

The residual range is estimated from the per-point mean of several random-CV repetitions (passed in
by :mod:`mrv.modeling.train`), and the ranges of the single repetitions are kept as its spread, so
the block size does not hinge on one random split.

The blocks answer "how well does the model predict a whole block away from every site?". The maps
predict field pixels 20-290 m from the nearest lab site (5 %-95 % on generated regions), while 500 m
blocks hold sites out 70-600 m from the nearest training site; ``model.cv_design: knndm``
(:func:`mrv.modeling.validation.knndm_folds`) matches the CV to the maps' distances instead, and the
block size chosen here is then only recorded.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from mrv.errors import ModelError
from mrv.geostats import VariogramError, empirical_variogram, fit_exponential
from mrv.modeling.validation import balanced_block_folds, spatial_blocks

__all__ = [
    "BlockSizeChoice",
    "Variogram",
    "balanced_block_size",
    "block_floor",
    "choose_block_size",
    "estimate_variogram",
]

#: Smallest CV block (m) the automatic rule returns, whatever the fitted range.
MIN_BLOCK_M = 500.0
#: At most this many points enter the variogram (a seeded random subset beyond it).
MAX_POINTS = 3000


@dataclass(frozen=True)
class Variogram:
    """Empirical semivariogram and its exponential fit (units: target units squared, metres)."""

    lags_m: tuple[float, ...]
    """Mean pair distance in each bin."""
    gamma: tuple[float, ...]
    """Matheron estimate per bin."""
    n_pairs: tuple[int, ...]
    nugget: float
    partial_sill: float
    range_m: float
    """Practical range 3 a of the fitted exponential model."""
    resolved: bool
    """False when the fitted range sits at the edge of the searched interval (pure nugget or trend)."""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class BlockSizeChoice:
    """The spatial-CV block size and how it was chosen (stored in the model card)."""

    block_size_m: float
    rule: str
    variogram: Variogram | None
    capped: bool = False
    """True when the range-based size was reduced to keep ``n_folds`` occupied blocks."""
    target_range_m: float | None = None
    """Practical range of the target itself (for the record; the rule uses the variogram above)."""
    floor_m: float | None = None
    """The floor the rule applied (see the module docstring)."""
    range_runs_m: tuple[float, ...] = ()
    """Practical ranges of the single random-CV repetitions (the spread of the range estimate)."""

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "block_size_m": self.block_size_m,
            "rule": self.rule,
            "capped": self.capped,
            "target_range_m": self.target_range_m,
            "floor_m": self.floor_m,
            "range_runs_m": list(self.range_runs_m),
        }
        if self.variogram is not None:
            v = self.variogram
            out.update(
                range_m=v.range_m,
                nugget=v.nugget,
                partial_sill=v.partial_sill,
                range_resolved=v.resolved,
                variogram={"lags_m": list(v.lags_m), "gamma": list(v.gamma), "n_pairs": list(v.n_pairs)},
            )
        return out


def estimate_variogram(x: np.ndarray, y: np.ndarray, z: np.ndarray, *, n_bins: int = 20, seed: int = 0) -> Variogram:
    """Empirical semivariogram of ``z`` at ``(x, y)`` (metres) and its exponential fit.

    Lags reach a third of the bounding-box diagonal; at most ``MAX_POINTS`` points (a seeded
    subset) are used. A partial sill under 5 % of the sill is pure nugget: range 0, unresolved.
    """
    x, y, z = (np.asarray(v, dtype=float) for v in (x, y, z))
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(z)
    x, y, z = x[ok], y[ok], z[ok]
    if x.size < 10:
        raise ModelError(f"A variogram needs at least 10 located samples, got {x.size}; set model.cv_block_size_m.")
    if x.size > MAX_POINTS:
        keep = np.random.default_rng(seed).choice(x.size, MAX_POINTS, replace=False)
        x, y, z = x[keep], y[keep], z[keep]
    top = math.hypot(float(np.ptp(x)), float(np.ptp(y))) / 3.0
    if not top > 0:
        raise ModelError("All samples are at the same location; a variogram cannot be estimated. Set model.cv_block_size_m.")
    try:
        emp = empirical_variogram(x, y, z, n_bins=n_bins, max_lag_m=top, min_pairs=1)
        fit = fit_exponential(emp, max_range_factor=1.0)
    except VariogramError as exc:
        raise ModelError(f"{exc}. Set model.cv_block_size_m explicitly.") from exc
    pure_nugget = fit.partial_sill <= 0.05 * fit.sill
    return Variogram(
        lags_m=tuple(float(v) for v in emp.lag_m),
        gamma=tuple(float(v) for v in emp.gamma),
        n_pairs=tuple(int(v) for v in emp.n_pairs),
        nugget=fit.sill if pure_nugget else fit.nugget,
        partial_sill=0.0 if pure_nugget else fit.partial_sill,
        range_m=0.0 if pure_nugget else 3.0 * fit.range_m,
        resolved=not (pure_nugget or fit.range_at_bound),
    )


def _smallest_fold(x: np.ndarray, y: np.ndarray, size: float, n_folds: int) -> int:
    """Points in the smallest fold when blocks of ``size`` are dealt to ``n_folds`` balanced folds (0 if impossible)."""
    groups = spatial_blocks(x, y, block_size_m=size)
    if np.unique(groups).size < n_folds:
        return 0
    return int(np.bincount(balanced_block_folds(groups, n_folds, seed=0), minlength=n_folds).min())


def balanced_block_size(x: np.ndarray, y: np.ndarray, n_folds: int, start_m: float) -> float:
    """``start_m``, or the first smaller size (dividing by 1.1, rounded down to 10 m while above 10 m) whose blocks
    deal into ``n_folds`` folds the smallest of which holds at least half of ``n / n_folds`` points.

    Balance is not monotone in the block size (the grid's alignment changes), so the size actually used is
    checked, not a cap computed from above.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    need = max(1, int(0.5 * x.size / n_folds))
    size = float(start_m)
    while size > 1.0 and _smallest_fold(x, y, size, n_folds) < need:
        smaller = size / 1.1
        size = math.floor(smaller / 10.0) * 10.0 if smaller > 20.0 else smaller
    return size


def block_floor(x: np.ndarray, y: np.ndarray, min_block_m: float) -> float:
    """max(2 x median nearest-neighbour spacing, min(``min_block_m``, sampled extent / 3)) in metres."""
    from scipy.spatial import cKDTree

    pts = np.column_stack([np.asarray(x, dtype=float), np.asarray(y, dtype=float)])
    extent = max(float(np.ptp(pts[:, 0])), float(np.ptp(pts[:, 1])))
    spacing = 0.0
    if len(pts) > 1:
        d, _ = cKDTree(pts).query(pts, k=2)
        spacing = float(np.median(d[:, 1]))
    return max(2.0 * spacing, min(min_block_m, extent / 3.0))


def choose_block_size(
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    *,
    n_folds: int,
    min_block_m: float = MIN_BLOCK_M,
    seed: int = 0,
    what: str = "the target",
    runs: tuple[np.ndarray, ...] = (),
) -> BlockSizeChoice:
    """Block size for spatial CV from the autocorrelation range of ``z`` (see the module docstring);
    ``what`` names ``z`` in the recorded rule; ``runs`` are the single repetitions ``z`` averages (their
    ranges are recorded as the spread of the estimate)."""
    x, y, z = (np.asarray(v, dtype=float) for v in (x, y, z))
    vg = estimate_variogram(x, y, z, seed=seed)
    spread: list[float] = []
    for r in runs:
        try:
            spread.append(estimate_variogram(x, y, r, seed=seed).range_m)
        except ModelError:
            continue
    # An unresolved fit is either no structure (range 0: the floor applies) or a range beyond the
    # cutoff (the fit returns 3x the largest lag: the cap below applies).
    floor = block_floor(x, y, min_block_m)
    wanted = math.ceil(max(vg.range_m, floor) / 10.0) * 10.0
    size = balanced_block_size(x, y, n_folds, wanted)
    capped = size < wanted
    rule = (
        f"max(practical range of an exponential variogram of {what}, floor {floor:,.0f} m = max(2 x sample "
        f"spacing, min({min_block_m:g} m, extent / 3))), rounded up to 10 m, reduced until {n_folds} size-balanced "
        "folds of whole blocks remain (Roberts et al. 2017; Valavi et al. 2019)"
    )
    return BlockSizeChoice(
        block_size_m=float(size), rule=rule, variogram=vg, capped=capped, floor_m=float(floor),
        range_runs_m=tuple(float(v) for v in spread),
    )  # fmt: skip
