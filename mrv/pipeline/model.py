"""Model stage: train the SOC model on every round's sites, then map each round.

Two kinds of cached step, each declared beside its function:

* ``fit-model`` (:func:`model_spec`, :func:`fit_model`): reads the model section, the rounds and the
  region (round normalisation masks the field pixels; the CV is compared with, and with
  ``model.cv_design: knndm`` matched to, the distances from a seeded sample of field pixels to the sites,
  :func:`prediction_points`); its upstream steps are every round's samples and imagery mosaic.
* ``predict-maps[<round>]`` (:func:`predict_spec`, :func:`predict_round`): reads the round's name, the
  soil depth and the normalisation switch; upstream are the model and the round's mosaic. The Dask
  chunk size is read but is not part of the key: it does not change per-pixel predictions.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mrv import progress
from mrv.config import RoundConfig, RunConfig
from mrv.errors import ModelError
from mrv.fields import read_fields
from mrv.fsio import write_json
from mrv.grid import Grid
from mrv.modeling.features import apply_normalisation, normalise_stack
from mrv.modeling.model import OUTPUTS, SOCPredictor
from mrv.modeling.predict import cog_predictor, predict_map
from mrv.modeling.registry import (
    load_reference,
    read_card,
    read_reference,
    register,
    training_card,
    write_reference,
)
from mrv.modeling.train import train
from mrv.pipeline.cache import StepSpec, declare, run_cached
from mrv.pipeline.imagery import covariate_norm_stats, read_covariates
from mrv.pipeline.layout import MAP_LAYERS, MODEL_REF, RunLayout, StepPlace
from mrv.raster import sample_at_points, write_cogs_by_strips
from mrv.textsafe import write_csv

__all__ = [
    "MODEL_OUTPUTS",
    "fit_model",
    "load_model",
    "model_spec",
    "prediction_points",
    "predict_round",
    "predict_spec",
    "run_fit",
    "run_predict",
    "training_table",
]

log = logging.getLogger(__name__)

MODEL_READS = ("cfg.model", "cfg.rounds", "cfg.region")
#: Read by the model step without changing what it computes.
MODEL_UNKEYED = ("cfg.model.registry_dir", "cfg.imagery.chunk_px")
#: Field pixels sampled as the maps' prediction points for the CV design (kNNDM, Linnenbrink et al. 2024).
N_PREDICTION_POINTS = 2000
MODEL_OUTPUTS = (MODEL_REF, "model_card.json", "features.csv", "cv_predictions.csv")
PREDICT_READS = ("round.name", "cfg.depth_cm", "cfg.model.round_normalisation", "cfg.region")


def model_spec(cfg: RunConfig, layout: RunLayout) -> StepSpec:
    upstream = [p for r in cfg.rounds for p in (StepPlace("samples", r.name), StepPlace("imagery", r.name))]
    return declare(
        "fit-model", StepPlace("model"), layout=layout, roots={"cfg": cfg}, reads=MODEL_READS, upstream=upstream,
        outputs=MODEL_OUTPUTS, unkeyed=MODEL_UNKEYED,  # where the model is stored, how the stack is read
    )  # fmt: skip


def predict_spec(cfg: RunConfig, rnd: RoundConfig, layout: RunLayout) -> StepSpec:
    return declare(
        f"predict-maps[{rnd.name}]", StepPlace("maps", rnd.name), layout=layout, roots={"cfg": cfg, "round": rnd},
        reads=PREDICT_READS, unkeyed=("cfg.imagery.chunk_px",),
        upstream=[StepPlace("model"), StepPlace("imagery", rnd.name)],
        outputs=tuple(f"soc_stock_{o}.tif" for o in MAP_LAYERS),
    )  # fmt: skip


def run_fit(cfg: RunConfig, layout: RunLayout) -> tuple[StepSpec, bool]:
    spec = model_spec(cfg, layout)
    return spec, run_cached(spec, layout, lambda lay: fit_model(spec.view("cfg", cfg), lay))


def run_predict(
    cfg: RunConfig, rnd: RoundConfig, layout: RunLayout, *, client: Any | None = None
) -> tuple[StepSpec, bool]:
    spec = predict_spec(cfg, rnd, layout)
    ran = run_cached(spec, layout, lambda lay: predict_round(spec.view("cfg", cfg), spec.view("round", rnd), lay,
                                                             client=client))  # fmt: skip
    return spec, ran


def training_table(cfg: RunConfig, layout: RunLayout) -> pd.DataFrame:
    """Sites of every round with the covariates of their own round's composite."""
    parts = []
    for rnd in cfg.rounds:
        sites = pd.read_csv(layout.sites(rnd.name), keep_default_na=False, na_values=[""])
        flag = sites["qa_flag"] if "qa_flag" in sites.columns else pd.Series("", index=sites.index)
        sites = sites[flag.isna() | (flag.astype(str).str.strip() == "")]  # flagged sites stay out of training
        # only the sites' pixels are read (block by block): memory does not grow with the region
        values, names = sample_at_points(
            layout.covariates(rnd.name), sites["x"].to_numpy(float), sites["y"].to_numpy(float)
        )
        cov = pd.DataFrame(values, columns=names)
        if cfg.model.round_normalisation:  # round-invariant inputs: imagery differences must not become change
            cov = apply_normalisation(cov, covariate_norm_stats(layout, rnd.name))
        parts.append(pd.concat([sites.reset_index(drop=True).assign(round=rnd.name), cov], axis=1))
    return pd.concat(parts, ignore_index=True)


