"""Fit the SOC model, cross-validate it spatially and calibrate its intervals.

Any model kind of :func:`mrv.modeling.model.fit_estimator` goes through the same steps: random CV
(shown for comparison; the per-point mean of its out-of-fold residuals over ``RANGE_REPEATS`` seeded
repetitions gives the autocorrelation range), spatial CV (kNNDM folds, or square blocks sized from that
range with ``cv_block_size_m: auto``; see "CV design" below), cross-conformal metrics, the CQR margin from
the spatial out-of-fold predictions, final fit.

Source-aware calibration: the maps predict the *lab-measured* stock. Crowd sites still train the
model (with their inverse-variance weights, after a bias correction against nearby lab sites, see
:func:`crowd_bias`), but when the table has a ``source`` column and at least ``MIN_LAB_CALIBRATION``
lab sites, the CQR margin and the headline CV metrics come from lab sites only, so crowd noise does
not widen (or certify) lab intervals (split/Mondrian-style conditioning on the calibration
population: Vovk, Gammerman & Shafer 2005, Sect. 4.5; Romano et al. 2019). Metrics of every source
are reported beside them, and coverage by decile of the observed stock (:func:`coverage_by_decile`).

Coverage across the stock range (issue 13.4): the maps' interval joins the pooled CQR interval with the
label-conditional (Mondrian) CQR set over deciles of the observed stock (:mod:`mrv.modeling.conformal`),
so it keeps >= 90 % overall and targets >= 85 % within every decile; the one-margin interval is
reported beside it (``calibration.single_margin``).

CV design (``model.cv_design``): ``knndm`` (default) takes the folds of
:func:`mrv.modeling.validation.knndm_folds`, matched to the distances from the prediction points
(``prediction_xy``: field pixels) to the sites; ``blocks`` holds out square blocks of the chosen size. Either
way the same folds give the spatial-CV metrics, the out-of-fold residuals and so the conformal margins;
``calibration.cv_design`` on the card records the design, kNNDM's cluster count and the Wasserstein distance
of both designs to the prediction distances. Decided on generated truth (``benchmarks/validity.py`` regions,
both designs on the same regions): with kNNDM every target of issue 13 holds on 20 + 8 small (2 x 2 km) and
16 + 8 default (5 x 5 km) regions, the lowest CV decile 0.891 / 0.847 (blocks 0.745, missed / 0.851), while
the maps' 90 % intervals still cover 0.966 / 0.943 of the true pixels (blocks 0.987 / 0.954) at a mean width
of 44.6 / 47.8 t C/ha (blocks 55.7 / 50.5). One cost: with 120 crowd sites beside 180 lab sites
(tests/test_calibration_sources.py regions) the lab-calibrated intervals are 18 % (seed 0) and 4 % (seed 1)
wider than a lab-only model's under kNNDM, because the lab-only baseline narrows (34.8 against 56.7 t C/ha
under blocks, seed 0) while the mixed width stays about the same (41.1 against 39.6): crowd noise in the
forest's leaves, which blocks hid behind their extrapolation error.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from mrv.config import ModelConfig
from mrv.errors import ModelError
from mrv.fsio import sha256_bytes
from mrv.modeling.conformal import (
    MIN_BAND_POINTS,
    N_BANDS,
    LabelConditionalMargins,
    band_confidence,
    band_count,
    banded_interval,
    fit_label_conditional,
    with_bands,
)
from mrv.modeling.model import (
    GBMQuantileModel,
    SOCModel,
    conformal_margin,
    conformal_rank,
    fit_estimator,
)
from mrv.modeling.validation import (
    Metrics,
    cv_nn_distances,
    domain_points,
    fold_ids,
    fold_indices,
    fold_sizes,
    folds_from_ids,
    knndm_folds,
    metrics,
    nn_distances,
)
from mrv.modeling.variogram import BlockSizeChoice, choose_block_size, estimate_variogram

__all__ = [
    "CrowdBias",
    "TrainingResult",
    "coverage_by_decile",
    "cross_validated_intervals",
    "crowd_bias",
    "cv_block_size",
    "fit_bands",
    "sample_weights",
    "spatial_folds",
    "train",
]

MIN_TRAINING_SAMPLES = 20
#: Random-CV repetitions whose mean residual gives the autocorrelation range (and its spread).
RANGE_REPEATS = 3
#: Lab sites needed to calibrate on lab sites alone; below it every source calibrates (recorded).
MIN_LAB_CALIBRATION = 20
#: Radius (m) within which crowd sites are compared with lab sites of the same round for their bias.
CROWD_BIAS_RADIUS_M = 300.0
#: Crowd sites with a lab neighbour needed before the crowd bias is corrected (else only reported).
MIN_CROWD_BIAS_PAIRS = 10


@dataclass(frozen=True)
class TrainingResult:
    model: SOCModel | GBMQuantileModel
    spatial_cv: Metrics
    """Held-out accuracy over the spatial folds (``model.cv_design``), intervals calibrated without the held-out fold."""
    random_cv: Metrics
    """Random K-fold: optimistic under spatial autocorrelation, shown only beside ``spatial_cv``."""
    oof: pd.DataFrame
    """Out-of-fold predictions of the spatial CV (for error variograms)."""
    block: BlockSizeChoice
    """The spatial-CV block size and the variogram it came from."""
    calibration: dict[str, object] = field(default_factory=dict)
    """Which sites set the margin, margins per source, the crowd bias and the conformal rank."""
    spatial_cv_by_source: dict[str, Metrics] = field(default_factory=dict)
    coverage_by_decile: list[dict[str, float]] = field(default_factory=list)
    """Cross-conformal coverage of the spatial CV by decile of the observed (calibration-source) stock."""
    fold_sizes: list[int] = field(default_factory=list)


def sample_weights(sd: np.ndarray, *, process_sd: float) -> np.ndarray:
    """Inverse-variance weights 1 / (process_sd^2 + sd_i^2), scaled to mean 1.

    Raises :class:`ModelError` when an SD is missing, negative or not finite (scikit-learn would only say
    "Input contains NaN").
    """
    sd = np.asarray(sd, dtype=float)
    bad = ~np.isfinite(sd) | (sd < 0)
    if bad.any():
        raise ModelError(
            f"{int(bad.sum())} of {sd.size} training sites have no valid stock SD (soc_stock_sd_t_ha missing, negative "
            "or not finite), first at row(s) " + ", ".join(str(int(i)) for i in np.flatnonzero(bad)[:5]) + ". "
            "Give the samples an SD (a measurement SD column, or an error model for their source under "
            "samples: error_models: in the run config), or drop those rows."
        )
    w = 1.0 / (process_sd**2 + sd**2)
    return w / w.mean()


@dataclass(frozen=True)
class CrowdBias:
    """Mean difference crowd - lab (t C/ha) between crowd sites and the lab sites near them (same round)."""

    n_pairs: int
    """Crowd sites with at least one lab site within ``radius_m``."""
    bias_t_ha: float | None
    se_t_ha: float | None
    """Standard error sd(d) / sqrt(n_pairs); lab neighbours shared between crowd sites make it optimistic."""
    radius_m: float
    corrected: bool
    """True when ``bias_t_ha`` was subtracted from the crowd stocks (and ``se_t_ha`` added to their SDs)."""

    def to_dict(self) -> dict[str, object]:
        return {
            "n_pairs": self.n_pairs, "bias_t_ha": self.bias_t_ha, "se_t_ha": self.se_t_ha, "radius_m": self.radius_m,
            "corrected": self.corrected,
            "method": "d_i = crowd stock - mean of lab stocks within radius_m in the same round; bias = mean(d), "
            "se = sd(d) / sqrt(n)",
        }  # fmt: skip


def crowd_bias(table: pd.DataFrame, *, radius_m: float = CROWD_BIAS_RADIUS_M, min_pairs: int = MIN_CROWD_BIAS_PAIRS) -> CrowdBias:
    """Bias of crowd stocks against lab stocks nearby (``source``, ``x``, ``y``, ``soc_stock_t_ha``, optional ``round``).

    Within ``radius_m`` the true stocks of a crowd site and of the lab sites around it differ only by
    short-range variation, which averages out over many pairs; the mean difference estimates the
    crowd's systematic error (e.g. coarse fragments ignored by a field kit). ``corrected`` is set
    when at least ``min_pairs`` crowd sites have a lab neighbour.
    """
    from scipy.spatial import cKDTree

    if "source" not in table.columns:
        return CrowdBias(0, None, None, radius_m, False)
    rounds = table["round"] if "round" in table.columns else pd.Series("", index=table.index)
    diffs: list[float] = []
    for r in pd.unique(rounds):
        part = table[rounds == r]
        lab = part[part["source"] == "lab"]
        crowd = part[part["source"] == "crowd"]
        if lab.empty or crowd.empty:
            continue
        tree = cKDTree(lab[["x", "y"]].to_numpy(float))
        lab_y = lab["soc_stock_t_ha"].to_numpy(float)
        for (cx, cy), cy_stock in zip(crowd[["x", "y"]].to_numpy(float), crowd["soc_stock_t_ha"].to_numpy(float), strict=True):
            near = tree.query_ball_point([cx, cy], r=radius_m)
            if near:
                diffs.append(float(cy_stock - lab_y[near].mean()))
    n = len(diffs)
    if n < 2:
        return CrowdBias(n, float(diffs[0]) if n else None, None, radius_m, False)
    d = np.asarray(diffs)
    return CrowdBias(n, float(d.mean()), float(d.std(ddof=1) / np.sqrt(n)), radius_m, n >= min_pairs)


def coverage_by_decile(obs: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> list[dict[str, float]]:
    """Share of ``obs`` inside [lower, upper] in each decile of ``obs`` (t C/ha): ``decile`` 1-10, bounds, n, picp.

    Conditional coverage across the stock range (a marginal 90 % can hide 66 % in the top tenth when
    estimates shrink toward the mean).
    """
    obs, lower, upper = (np.asarray(v, dtype=float) for v in (obs, lower, upper))
    if obs.size < 10:
        return []
    edges = np.quantile(obs, np.linspace(0, 1, 11))
    which = np.clip(np.searchsorted(edges, obs, side="right") - 1, 0, 9)
    out = []
    for k in range(10):
        m = which == k
        if not m.any():
            continue
        inside = (obs[m] >= lower[m]) & (obs[m] <= upper[m])
        out.append({
            "decile": k + 1, "observed_min_t_ha": float(edges[k]), "observed_max_t_ha": float(edges[k + 1]),
            "n": int(m.sum()), "picp": float(inside.mean()),
        })  # fmt: skip
    return out


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


def fit_bands(y: np.ndarray, lo: np.ndarray, hi: np.ndarray, confidence: float) -> LabelConditionalMargins | None:
    """Label-conditional margins by deciles of ``y`` at the per-band level of :func:`band_confidence`, or ``None``
    when fewer than two bands of :data:`mrv.modeling.conformal.MIN_BAND_POINTS` points fit (pooled margin only)."""
    if band_count(y.size, n_bands=N_BANDS, min_points=MIN_BAND_POINTS) < 2:
        return None
    return fit_label_conditional(y, lo, hi, confidence=band_confidence(confidence), min_points=MIN_BAND_POINTS)


def _cross_conformal_bounds(
    y: np.ndarray, lo: np.ndarray, hi: np.ndarray, fold_id: np.ndarray, confidence: float, calib: np.ndarray,
    *, banded: bool = True,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Each fold's interval calibrated on the *other* folds' calibration points (``calib`` mask): the maps'
    interval (:func:`mrv.modeling.conformal.banded_interval`: pooled CQR margin joined with the
    label-conditional margins by decile), or with ``banded=False`` the pooled margin alone."""
    lower, upper = lo.copy(), hi.copy()
    for k in np.unique(fold_id):
        inside = fold_id == k
        use = ~inside & calib
        if not use.any():
            use = ~inside
        q = conformal_margin(y[use], lo[use], hi[use], confidence=confidence)
        bands = fit_bands(y[use], lo[use], hi[use], confidence) if banded else None
        lower[inside], upper[inside] = banded_interval(lo[inside], hi[inside], bands, q)
    return lower, upper


