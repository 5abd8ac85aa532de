"""The steps of a regional monitoring run, from config to report inputs.

Each function takes the frozen run config plus paths, writes its outputs under the run directory
(:class:`~mrv.pipeline.layout.RunLayout`) and returns what it wrote.
"""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pandas as pd
import xarray as xr

from mrv.accounting.aggregate import RoundMaps, simulate_zone_means, zone_summary
from mrv.config import RoundConfig, RunConfig
from mrv.errors import ConfigError, ModelError
from mrv.fields import Field, field_index_raster, fields_bounds, read_fields
from mrv.grid import Grid
from mrv.imagery.composite import bare_soil_composite, covariate_stack
from mrv.imagery.local import LocalCatalogSource
from mrv.imagery.providers import load_profile
from mrv.imagery.source import ImagerySource, SearchRequest
from mrv.imagery.stac_api import StacApiSource
from mrv.modeling.features import extract_at_points
from mrv.modeling.model import OUTPUTS, SOCModel
from mrv.modeling.predict import predict_map
from mrv.modeling.train import train
from mrv.pipeline.layout import RunLayout
from mrv.raster import read_raster, write_cog
from mrv.resources import profile_dirs
from mrv.samples.formats import load_format
from mrv.samples.ingest import ingest
from mrv.samples.qa import flag_duplicates
from mrv.samples.sites import site_stocks

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
        return LocalCatalogSource(cfg.imagery.catalog)
    if cfg.imagery.source == "stac":
        if cfg.imagery.provider:
            profile = load_profile(cfg.imagery.provider)
            return StacApiSource.from_profile(profile, collection=cfg.imagery.collection)
        assert cfg.imagery.url is not None
        return StacApiSource(cfg.imagery.url, collection=cfg.imagery.collection)
    if cfg.imagery.source == "sentinelhub":
        from mrv.imagery.sentinelhub_source import SentinelHubSource

        base = cfg.imagery.url or "https://services.sentinel-hub.com"
        return SentinelHubSource(base_url=base, collection_name=cfg.imagery.collection)
    raise ConfigError(f"imagery.source '{cfg.imagery.source}' is unknown; use 'local', 'stac' or 'sentinelhub'.")


def prepare_imagery(cfg: RunConfig, rnd: RoundConfig, layout: RunLayout) -> Path:
    """Search, load, mask and composite one round's imagery into a covariate GeoTIFF."""
    fields = read_fields(cfg.region.fields, crs=cfg.region.crs)
    grid = project_grid(cfg, fields)
    source = make_source(cfg)
    request = SearchRequest(
        bbox_wgs84=grid.bbox_wgs84(),
        start=rnd.start,
        end=rnd.end,
        max_cloud_pct=cfg.imagery.max_cloud_pct,
        collection=cfg.imagery.collection,
    )
    items = source.search(request)
    loaded = source.load(items, cfg.imagery.bands, grid, chunk_px=cfg.imagery.chunk_px)
    composite = bare_soil_composite(loaded.reflectance, cfg.imagery.bands, cfg.imagery.bare_soil)
    stack = covariate_stack(composite, cfg.imagery.bands)
    stack_v, n_bare_v = dask.compute(stack, composite["n_bare"])  # one pass over the imagery
    values, n_bare = stack_v.to_numpy(), n_bare_v.to_numpy()
    names = [str(c) for c in stack["covariate"].to_numpy()]
    path = write_cog(
        layout.covariates(rnd.name),
        np.concatenate([values, n_bare[None].astype("float32")]),
        grid,
        band_names=[*names, "n_bare"],
        tags={"round": rnd.name, "units": "reflectance (1) and indices (1); n_bare count"},
    )
    on_fields = field_index_raster(fields, grid) >= 0
    write_json(
        layout.imagery_summary(rnd.name),
        {
            "source": source.name,
            "items": list(loaded.items),
            "dropped": [{"item": i, "reason": r} for i, r in loaded.dropped],
            "bare_observations_median": float(np.median(n_bare[on_fields])),
            "fields_without_bare_soil_pct": float(100 * np.mean(n_bare[on_fields] == 0)),
        },
    )
    return path


