"""The steps of a regional monitoring run, from config to report inputs.

Each function takes the frozen run config plus paths, writes its outputs under the run directory
(:class:`~mrv.pipeline.layout.RunLayout`) and returns what it wrote.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import socket
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pandas as pd
import rasterio
import xarray as xr

from mrv import progress
from mrv.accounting.recompute import (
    AccountingSettings,
    compute_accounting,
    cv_points,
    estimate_error_model,
    read_round_maps,
)
from mrv.config import RoundConfig, RunConfig
from mrv.errors import ConfigError, ImageryError, ModelError
from mrv.fields import Field, field_index_raster, fields_bounds, read_fields
from mrv.grid import Grid, Tile, tiles
from mrv.imagery.composite import bare_soil_composite, covariate_stack
from mrv.imagery.dem import dem_hrefs, terrain_covariates
from mrv.imagery.guards import check_aoi_size
from mrv.imagery.local import LocalCatalogSource
from mrv.imagery.provenance import items_as_fetched
from mrv.imagery.providers import load_profile
from mrv.imagery.source import ImagerySource, SearchRequest
from mrv.imagery.stac_api import StacApiSource
from mrv.modeling.features import apply_normalisation, extract_at_points, normalise_stack
from mrv.modeling.model import OUTPUTS, SOCPredictor
from mrv.modeling.predict import predict_map
from mrv.modeling.registry import MODEL_FILE, read_card
from mrv.modeling.registry import register as register_model
from mrv.modeling.train import train
from mrv.pipeline.change_step import covariate_norm_stats, design_accounting
from mrv.pipeline.esm_step import esm_for_round
from mrv.pipeline.layout import RunLayout
from mrv.raster import mosaic_to_cog, read_raster, read_raster_lazy, write_cog, write_cogs_by_strips
from mrv.samples.formats import load_format
from mrv.samples.fusion import add_weights, source_weights
from mrv.samples.ingest import ingest
from mrv.samples.qa import (
    carry_sample_flags,
    flag_duplicates,
    flag_field_edges,
    flag_gps_accuracy,
    flag_outliers_against_lab,
    flag_position_jitter,
)
from mrv.samples.sites import site_stocks
from mrv.textsafe import write_csv

log = logging.getLogger(__name__)


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str), encoding="utf-8")
    tmp.replace(path)
    return path


def project_grid(cfg: RunConfig, fields: tuple[Field, ...] | None = None) -> Grid:
    """The grid covering the region's fields (read from the config unless given)."""
    fields = fields or read_fields(cfg.region.fields, crs=cfg.region.crs)
    return Grid.covering(
        fields_bounds(fields), crs=cfg.region.crs, resolution_m=cfg.region.resolution_m, buffer_m=cfg.region.buffer_m
    )


def make_source(cfg: RunConfig) -> ImagerySource:
    if cfg.imagery.source == "local":
        assert cfg.imagery.catalog is not None
        return LocalCatalogSource(cfg.imagery.catalog, max_items=cfg.imagery.max_items)
    if cfg.imagery.source == "stac":
        if cfg.imagery.provider:
            profile = cfg.imagery.provider_profile or load_profile(cfg.imagery.provider, config_path=cfg.source_path)
            return StacApiSource.from_profile(
                profile, collection=cfg.imagery.collection, max_items=cfg.imagery.max_items
            )
        assert cfg.imagery.url is not None
        return StacApiSource(cfg.imagery.url, collection=cfg.imagery.collection, max_items=cfg.imagery.max_items)
    if cfg.imagery.source == "sentinelhub":
        from mrv.imagery.sentinelhub_source import SentinelHubSource

        base = cfg.imagery.url or "https://services.sentinel-hub.com"
        return SentinelHubSource(base_url=base, collection_name=cfg.imagery.collection)
    raise ConfigError(f"imagery.source '{cfg.imagery.source}' is unknown; use 'local', 'stac' or 'sentinelhub'.")