def cross_validated_intervals(
    X: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    cfg: ModelConfig,
    covariates: tuple[str, ...],
) -> dict[str, np.ndarray]:
    """Out-of-fold ``mean``, raw ``lo``/``hi`` quantiles, cross-conformal ``lower``/``upper`` (each fold calibrated
    on the other folds) and the training-mean ``base`` for given folds (e.g. a data set's predefined ones)."""
    mean, lo, hi, base, fold_id = _cross_validate(X, y, w, folds, cfg, covariates)
    lower, upper = _cross_conformal_bounds(y, lo, hi, fold_id, cfg.confidence, np.ones(y.size, bool))
    return {"mean": mean, "lo": lo, "hi": hi, "lower": lower, "upper": upper, "base": base, "fold": fold_id}


def _cross_conformal_metrics(
    y: np.ndarray, mean: np.ndarray, lo: np.ndarray, hi: np.ndarray, base: np.ndarray, fold_id: np.ndarray, confidence: float
) -> Metrics:
    """Metrics where each fold's interval is widened by a margin computed from the *other* folds only."""
    lower, upper = _cross_conformal_bounds(y, lo, hi, fold_id, confidence, np.ones(y.size, bool))
    return metrics(y, mean, lower, upper, base)


def _single_margin_record(y: np.ndarray, lo: np.ndarray, hi: np.ndarray, fold_id: np.ndarray, confidence: float) -> dict[str, object]:
    """Cross-conformal check of the one-margin CQR intervals (the maps' intervals before issue 13.4), for comparison."""
    lower, upper = _cross_conformal_bounds(y, lo, hi, fold_id, confidence, np.ones(y.size, bool), banded=False)
    return {
        "cv_picp": float(np.mean((y >= lower) & (y <= upper))), "cv_mean_width_t_ha": float(np.mean(upper - lower)),
        "cv_coverage_by_decile": coverage_by_decile(y, lower, upper),
        "note": "one CQR margin for every pixel; not used by the maps (top and bottom deciles under-covered)",
    }  # fmt: skip