def read_covariates(path: Path) -> tuple[xr.DataArray, Grid]:
    """The covariate stack of :func:`prepare_imagery` as ``(covariate, y, x)`` (without ``n_bare``)."""
    arr, grid, names = read_raster(path)
    keep = [i for i, n in enumerate(names) if n != "n_bare"]
    da = xr.DataArray(
        arr[keep],
        dims=("covariate", "y", "x"),
        coords={"covariate": [names[i] for i in keep], "y": grid.y_coords(), "x": grid.x_coords()},
    )
    return da, grid


def prepare_samples(cfg: RunConfig, rnd: RoundConfig, layout: RunLayout) -> Path:
    """Ingest every sample file of a round, compute 0-depth site stocks, flag duplicates."""
    grid = project_grid(cfg)
    format_dirs = profile_dirs("sample_formats", config_path=cfg.source_path)
    records: list[pd.DataFrame] = []
    rejected: list[pd.DataFrame] = []
    summary: dict[str, dict[str, Any]] = {}
    for sf in rnd.samples:
        fmt = load_format(sf.format, search_dirs=format_dirs)
        res = ingest(sf.path, fmt, source=sf.source, submitter=sf.submitter, project_crs=grid.crs, region_bounds=grid.bounds)
        records.append(res.accepted)
        rej = res.rejected_frame()
        rej.insert(0, "file", sf.path.name)
        rejected.append(rej)
        entry = summary.setdefault(sf.source, {"submitted": 0, "accepted": 0, "rejected": 0, "files": []})
        entry["submitted"] += res.submitted
        entry["accepted"] += len(res.accepted)
        entry["rejected"] += len(res.rejected)
        entry["files"].append(sf.path.name)
    all_records = pd.concat(records, ignore_index=True) if records else pd.DataFrame()
    sites, incomplete = site_stocks(all_records, depth_cm=cfg.depth_cm) if len(all_records) else (pd.DataFrame(), {})
    sites = flag_duplicates(sites)
    layout.work(rnd.name).mkdir(parents=True, exist_ok=True)
    sites.to_csv(layout.sites(rnd.name), index=False)
    pd.concat(rejected, ignore_index=True).to_csv(layout.rejected(rnd.name), index=False)
    for source, entry in summary.items():
        entry["sites"] = int((sites["source"] == source).sum()) if len(sites) else 0
        entry["flagged"] = int(((sites["source"] == source) & (sites["qa_flag"] != "")).sum()) if len(sites) else 0
    summary["incomplete_sites"] = incomplete  # type: ignore[assignment]
    write_json(layout.samples_summary(rnd.name), summary)
    return layout.sites(rnd.name)


def training_table(cfg: RunConfig, layout: RunLayout) -> pd.DataFrame:
    """Sites of every round with the covariates of their own round's composite."""
    parts = []
    for rnd in cfg.rounds:
        sites = pd.read_csv(layout.sites(rnd.name), keep_default_na=False, na_values=[""])
        sites = sites[sites["qa_flag"].fillna("") == ""]
        stack, _ = read_covariates(layout.covariates(rnd.name))
        cov = extract_at_points(stack, sites["x"].to_numpy(float), sites["y"].to_numpy(float))
        parts.append(pd.concat([sites.reset_index(drop=True).assign(round=rnd.name), cov], axis=1))
    return pd.concat(parts, ignore_index=True)


def fit_model(cfg: RunConfig, layout: RunLayout) -> Path:
    """Train, cross-validate spatially and calibrate; save the model and its card."""
    table = training_table(cfg, layout)
    stack, _ = read_covariates(layout.covariates(cfg.rounds[0].name))
    covariates = [str(c) for c in stack["covariate"].to_numpy()]
    result = train(table, covariates, cfg.model)
    d = layout.model_dir
    d.mkdir(parents=True, exist_ok=True)
    table.to_csv(d / "features.csv", index=False)
    result.oof.to_csv(d / "cv_predictions.csv", index=False)
    with open(d / "model.pkl", "wb") as fh:
        pickle.dump(result.model, fh)
    card = {
        "model_id": result.model.model_id,
        "kind": "quantile_regression_forest",
        "covariates": covariates,
        "n_train": result.model.metadata["n_train"],
        "training_sha256": result.model.metadata["training_sha256"],
        "params": {k: v for k, v in result.model.forest.get_params().items() if isinstance(v, int | float | str)},
        "calibration": {"method": "conformalized quantile regression (spatial CV)", "margin_t_ha": result.model.margin_t_ha},
        "cv": {"scheme": "spatial_block", "block_size_m": cfg.model.cv_block_size_m, **result.spatial_cv.to_dict()},
        "cv_random": {"scheme": "random_kfold (optimistic)", **result.random_cv.to_dict()},
    }
    write_json(d / "model_card.json", card)
    return d / "model.pkl"