def imagery_tiles(cfg: RunConfig, grid: Grid | None = None) -> tuple[Tile, ...]:
    """The tiles (``imagery.tile_px`` square) the region's imagery is composited in."""
    return tiles(grid or project_grid(cfg), cfg.imagery.tile_px)


def prepare_imagery(cfg: RunConfig, rnd: RoundConfig, layout: RunLayout) -> Path:
    """Every tile of one round (:func:`prepare_imagery_tile`), then their mosaic (:func:`mosaic_imagery`).

    The flow runs the same two steps as separate, resumable tasks fanned out over the tiles.
    """
    grid = project_grid(cfg)
    for tile in imagery_tiles(cfg, grid):
        prepare_imagery_tile(cfg, rnd, layout, tile, grid=grid)
    return mosaic_imagery(cfg, rnd, layout)


def prepare_imagery_tile(
    cfg: RunConfig, rnd: RoundConfig, layout: RunLayout, tile: Tile, *, grid: Grid | None = None
) -> Path:
    """Search, load, mask and composite one round's imagery on one tile into a covariate GeoTIFF.

    Writes ``layout.imagery_tile(round, tile)`` (covariates + ``n_bare``) and a JSON summary beside it
    (items used, items dropped with the reason). With ``imagery.dem`` the stack also gets the terrain
    covariates of :mod:`mrv.imagery.dem`, computed with a margin around the tile so that slope and
    TPI do not depend on the tiling. The composite is per pixel, so tiles share nothing else.
    """
    grid = grid or project_grid(cfg)
    check_aoi_size(grid, max_km2=cfg.imagery.max_aoi_km2, fields=str(cfg.region.fields))
    tile_grid = tile.grid(grid)
    source = make_source(cfg)
    request = SearchRequest(
        bbox_wgs84=tile_grid.bbox_wgs84(),
        start=rnd.start,
        end=rnd.end,
        max_cloud_pct=cfg.imagery.max_cloud_pct,
        collection=cfg.imagery.collection,
    )
    items = source.search(request)
    if cfg.imagery.source != "local":  # a local catalog is an input of the step already
        write_json(layout.imagery_items(rnd.name, tile.name), items_as_fetched(items))
    # The data check samples the whole region, so every tile judges a scene alike (mrv.imagery.scene_check).
    loaded = source.load(items, cfg.imagery.bands, tile_grid, chunk_px=cfg.imagery.chunk_px, check_grid=grid)
    composite = bare_soil_composite(loaded.reflectance, cfg.imagery.bands, cfg.imagery.bare_soil)
    stack = covariate_stack(composite, cfg.imagery.bands)
    try:
        # Local threads even on a Dask worker: the tile is the unit of distribution.
        with dask.config.set(scheduler="threads"):
            stack_v, n_bare_v = dask.compute(stack, composite["n_bare"])  # one pass over the imagery
    except (rasterio.errors.RasterioError, OSError) as exc:
        raise ImageryError(
            f"Reading the imagery of round {rnd.name} ({rnd.start} to {rnd.end}) from {source.name} failed while "
            f"compositing tile {tile.name}: {exc}. An asset passed the up-front probe but is damaged inside; remove "
            "or re-download that item (its path is in the message), or narrow the dates to leave it out."
        ) from exc
    values, n_bare = stack_v.to_numpy(), n_bare_v.to_numpy()
    names = [str(c) for c in stack["covariate"].to_numpy()]
    terrain_sources: list[str] = []
    if cfg.imagery.dem is not None:
        terrain = terrain_covariates(
            dem_hrefs(cfg.imagery.dem, tile_grid, source), tile_grid, tpi_radius_m=cfg.imagery.dem.tpi_radius_m
        )
        values = np.concatenate([values, terrain.values])
        names = [*names, *terrain.names]
        terrain_sources = list(terrain.sources)
    path = layout.imagery_tile(rnd.name, tile.name)
    write_cog(path, np.concatenate([values, n_bare[None].astype("float32")]), tile_grid, band_names=[*names, "n_bare"])
    write_json(
        path.with_suffix(".json"),
        {
            "tile": tile.name,
            "source": source.name,
            "items": list(loaded.items),
            "dropped": [{"item": i, "reason": r} for i, r in loaded.dropped],
            # the per-scene data check (mrv.imagery.scene_check): offsets corrected, suspicious scenes kept
            "corrected": [{"item": i, "reason": r} for i, r in loaded.corrected],
            "flagged": [{"item": i, "reason": r} for i, r in loaded.flagged],
            "covariates": names,
            "dem": terrain_sources,
            "computed_by": {"host": socket.gethostname(), "pid": os.getpid()},
        },
    )
    return path