def cv_block_size(
    xs: np.ndarray, ys: np.ndarray, y: np.ndarray, residual: np.ndarray, cfg: ModelConfig,
    runs: tuple[np.ndarray, ...] = (),
) -> BlockSizeChoice:  # fmt: skip
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
            what=f"random-CV residuals of the model (per-point mean of {max(len(runs), 1)} repetitions)", runs=runs,
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


def spatial_folds(
    xs: np.ndarray, ys: np.ndarray, block: BlockSizeChoice, cfg: ModelConfig, prediction_xy: np.ndarray | None
) -> tuple[list[tuple[np.ndarray, np.ndarray]], dict[str, object]]:
    """The spatial-CV folds of ``cfg.cv_design`` and their record (design; with prediction points the
    Wasserstein distance, m, of each design's held-out-to-training distances to the prediction-to-site ones)."""
    from scipy.stats import wasserstein_distance

    record: dict[str, object] = {"design": cfg.cv_design}
    try:
        blocks: list[tuple[np.ndarray, np.ndarray]] | None = fold_indices(
            xs, ys, n_folds=cfg.cv_folds, block_size_m=block.block_size_m, seed=cfg.seed
        )
    except ModelError:
        if cfg.cv_design == "blocks":
            raise
        blocks = None  # too few blocks for the folds: kNNDM does not need them
    if blocks is not None and cfg.cv_design == "blocks" and (prediction_xy is None or len(prediction_xy) == 0):
        return blocks, record  # nothing to compare with (knndm_folds says what to do when it has no points)
    xy = np.column_stack([xs, ys])
    if prediction_xy is None:
        prediction_xy = domain_points(xy)
        record["prediction_points"] = "regular grid over the convex hull of the sites (no prediction points given)"
    else:
        record["prediction_points"] = "given (the pipeline: a seeded sample of field pixel centres)"
    folds = blocks
    if cfg.cv_design == "knndm":
        fold, choice = knndm_folds(xs, ys, prediction_xy, n_folds=cfg.cv_folds, seed=cfg.seed)
        record["knndm"] = choice.to_dict()
        folds = folds_from_ids(fold, cfg.cv_folds)
    record["blocks_wasserstein_m"] = None
    if blocks is not None:
        g_ij = nn_distances(prediction_xy, xy)
        g_cv = cv_nn_distances(xy, fold_ids(blocks, xs.size))
        record["blocks_wasserstein_m"] = float(wasserstein_distance(g_cv, g_ij))
    assert folds is not None  # blocks design: fold_indices raised above, or returned folds
    return folds, record