def prediction_points(cfg: RunConfig, grid: Grid, *, n: int = N_PREDICTION_POINTS) -> np.ndarray:
    """Up to ``n`` distinct pixel centres (n x 2, project CRS metres) of ``grid`` inside the region's fields,
    drawn uniformly (seeded by ``model.seed``): the points the maps predict. Empty when no field covers a pixel."""
    import shapely

    geoms = [f.geometry for f in read_fields(cfg.region.fields, crs=cfg.region.crs)]
    if not geoms:
        return np.empty((0, 2))
    union = shapely.union_all(geoms)
    x0, _, _, y1 = grid.bounds
    res = grid.resolution_m
    minx, miny, maxx, maxy = union.bounds
    c0, c1 = max(int((minx - x0) // res), 0), min(int((maxx - x0) // res) + 1, grid.shape[1])
    r0, r1 = max(int((y1 - maxy) // res), 0), min(int((y1 - miny) // res) + 1, grid.shape[0])
    if c1 <= c0 or r1 <= r0:
        return np.empty((0, 2))
    rng = np.random.default_rng(cfg.model.seed)
    found = np.empty((0, 2))
    for _ in range(20):  # rejection sampling over the fields' bounding box, never the whole raster in memory
        cols = rng.integers(c0, c1, 4 * n)
        rows = rng.integers(r0, r1, 4 * n)
        xy = np.column_stack([x0 + (cols + 0.5) * res, y1 - (rows + 0.5) * res])
        found = np.unique(np.concatenate([found, xy[shapely.contains_xy(union, xy[:, 0], xy[:, 1])]]), axis=0)
        if len(found) >= n:
            break
    return found[rng.permutation(len(found))[:n]]


def fit_model(cfg: RunConfig, layout: RunLayout) -> Path:
    """Train, cross-validate spatially and calibrate; register the model and reference it from the run.

    The model is registered under its content id in ``model.registry_dir`` (:mod:`mrv.modeling.registry`;
    default ``models/`` of the checkout or ``$MRV_MODEL_REGISTRY``). The step keeps ``model_ref.json``
    (id, registry, SHA-256 of the pickle and card) instead of a second pickle, and ``model_card.json``:
    the registry's card plus this run's CV record.
    """
    table = training_table(cfg, layout)
    stack, grid = read_covariates(layout.covariates(cfg.rounds[0].name), chunk_px=cfg.imagery.chunk_px)  # lazy
    covariates = [str(c) for c in stack["covariate"].to_numpy()]
    result = train(table, covariates, cfg.model, prediction_xy=prediction_points(cfg, grid))
    write_csv(table, layout.features)
    write_csv(result.oof, layout.cv_predictions)
    card = training_card(result)
    ref = register(result.model, card, cfg.model.registry_dir)
    write_reference(layout.model_ref, ref)
    registry = {"dir": str(ref.registry_dir), "path": str(ref.entry_dir)}
    write_json(layout.model_card, {**read_card(ref.model_id, ref.registry_dir), **card, "registry": registry},
               allow_nan=True)  # fmt: skip
    return layout.model_ref


def load_model(layout: RunLayout) -> SOCPredictor:
    """The run's model: the registry entry its reference pins (bytes checked against the reference and the card)."""
    return load_reference(read_reference(layout.model_ref))


def predict_round(cfg: RunConfig, rnd: RoundConfig, layout: RunLayout, *, client: Any | None = None) -> dict[str, Path]:
    """Predict mean, p05, p50, p95, sd and width90 (p95 - p05) maps (t C/ha) for one round with Dask.

    With a ``distributed.Client``, losing a worker mid-run can cancel the prediction: the model
    scattered to that worker is not recomputable (dask/distributed#3149). The round is then
    predicted again (up to 3 attempts) with the model scattered to the remaining workers; the
    maps do not depend on which worker computed which block.
    """
    from distributed import KilledWorker
    from distributed.client import FutureCancelledError

    model = load_model(layout)
    chunk = cfg.imagery.chunk_px
    stack, grid = read_covariates(layout.covariates(rnd.name), chunk_px=chunk)
    if cfg.model.round_normalisation:
        stack = normalise_stack(stack, covariate_norm_stats(layout, rnd.name))
    paths = layout.round_maps(rnd.name)
    quantity = {o: f"SOC stock {o}" for o in OUTPUTS} | {"width90": "90 % interval width (p95 - p05)"}
    tags = [
        {
            "quantity": quantity[name],
            "units": "t C/ha",
            "depth_cm": f"0-{cfg.depth_cm:g}",
            "round": rnd.name,
            "model_id": model.model_id,
            "crs": grid.crs,
        }
        for name in MAP_LAYERS
    ]
    attempts = 3 if client is not None else 1
    for attempt in range(1, attempts + 1):
        pred = predict_map(stack, model, client=client, chunk_px=chunk, width90=True)  # MAP_LAYERS, in order
        layers = pred.data
        try:
            # Strips of a few block rows keep every worker busy while memory stays bounded.
            with progress.track(f"predict {rnd.name}", grid.height, unit="row") as advance:
                write_cogs_by_strips(
                    [paths[o] for o in MAP_LAYERS], layers, grid, tags=tags,
                    band_names=[f"soc_stock_{o}" for o in MAP_LAYERS], strip_px=2 * chunk, on_strip=advance,
                    predictors=[cog_predictor(o) for o in MAP_LAYERS],
                )  # fmt: skip
            break
        except (FutureCancelledError, KilledWorker) as exc:
            if attempt == attempts:
                raise ModelError(
                    f"Predicting round {rnd.name} failed {attempts} times because Dask workers were lost ({exc!r}). "
                    "Check the workers' memory and logs, or unset dask.address to use a local cluster."
                ) from exc
            log.warning("round %s: Dask workers lost during prediction (%r); predicting again (%d/%d)",
                        rnd.name, exc, attempt + 1, attempts)  # fmt: skip
    return paths