def mosaic_imagery(cfg: RunConfig, rnd: RoundConfig, layout: RunLayout) -> Path:
    """Mosaic the round's tiles into its covariate COG and summarise them in ``imagery.json``.

    Memory holds one tile at a time; the median of bare observations over the field pixels is
    computed from per-tile counts (``n_bare`` is an integer count).
    """
    fields = read_fields(cfg.region.fields, crs=cfg.region.crs)
    grid = project_grid(cfg, fields)
    parts = [(layout.imagery_tile(rnd.name, t.name), t) for t in imagery_tiles(cfg, grid)]
    summaries = [json.loads(p.with_suffix(".json").read_text(encoding="utf-8")) for p, _ in parts]
    path = mosaic_to_cog(
        layout.covariates(rnd.name),
        parts,
        grid,
        tags={
            "round": rnd.name,
            "units": "reflectance (1) and indices (1); elevation and tpi m, slope degrees; n_bare count",
        },
    )
    counts: Counter[int] = Counter()  # n_bare value -> field pixels
    for part, tile in parts:
        on_fields = field_index_raster(fields, tile.grid(grid)) >= 0
        with rasterio.open(part) as src:
            values, n = np.unique(np.nan_to_num(src.read(src.count)[on_fields], nan=0.0), return_counts=True)
        counts.update(dict(zip(values.astype(int).tolist(), n.tolist(), strict=True)))
    n_on = sum(counts.values())
    dropped = list({d["item"]: d for s in summaries for d in s["dropped"]}.values())  # an item may span tiles
    checked = {key: _by_item(summaries, key) for key in ("corrected", "flagged")}  # judged per tile
    write_json(
        layout.imagery_summary(rnd.name),
        {
            "source": summaries[0]["source"],
            "items": list(dict.fromkeys(i for s in summaries for i in s["items"])),
            "dropped": dropped,
            "n_dropped": len(dropped),
            "corrected": checked["corrected"],
            "n_corrected": len(checked["corrected"]),
            "flagged": checked["flagged"],
            "covariates": summaries[0]["covariates"],
            "dem": list(dict.fromkeys(d for s in summaries for d in s["dem"])),
            "tiles": len(parts),
            "tile_px": cfg.imagery.tile_px,
            "bare_observations_median": median_of_counts(counts),
            "fields_without_bare_soil_pct": float(100 * counts[0] / n_on) if n_on else float("nan"),
        },
    )
    return path