def load_model(path: Path) -> SOCModel:
    try:
        with open(path, "rb") as fh:
            model = pickle.load(fh)
    except (OSError, pickle.UnpicklingError) as exc:
        raise ModelError(f"Cannot load the model {path}: {exc}. Re-run the training step.") from exc
    if not isinstance(model, SOCModel):
        raise ModelError(f"{path} does not hold an SOC model.")
    return model


def predict_round(cfg: RunConfig, rnd: RoundConfig, layout: RunLayout, *, client: Any | None = None) -> dict[str, Path]:
    """Predict mean, p05, p50, p95 and sd maps (t C/ha) for one round with Dask."""
    model = load_model(layout.model_dir / "model.pkl")
    stack, grid = read_covariates(layout.covariates(rnd.name))
    stack = stack.chunk({"covariate": -1, "y": cfg.imagery.chunk_px, "x": cfg.imagery.chunk_px})
    pred = predict_map(stack, model, client=client, chunk_px=cfg.imagery.chunk_px)
    values = pred.compute().to_numpy()
    paths = layout.round_maps(rnd.name)
    for i, name in enumerate(OUTPUTS):
        write_cog(
            paths[name],
            values[i],
            grid,
            band_names=[f"soc_stock_{name}"],
            tags={
                "quantity": f"SOC stock {name}",
                "units": "t C/ha",
                "depth_cm": f"0-{cfg.depth_cm:g}",
                "round": rnd.name,
                "model_id": model.model_id,
                "crs": grid.crs,
            },
        )
    return paths


def account(cfg: RunConfig, layout: RunLayout) -> Path:
    """Field and project stocks per round, change and tCO2e with Monte Carlo 90 % intervals."""
    fields = read_fields(cfg.region.fields, crs=cfg.region.crs)
    maps = []
    grid = None
    for rnd in cfg.rounds:
        paths = layout.round_maps(rnd.name)
        mean, grid, _ = read_raster(paths["mean"])
        sd, _, _ = read_raster(paths["sd"])
        maps.append(RoundMaps(rnd.name, mean[0], sd[0]))
    assert grid is not None
    zones = field_index_raster(fields, grid)
    acc = cfg.accounting
    sim = simulate_zone_means(
        maps,
        zones,
        len(fields),
        pixel_m=grid.resolution_m,
        range_m=acc.error_range_m,
        round_correlation=acc.round_error_correlation,
        n_sim=acc.n_simulations,
        seed=acc.seed,
    )
    out_fields = []
    for i, f in enumerate(fields):
        s = zone_summary(sim, i, confidence=acc.confidence)
        out_fields.append(
            {
                "field_id": f.field_id,
                "name": f.properties.get("name", ""),
                "farm_id": f.properties.get("farm_id", ""),
                "practice": f.properties.get("practice", ""),
                "area_ha": round(f.area_ha, 4),
                "mapped_fraction": float(sim.coverage[i]),
                **s,
            }
        )
    project = zone_summary(sim, len(fields), confidence=acc.confidence)
    project.update(area_ha=round(sum(f.area_ha for f in fields), 4), n_fields=len(fields))
    return write_json(
        layout.accounting,
        {
            "method": "Monte Carlo with spatially correlated prediction errors",
            "n_simulations": acc.n_simulations,
            "error_range_m": acc.error_range_m,
            "round_error_correlation": acc.round_error_correlation,
            "confidence": acc.confidence,
            "project": project,
            "fields": out_fields,
        },
    )