def train(
    table: pd.DataFrame, covariates: list[str], cfg: ModelConfig, *, prediction_xy: np.ndarray | None = None
) -> TrainingResult:
    """Fit on ``table`` (covariate columns, ``soc_stock_t_ha``, ``soc_stock_sd_t_ha``, ``x``, ``y``; optional
    ``source`` (lab / crowd) and ``round``). ``prediction_xy`` (m x 2, metres in the sites' CRS): points the maps
    predict (e.g. a sample of field pixel centres) for ``cv_design: knndm`` (without them: a regular grid over the
    sites' convex hull) and, with ``blocks``, for the record."""
    usable = table.dropna(subset=[*covariates, "soc_stock_t_ha"]).reset_index(drop=True)
    if len(usable) < MIN_TRAINING_SAMPLES:
        raise ModelError(
            f"Only {len(usable)} samples have both a stock and imagery covariates; at least "
            f"{MIN_TRAINING_SAMPLES} are needed. Add samples or widen the imagery period."
        )
    if "soc_stock_sd_t_ha" not in usable.columns:
        raise ModelError(
            "The training table has no soc_stock_sd_t_ha column (the stock SD of each site). Compute site stocks with "
            "mrv.samples.sites.site_stocks, which adds it from the measurement SDs and samples: error_models:."
        )
    covs = tuple(covariates)
    source = usable["source"].astype(str).to_numpy() if "source" in usable.columns else np.full(len(usable), "lab")
    bias = crowd_bias(usable)
    y = usable["soc_stock_t_ha"].to_numpy(dtype=float)
    sd = usable["soc_stock_sd_t_ha"].to_numpy(dtype=float)
    if bias.corrected and bias.bias_t_ha is not None and bias.se_t_ha is not None:
        crowd = source == "crowd"
        y = np.where(crowd, y - bias.bias_t_ha, y)
        sd = np.where(crowd, np.sqrt(sd**2 + bias.se_t_ha**2), sd)
    X = usable[covariates].to_numpy(dtype="float32")
    w = sample_weights(sd, process_sd=cfg.process_sd_t_ha)
    xs, ys = usable["x"].to_numpy(dtype=float), usable["y"].to_numpy(dtype=float)

    rnd_runs = []
    for rep in range(RANGE_REPEATS):
        rnd = fold_indices(xs, ys, n_folds=cfg.cv_folds, block_size_m=None, seed=cfg.seed + rep)
        rnd_runs.append(_cross_validate(X, y, w, rnd, cfg, covs))
    random_metrics = _cross_conformal_metrics(y, *rnd_runs[0], cfg.confidence)
    residual_runs = tuple(y - r[0] for r in rnd_runs)
    block = cv_block_size(xs, ys, y, np.mean(residual_runs, axis=0), cfg, runs=residual_runs)
    spatial, design = spatial_folds(xs, ys, block, cfg, prediction_xy)
    if cfg.cv_design != "blocks":
        block = replace(block, rule=f"{block.rule}; recorded only: the folds are {cfg.cv_design} (model.cv_design)")
    mean, lo, hi, base, fold_id = _cross_validate(X, y, w, spatial, cfg, covs)

    lab = source == "lab"
    lab_only = bool("source" in usable.columns and lab.sum() >= MIN_LAB_CALIBRATION and not lab.all())
    calib = lab if lab_only else np.ones(y.size, bool)
    lower, upper = _cross_conformal_bounds(y, lo, hi, fold_id, cfg.confidence, calib)
    spatial_metrics = metrics(y[calib], mean[calib], lower[calib], upper[calib], base[calib])
    by_source = {
        str(src): metrics(y[m], mean[m], lower[m], upper[m], base[m])
        for src in np.unique(source)
        if (m := source == src).sum() >= 2
    }
    margin = conformal_margin(y[calib], lo[calib], hi[calib], confidence=cfg.confidence)
    bands = fit_bands(y[calib], lo[calib], hi[calib], cfg.confidence)
    n_cal = int(calib.sum())
    k = conformal_rank(n_cal, cfg.confidence)
    calibration: dict[str, object] = {
        "calibration_sites": "lab" if lab_only else "all",
        "note": (
            "margin from lab sites only: the maps predict the lab-measured stock"
            if lab_only
            else ("every site calibrates (no crowd sites)" if lab.all() else
                  f"fewer than {MIN_LAB_CALIBRATION} lab sites: every source calibrates the margin")
        ),
        "n_calibration": n_cal,
        "conformal_rank_k": min(k, n_cal),
        "finite_sample_guarantee": k <= n_cal,
        "margin_t_ha": margin,
        "margin_by_source_t_ha": {
            str(src): conformal_margin(y[m], lo[m], hi[m], confidence=cfg.confidence)
            for src in np.unique(source)
            if (m := source == src).sum() >= 1
        },
        "crowd_bias": bias.to_dict(),
        "cv_design": design,
        "label_conditional": {
            "used_by_maps": bands is not None,
            **(bands.to_dict() if bands is not None else {"note": "fewer than two bands of calibration points: "
                                                                   "the pooled margin alone"}),
            "method": "maps' interval = [q_lo - Q, q_hi + Q] joined with the hull of the label-conditional (Mondrian) "
            "CQR set over deciles of the observed stock (Vovk et al. 2005, Sect. 4.5; Vovk 2012, Sect. 5)",
        },
        "single_margin": _single_margin_record(y[calib], lo[calib], hi[calib], fold_id[calib], cfg.confidence),
    }  # fmt: skip

    digest = sha256_bytes(
        pd.util.hash_pandas_object(usable[[*covariates, "soc_stock_t_ha"]], index=False).to_numpy().tobytes()
    )
    metadata: dict[str, object] = {
        "training_sha256": digest,
        "n_train": int(y.size),
        "cv_block_size_m": block.block_size_m,
        "autocorrelation_range_m": block.variogram.range_m if block.variogram is not None else None,
    }
    model = with_bands(fit_estimator(cfg, X, y, w, covs), margin_t_ha=margin, bands=bands, metadata=metadata)
    full_lo, full_hi = banded_interval(lo, hi, bands, margin)  # the final calibration applied to the OOF quantiles
    oof = pd.DataFrame(
        {"x": xs, "y": ys, "observed": y, "predicted": mean, "lower": full_lo, "upper": full_hi, "fold": fold_id}
    )
    oof["lower_cv"], oof["upper_cv"] = lower, upper  # cross-conformal: each fold calibrated without itself
    oof["lower_raw"], oof["upper_raw"] = lo, hi  # the model's uncalibrated quantiles (before any margin)
    oof["source"] = source
    if "round" in usable.columns:
        oof["round"] = usable["round"].astype(str).to_numpy()
    if "field_id" in usable.columns:
        oof["field_id"] = usable["field_id"].to_numpy()
    return TrainingResult(
        model=model, spatial_cv=spatial_metrics, random_cv=random_metrics, oof=oof, block=block,
        calibration=calibration, spatial_cv_by_source=by_source,
        coverage_by_decile=coverage_by_decile(y[calib], lower[calib], upper[calib]),
        fold_sizes=fold_sizes(spatial),
    )  # fmt: skip