def _by_item(summaries: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Entries ``{"item", "reason"}`` of the tile summaries under ``key``, one per item, with the tiles they came from."""
    merged: dict[str, dict[str, Any]] = {}
    for summary in summaries:
        for entry in summary.get(key, []):  # tile summaries written before the data check have none
            merged.setdefault(entry["item"], {**entry, "tiles": []})["tiles"].append(summary["tile"])
    return list(merged.values())


def median_of_counts(counts: Mapping[int, int]) -> float:
    """The median (as :func:`numpy.median`) of a sample given as value -> frequency; NaN when empty."""
    values = sorted(v for v, n in counts.items() if n > 0)
    cum = np.cumsum([counts[v] for v in values])
    if not values:
        return float("nan")
    n = int(cum[-1])
    lo, hi = (values[int(np.searchsorted(cum, k, side="right"))] for k in ((n - 1) // 2, n // 2))
    return (lo + hi) / 2


def read_covariates(path: Path, *, chunk_px: int | None = None) -> tuple[xr.DataArray, Grid]:
    """The covariate stack of :func:`prepare_imagery` as ``(covariate, y, x)`` (without ``n_bare``).

    With ``chunk_px`` the stack is Dask-backed and read window by window, so memory does not grow
    with the region.
    """
    arr, grid, names = read_raster(path) if chunk_px is None else read_raster_lazy(path, chunk_px=chunk_px)
    keep = [i for i, n in enumerate(names) if n != "n_bare"]
    da = xr.DataArray(
        arr[keep],
        dims=("covariate", "y", "x"),
        coords={"covariate": [names[i] for i in keep], "y": grid.y_coords(), "x": grid.x_coords()},
    )
    return da, grid


def prepare_samples(cfg: RunConfig, rnd: RoundConfig, layout: RunLayout) -> Path:
    """Ingest every sample file of a round, compute 0-depth site stocks, flag duplicates and outliers.

    Site stock SDs follow the per-source error models of ``cfg.samples``; crowd sites far from the
    lab sites around them are flagged (:func:`~mrv.samples.qa.flag_outliers_against_lab`). Flagged
    sites stay in sites.csv with their ``qa_flag`` and are left out of training. ``weight`` is each
    site's inverse-variance weight in the model (see :mod:`mrv.samples.fusion`).
    """
    grid = project_grid(cfg)
    records: list[pd.DataFrame] = []
    rejected: list[pd.DataFrame] = []
    summary: dict[str, dict[str, Any]] = {}
    for sf in rnd.samples:
        fmt = sf.format_profile or load_format(sf.format, config_path=cfg.source_path)
        res = ingest(sf.path, fmt, source=sf.source, submitter=sf.submitter, project_crs=grid.crs, region_bounds=grid.bounds)
        records.append(res.accepted)
        rej = res.rejected_frame()
        rej.insert(0, "file", sf.path.name)
        rejected.append(rej)
        entry = summary.setdefault(sf.source, {"submitted": 0, "accepted": 0, "rejected": 0, "samples": 0, "files": []})
        entry["submitted"] += res.submitted  # file lines: accepted + rejected == submitted
        entry["accepted"] += res.accepted_lines
        entry["rejected"] += len(res.rejected)
        entry["samples"] += len(res.accepted)
        entry["files"].append(sf.path.name)
    if rnd.store is not None:  # samples submitted to the store (mrv samples submit / the ingest deployment)
        from mrv.samples.store import redact_url, round_samples, store_query

        url, query = store_query(rnd.store)
        stored, _state = round_samples(url, query, project_crs=grid.crs)
        records.append(stored.drop(columns=["submission_id", "agency"]))
        for source, part in stored.groupby("source", sort=True):
            entry = summary.setdefault(str(source), {"submitted": 0, "accepted": 0, "rejected": 0, "samples": 0, "files": []})
            entry["samples"] += len(part)
            entry["from_store"] = {"database": redact_url(url), "submissions": sorted(int(i) for i in part["submission_id"].unique()),
                                   "samples": len(part), "flagged_in_store": int((part["qa_flag"] != "").sum())}  # fmt: skip
    all_records = pd.concat(records, ignore_index=True) if records else pd.DataFrame()
    samples_cfg = cfg.samples
    if len(all_records):
        all_records = flag_gps_accuracy(all_records, tolerance_m=samples_cfg.gps_tolerance_m)
        all_records = flag_position_jitter(all_records, tolerance_m=samples_cfg.gps_tolerance_m)
    sites, incomplete = (
        site_stocks(all_records, depth_cm=cfg.depth_cm, error_models=samples_cfg.error_models)
        if len(all_records)
        else (pd.DataFrame(), {})
    )
    esm_summary = None
    if cfg.stocks.method == "esm" and len(sites):  # equivalent soil mass (VM0042 v2.2 Sect. 8.2.1.6)
        sites, esm_summary = esm_for_round(cfg, rnd.name, all_records, sites, grid.bounds)
    sites = flag_duplicates(sites, tolerance_m=samples_cfg.duplicate_tolerance_m)  # starts qa_flag afresh
    if len(sites):
        sites = carry_sample_flags(sites, all_records)  # the samples' GPS flags onto their site
        if samples_cfg.field_edge_check:
            fields = read_fields(cfg.region.fields, crs=cfg.region.crs)
            sites = flag_field_edges(
                sites,
                {f.field_id: f.geometry for f in fields},
                tolerance_m=samples_cfg.gps_tolerance_m,
                pixel_size_m=cfg.region.resolution_m,
            )
    sites = flag_outliers_against_lab(
        sites,
        radius_m=samples_cfg.outlier_radius_m,
        k=samples_cfg.outlier_k,
        min_lab_sites=samples_cfg.outlier_min_lab_sites,
    )
    weights = {}
    if len(sites):
        sites = add_weights(sites, process_sd_t_ha=cfg.model.process_sd_t_ha)
        weights = source_weights(sites, process_sd_t_ha=cfg.model.process_sd_t_ha)
    layout.work(rnd.name).mkdir(parents=True, exist_ok=True)
    write_csv(sites, layout.sites(rnd.name))
    no_rejections = pd.DataFrame(columns=["file", "row", "column", "value", "reason"])  # a round fed by the store only
    write_csv(pd.concat(rejected, ignore_index=True) if rejected else no_rejections, layout.rejected(rnd.name))
    for source, entry in summary.items():
        entry["sites"] = int((sites["source"] == source).sum()) if len(sites) else 0
        entry["flagged"] = int(((sites["source"] == source) & (sites["qa_flag"] != "")).sum()) if len(sites) else 0
        if source in weights:
            w = weights[source]
            entry.update(weight_share=w.weight_share, effective_n=w.effective_n, median_stock_sd_t_ha=w.median_sd_t_ha)
        model = samples_cfg.error_models.get(source)
        if model is not None:
            entry["error_model"] = {"soc_rel_sd": model.soc_rel_sd, "bd_sd_g_cm3": model.bd_sd_g_cm3}
    summary["incomplete_sites"] = incomplete  # type: ignore[assignment]
    if esm_summary is not None:
        summary["stocks_esm"] = esm_summary
    write_json(layout.samples_summary(rnd.name), summary)
    return layout.sites(rnd.name)


def training_table(cfg: RunConfig, layout: RunLayout) -> pd.DataFrame:
    """Sites of every round with the covariates of their own round's composite."""
    parts = []
    for rnd in cfg.rounds:
        sites = pd.read_csv(layout.sites(rnd.name), keep_default_na=False, na_values=[""])
        flag = sites["qa_flag"] if "qa_flag" in sites.columns else pd.Series("", index=sites.index)
        sites = sites[flag.isna() | (flag.astype(str).str.strip() == "")]  # flagged sites stay out of training
        stack, _ = read_covariates(layout.covariates(rnd.name))
        cov = extract_at_points(stack, sites["x"].to_numpy(float), sites["y"].to_numpy(float))
        if cfg.model.round_normalisation:  # round-invariant inputs: imagery differences must not become change
            cov = apply_normalisation(cov, covariate_norm_stats(cfg, layout, rnd.name))
        parts.append(pd.concat([sites.reset_index(drop=True).assign(round=rnd.name), cov], axis=1))
    return pd.concat(parts, ignore_index=True)


def fit_model(cfg: RunConfig, layout: RunLayout) -> Path:
    """Train, cross-validate spatially and calibrate; register the model and keep a copy in the run directory.

    The model is registered under its content id in ``model.registry_dir`` (default
    ``<output_dir>/models``, see :mod:`mrv.modeling.registry`). ``model/model.pkl`` is a byte-identical
    copy and ``model/model_card.json`` the registry's card plus this run's CV record, so the run
    directory and its manifest stay self-contained.
    """
    table = training_table(cfg, layout)
    stack, _ = read_covariates(layout.covariates(cfg.rounds[0].name))
    covariates = [str(c) for c in stack["covariate"].to_numpy()]
    result = train(table, covariates, cfg.model)
    model = result.model
    d = layout.model_dir
    d.mkdir(parents=True, exist_ok=True)
    write_csv(table, d / "features.csv")
    write_csv(result.oof, d / "cv_predictions.csv")
    block = result.block.to_dict()
    card = {
        "kind": MODEL_KIND_NAMES[model.kind],
        "n_train": model.metadata["n_train"],
        "params": {k: v for k, v in model.params().items() if isinstance(v, int | float | str)},
        "calibration": {
            "method": "conformalized quantile regression (spatial CV)", "margin_t_ha": model.margin_t_ha,
            **result.calibration,
        },  # fmt: skip
        "cv_block_size_m": result.block.block_size_m,
        "autocorrelation_range_m": block.get("range_m"),
        "cv_block_rule": result.block.rule,
        "cv_block": block,
        "cv": {"scheme": "spatial_block", "block_size_m": result.block.block_size_m, **result.spatial_cv.to_dict()},
        "cv_random": {"scheme": "random_kfold (optimistic)", **result.random_cv.to_dict()},
        "cv_by_source": {src: m.to_dict() for src, m in result.spatial_cv_by_source.items()},
        "cv_coverage_by_decile": result.coverage_by_decile,
        "cv_fold_sizes": result.fold_sizes,
    }
    registry_dir = cfg.model.registry_dir or layout.root / "models"
    where = register_model(model, card, registry_dir=registry_dir)
    stored = read_card(model.model_id, registry_dir=registry_dir)
    blob = (where / MODEL_FILE).read_bytes()
    tmp = d / "model.pkl.tmp"
    tmp.write_bytes(blob)
    tmp.replace(d / "model.pkl")
    write_json(d / "model_card.json", {**stored, **card, "registry": {"dir": str(registry_dir), "path": str(where)}})
    return d / "model.pkl"


MODEL_KIND_NAMES = {"qrf": "quantile_regression_forest", "gbm_quantile": "quantile_gradient_boosting"}


def load_model(path: Path) -> SOCPredictor:
    """The run's model; its bytes must match the SHA-256 in ``model_card.json`` beside it when that records one."""
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"Cannot read the model {path}: {exc}. Re-run the training step.") from exc
    card_path = path.with_name("model_card.json")
    expected = None
    if card_path.is_file():
        try:
            expected = json.loads(card_path.read_text(encoding="utf-8")).get("model_sha256")
        except (OSError, ValueError, AttributeError) as exc:
            raise ModelError(f"Cannot read the model card {card_path}: {exc}. Re-run the training step.") from exc
    actual = hashlib.sha256(blob).hexdigest()
    if expected is not None and actual != expected:
        raise ModelError(
            f"{path} does not match its model card: SHA-256 {actual} but {card_path.name} records {expected}. "
            "The file was modified after training; re-run the training step or copy it back from the registry."
        )
    try:
        model = pickle.loads(blob)  # bytes checked against the card above when it has a hash
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
        raise ModelError(f"Cannot load the model {path}: {exc}. Re-run the training step.") from exc
    if not isinstance(model, SOCPredictor):
        raise ModelError(f"{path} holds a {type(model).__name__}, not an SOC model; re-run the training step.")
    return model


