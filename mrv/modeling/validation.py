"""Spatial block cross-validation and the accuracy metrics verifiers ask for.

Random K-fold on spatially autocorrelated samples gives optimistic accuracy (Roberts et al. 2017,
Ecography 40:913-929; Wadoux et al. 2021, Ecol. Model. 457:109692). Folds here hold out whole
square blocks of ``block_size_m`` (``model.cv_design: blocks``), or follow kNNDM (``knndm``).

kNNDM (Linnenbrink et al. 2024, Geosci. Model Dev. 17:5897-5912, Sect. 2.2; after NNDM, Mila et al. 2022,
Methods Ecol. Evol. 13:1304-1316): a CV estimates map accuracy when the distances from held-out sites to
the nearest training site are distributed like the distances from the prediction points (the field
pixels) to the nearest site. The sample locations are clustered by k-means into q clusters, q on a grid
from ``n_folds`` to the number of locations (q = locations: random K-fold), the clusters are dealt into
``n_folds`` folds of balanced size (:func:`balanced_block_folds`; a candidate whose largest fold holds
more than ``max_fold_share`` of the sites, and more than a balanced deal would, is skipped: CAST's
``maxp``), and the q whose held-out-to-training nearest-neighbour distances G*_j have the smallest
Wasserstein-1 distance W to the prediction-to-sample distances G_ij is used (:func:`knndm_folds`). Sites
closer than ``location_tol_m`` (a re-measured site and its revisit) are one location and always share a
fold: otherwise the revisit in the training folds is a distance-0 neighbour no map pixel has.

Measured on generated regions (``benchmarks/validity.py`` regions, both rounds' lab sites; 5 %/50 %/95 %
of the nearest-neighbour distance, m): field pixels to sites 22/82-86/175-184 (2 x 2 km) and 34/130/275-285
(5 x 5 km); held out by 500 m blocks 67-97/233-267/472-596 and 101-111/283-284/499-534; kNNDM chose random
K-fold over locations in every region (q = number of locations; W 9-42 m against 130-229 m for the blocks),
held-out distances 16-35/103-106/218-240 and 45-48/158-172/303-324.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.model_selection import KFold

from mrv.errors import ModelError

__all__ = [
    "KnndmChoice",
    "Metrics",
    "balanced_block_folds",
    "cv_nn_distances",
    "domain_points",
    "fold_ids",
    "fold_indices",
    "fold_sizes",
    "folds_from_ids",
    "knndm_folds",
    "lins_ccc",
    "metrics",
    "nn_distances",
    "sample_locations",
    "spatial_blocks",
]

#: Sites closer than this (m) are one location for kNNDM (a revisit re-located by GPS).
LOCATION_TOL_M = 10.0
#: Candidate cluster counts q of kNNDM (log-spaced from n_folds to the number of locations).
KNNDM_CANDIDATES = 20
#: kNNDM skips a candidate whose largest fold holds more than this share of the sites (CAST's maxp).
KNNDM_MAX_FOLD_SHARE = 0.5


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
    return folds_from_ids(fold, n_folds)


def folds_from_ids(fold: np.ndarray, n_folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train/test index pairs of fold ids 0..n_folds-1."""
    fold = np.asarray(fold)
    return [(np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in range(n_folds)]


def fold_ids(folds: list[tuple[np.ndarray, np.ndarray]], n: int) -> np.ndarray:
    """Fold id of each of ``n`` points from train/test index pairs (-1 where no fold holds it out); the inverse
    of :func:`folds_from_ids`."""
    fold = np.full(n, -1, dtype=np.int64)
    for k, (_, te) in enumerate(folds):
        fold[te] = k
    return fold


def nn_distances(points: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Distance (m) from each of ``points`` (n x 2) to its nearest point of ``ref`` (m x 2)."""
    from scipy.spatial import cKDTree

    d, _ = cKDTree(np.asarray(ref, dtype=float)).query(np.asarray(points, dtype=float), k=1)
    return np.asarray(d, dtype=float)


def cv_nn_distances(xy: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """G*_j: distance (m) from each site to the nearest site of another fold (its nearest training site when its
    fold is held out)."""
    xy, fold = np.asarray(xy, dtype=float), np.asarray(fold)
    out = np.full(len(xy), np.inf)
    for k in np.unique(fold):
        held = fold == k
        if (~held).any():
            out[held] = nn_distances(xy[held], xy[~held])
    return out


def sample_locations(xy: np.ndarray, *, tol_m: float = LOCATION_TOL_M) -> np.ndarray:
    """Location id (0..n_loc-1) of each site: sites linked by chains of distances < ``tol_m`` share one."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    xy = np.asarray(xy, dtype=float)
    pairs = cKDTree(xy).query_pairs(r=tol_m, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(xy), len(xy)))
    _, ids = connected_components(graph, directed=False)
    return np.asarray(ids, dtype=np.int64)


def domain_points(xy: np.ndarray, *, n: int = 2000) -> np.ndarray:
    """About ``n`` points on a regular square grid over the convex hull of ``xy`` (m): the prediction area when
    no prediction points are given (CAST's ``knndm(modeldomain=)`` samples its domain regularly the same way)."""
    import shapely

    hull = shapely.MultiPoint(np.asarray(xy, dtype=float)).convex_hull
    if hull.area <= 0:
        return np.asarray(xy, dtype=float).reshape(-1, 2)
    step = float(np.sqrt(hull.area / n))
    minx, miny, maxx, maxy = hull.bounds
    gx, gy = np.meshgrid(np.arange(minx + step / 2, maxx, step), np.arange(miny + step / 2, maxy, step))
    pts = np.column_stack([gx.ravel(), gy.ravel()])
    return pts[shapely.contains_xy(hull, pts[:, 0], pts[:, 1])]


@dataclass(frozen=True)
class KnndmChoice:
    """The kNNDM fold design (Linnenbrink et al. 2024) and the distance distributions it matched (metres)."""

    n_clusters: int
    """Chosen number q of k-means clusters of the sample locations (= ``n_locations``: random K-fold)."""
    n_locations: int
    wasserstein_m: float
    """W1 distance between the ECDFs of G*_j (chosen folds) and G_ij (prediction points to sites)."""
    candidates: tuple[tuple[int, float], ...]
    """(q, W in m) of every candidate tried (skipped candidates are left out)."""
    prediction_nnd_m: tuple[float, ...]
    """Quantiles 0.05, 0.25, 0.5, 0.75, 0.95 of G_ij."""
    cv_nnd_m: tuple[float, ...]
    """The same quantiles of G*_j under the chosen folds."""
    n_prediction_points: int

    @property
    def random(self) -> bool:
        return self.n_clusters >= self.n_locations

    def to_dict(self) -> dict[str, object]:
        return {
            "method": "kNNDM (Linnenbrink et al. 2024, GMD 17:5897-5912): k-means clusters of the sample locations "
            "dealt into balanced folds; q with the smallest Wasserstein distance between the held-out-to-training "
            "and the prediction-to-sample nearest-neighbour distance ECDFs",
            "n_clusters": self.n_clusters, "n_locations": self.n_locations, "random_cv": self.random,
            "wasserstein_m": self.wasserstein_m,
            "candidates": [{"n_clusters": q, "wasserstein_m": w} for q, w in self.candidates],
            "nnd_quantiles": [0.05, 0.25, 0.5, 0.75, 0.95],
            "prediction_nnd_m": list(self.prediction_nnd_m), "cv_nnd_m": list(self.cv_nnd_m),
            "n_prediction_points": self.n_prediction_points,
        }  # fmt: skip


NND_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def _quantiles(d: np.ndarray) -> tuple[float, ...]:
    return tuple(float(v) for v in np.quantile(d, NND_QUANTILES))


def _candidate_counts(n_folds: int, n_locations: int, n_candidates: int) -> list[int]:
    grid = np.exp(np.linspace(np.log(n_folds), np.log(n_locations), n_candidates))
    return sorted({int(round(v)) for v in grid} | {n_folds, n_locations})


def _cluster_folds(loc_xy: np.ndarray, weight: np.ndarray, q: int, n_folds: int, seed: int) -> np.ndarray:
    """Fold of each location: ``q`` k-means clusters (every location its own at q = n_locations, dealt randomly)
    dealt to ``n_folds`` balanced folds by site count."""
    from sklearn.cluster import KMeans

    n_loc = len(loc_xy)
    if q >= n_loc:
        cluster = np.random.default_rng(seed).permutation(n_loc)
    else:
        km = KMeans(n_clusters=q, n_init=4, random_state=seed).fit(loc_xy)
        cluster = np.asarray(km.labels_, dtype=np.int64)
    per_site = np.repeat(cluster, weight)  # a cluster weighs as many sites as its locations hold
    fold_of_cluster = np.empty(int(cluster.max()) + 1, dtype=np.int64)
    fold_of_cluster[per_site] = balanced_block_folds(per_site, n_folds, seed=seed)
    return fold_of_cluster[cluster]


def knndm_folds(
    x: np.ndarray,
    y: np.ndarray,
    pred_xy: np.ndarray,
    *,
    n_folds: int,
    seed: int,
    n_candidates: int = KNNDM_CANDIDATES,
    max_fold_share: float = KNNDM_MAX_FOLD_SHARE,
    location_tol_m: float = LOCATION_TOL_M,
) -> tuple[np.ndarray, KnndmChoice]:
    """Fold id (0..n_folds-1) of each site under kNNDM and the choice record (see the module docstring).

    ``pred_xy`` (m x 2, metres, the sites' CRS) are the prediction points, e.g. a random sample of field pixels.
    """
    from scipy.stats import wasserstein_distance

    xy = np.column_stack([np.asarray(x, dtype=float), np.asarray(y, dtype=float)])
    pred_xy = np.asarray(pred_xy, dtype=float).reshape(-1, 2)
    if len(pred_xy) == 0:
        raise ModelError("kNNDM needs prediction points (field pixels); got none. Check region.fields, or set "
                         "model.cv_design: blocks.")  # fmt: skip
    loc = sample_locations(xy, tol_m=location_tol_m)
    n_loc = int(loc.max()) + 1
    if n_loc < n_folds:
        raise ModelError(
            f"kNNDM needs at least {n_folds} distinct sample locations for {n_folds} folds, got {n_loc}; "
            "set fewer model.cv_folds."
        )
    counts = np.bincount(loc, minlength=n_loc)
    loc_xy = np.column_stack([np.bincount(loc, weights=xy[:, i]) / counts for i in (0, 1)])
    g_ij = nn_distances(pred_xy, xy)
    tried: list[tuple[int, float]] = []
    best: tuple[float, int, np.ndarray] | None = None
    # a balanced deal always passes: its largest fold exceeds n / n_folds by at most one location (Graham 1969)
    limit = max(max_fold_share * len(xy), len(xy) / n_folds + counts.max())
    for q in _candidate_counts(n_folds, n_loc, n_candidates):
        fold = _cluster_folds(loc_xy, counts, q, n_folds, seed)[loc]
        if np.bincount(fold, minlength=n_folds).max() > limit:
            continue
        w = float(wasserstein_distance(cv_nn_distances(xy, fold), g_ij))
        tried.append((q, w))
        if best is None or w < best[0]:
            best = (w, q, fold)
    if best is None:
        raise ModelError(
            f"kNNDM found no design whose folds each hold at most {max_fold_share:.0%} of the sites; "
            "set model.cv_design: blocks."
        )
    w, q, fold = best
    choice = KnndmChoice(
        n_clusters=q, n_locations=n_loc, wasserstein_m=w, candidates=tuple(tried),
        prediction_nnd_m=_quantiles(g_ij), cv_nnd_m=_quantiles(cv_nn_distances(xy, fold)),
        n_prediction_points=len(pred_xy),
    )  # fmt: skip
    return fold, choice


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