def predict_round(cfg: RunConfig, rnd: RoundConfig, layout: RunLayout, *, client: Any | None = None) -> dict[str, Path]:
    """Predict mean, p05, p50, p95 and sd maps (t C/ha) for one round with Dask.

    With a ``distributed.Client``, losing a worker mid-run can cancel the prediction: the model
    scattered to that worker is not recomputable (dask/distributed#3149). The round is then
    predicted again (up to 3 attempts) with the model scattered to the remaining workers; the
    maps do not depend on which worker computed which block.
    """
    from distributed import KilledWorker
    from distributed.client import FutureCancelledError

    model = load_model(layout.model_dir / "model.pkl")
    chunk = cfg.imagery.chunk_px
    stack, grid = read_covariates(layout.covariates(rnd.name), chunk_px=chunk)
    if cfg.model.round_normalisation:
        stack = normalise_stack(stack, covariate_norm_stats(cfg, layout, rnd.name))
    paths = layout.round_maps(rnd.name)
    tags = [
        {
            "quantity": f"SOC stock {name}",
            "units": "t C/ha",
            "depth_cm": f"0-{cfg.depth_cm:g}",
            "round": rnd.name,
            "model_id": model.model_id,
            "crs": grid.crs,
        }
        for name in OUTPUTS
    ]
    attempts = 3 if client is not None else 1
    for attempt in range(1, attempts + 1):
        pred = predict_map(stack, model, client=client, chunk_px=chunk)
        try:
            # Strips of a few block rows keep every worker busy while memory stays bounded.
            with progress.track(f"predict {rnd.name}", grid.height, unit="row") as advance:
                write_cogs_by_strips(
                    [paths[o] for o in OUTPUTS], pred.data, grid, tags=tags,
                    band_names=[f"soc_stock_{o}" for o in OUTPUTS], strip_px=2 * chunk, on_strip=advance,
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


def account(cfg: RunConfig, layout: RunLayout) -> Path:
    """Field and project stocks per round, change and tCO2e with Monte Carlo 90 % intervals.

    The error correlation comes from the variogram of the cross-validation errors when
    ``accounting.error_range_m`` is ``auto`` (:mod:`mrv.accounting.variogram`). Every setting and input
    is recorded so that ``mrv report verify`` can recompute the numbers (:mod:`mrv.accounting.recompute`).
    """
    fields = read_fields(cfg.region.fields, crs=cfg.region.crs)
    map_paths = {rnd.name: {k: layout.round_maps(rnd.name)[k] for k in ("mean", "sd")} for rnd in cfg.rounds}
    maps, grid = read_round_maps(map_paths)
    zones = field_index_raster(fields, grid)
    acc = cfg.accounting
    cv_csv = layout.model_dir / "cv_predictions.csv"
    oof = cv_points(cv_csv, layout.model_dir / "features.csv") if cv_csv.is_file() else None
    em = estimate_error_model(
        oof,
        interval_confidence=cfg.model.confidence,
        range_m=acc.error_range_m,
        round_correlation=acc.round_error_correlation,
        first_round=cfg.rounds[0].name,
        last_round=cfg.rounds[-1].name,
    )
    settings = AccountingSettings(
        n_simulations=acc.n_simulations,
        seed=acc.seed,
        confidence=acc.confidence,
        range_m=em.range_m,
        nugget_share=em.nugget_share,
        round_correlation=em.round_correlation,
    )
    project, out_fields = compute_accounting(fields, maps, zones, pixel_m=grid.resolution_m, settings=settings)
    design = design_accounting(cfg, layout, fields, maps, zones, grid)
    return write_json(
        layout.accounting,
        {
            "method": "Monte Carlo with spatially correlated prediction errors",
            "n_simulations": acc.n_simulations,
            "error_range_m": em.range_m,
            "error_range_source": em.range_source,
            "nugget_share": em.nugget_share,
            "round_error_correlation": em.round_correlation,
            "round_error_correlation_source": em.round_correlation_source,
            "confidence": acc.confidence,
            "settings": settings.to_dict(),
            "error_model": {
                "range_source": em.range_source,
                "interval_confidence": cfg.model.confidence,
                "variogram": em.variogram.to_dict() if em.variogram is not None else None,
                "round_error_correlation_source": em.round_correlation_source,
                "round_error_correlation_estimate": em.round_correlation_estimate,
                "round_error_correlation_pairs": em.round_correlation_pairs,
                "round_error_correlation_method": (
                    "intrinsic coregionalization: least squares of z_i z_j on c1 exp(-h/a) over CV point pairs of the "
                    "first and last round closer than a (Wackernagel 2003, Ch. 23); sampling error not propagated"
                ),
                "note": em.note,
            },
            "inputs": {
                "fields": str(Path(cfg.region.fields).resolve()),
                "crs": cfg.region.crs,
                "maps": {r: {k: str(p.relative_to(layout.root)) for k, p in kinds.items()} for r, kinds in map_paths.items()},
            },
            "project": project,
            "fields": out_fields,
            "design_based": design,
        },
    )
