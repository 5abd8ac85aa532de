"""Model kinds, variogram-based CV blocks, calibration on spatially held-out data, registry in the pipeline."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy.spatial.distance import cdist

from mrv.config import (
    ImageryConfig,
    ModelConfig,
    RegionConfig,
    RoundConfig,
    RunConfig,
    default_model_registry,
    parse_config,
)
from mrv.errors import ConfigError, CovariateMismatch, ModelError
from mrv.fsio import sha256_file
from mrv.grid import Grid
from mrv.modeling.model import GBMQuantileModel, SOCModel, SOCPredictor, fit_estimator
from mrv.modeling.predict import predict_map
from mrv.modeling.registry import MODEL_FILE, list_models, read_card, read_reference
from mrv.modeling.train import train
from mrv.modeling.validation import fold_indices, fold_sizes
from mrv.modeling.variogram import block_floor, choose_block_size, estimate_variogram
from mrv.pipeline import model as steps
from mrv.pipeline.layout import RunLayout, StepPlace
from mrv.raster import write_cog

COVS = ["c0", "c1", "c2", "c3"]


# --------------------------------------------------------------------------- synthetic data
def gaussian_field(xy: np.ndarray, *, practical_range_m: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance Gaussian field with exponential covariance exp(-3 h / range) at the points ``xy``."""
    cov = np.exp(-3.0 * cdist(xy, xy) / practical_range_m)
    return np.linalg.cholesky(cov + 1e-9 * np.eye(len(xy))) @ rng.normal(size=len(xy))


def smooth_covariates(x: np.ndarray, y: np.ndarray, *, seed: int = 11) -> np.ndarray:
    """``(n, 4)`` smooth covariate fields (sums of plane waves, wavelengths 0.8-5 km) at map coordinates."""
    rng = np.random.default_rng(seed)
    out = np.zeros((len(x), len(COVS)))
    for j in range(len(COVS)):
        for _ in range(3):
            k = 2 * np.pi / rng.uniform(800, 5000)
            ang, ph = rng.uniform(0, 2 * np.pi, 2)
            out[:, j] += np.sin(k * (np.cos(ang) * x + np.sin(ang) * y) + ph)
    return out


def soc_truth(c: np.ndarray) -> np.ndarray:
    return 45 + 8 * np.sin(1.5 * c[:, 0]) + 4 * c[:, 1] ** 2 + 3 * c[:, 2] * c[:, 3]


def spatial_dataset(n: int = 900, *, seed: int = 3, extent_m: float = 8000.0, range_m: float = 600.0) -> pd.DataFrame:
    """Nonlinear SOC signal + spatially correlated residual (practical range ``range_m``, SD 3) + noise (SD 2.5).

    Every sample has a measurement SD; 10 % are 'crowd' samples with SD 15 and that much extra error.
    """
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, extent_m, size=(n, 2))
    c = smooth_covariates(xy[:, 0], xy[:, 1]) + rng.normal(0, 0.05, size=(n, len(COVS)))
    sd = np.where(rng.uniform(size=n) < 0.1, 15.0, 1.5)
    y = soc_truth(c) + 3.0 * gaussian_field(xy, practical_range_m=range_m, rng=rng) + rng.normal(0, 2.5, n)
    y += rng.normal(0, sd)
    df = pd.DataFrame(c.astype("float32"), columns=COVS)
    return df.assign(x=xy[:, 0], y=xy[:, 1], soc_stock_t_ha=y, soc_stock_sd_t_ha=sd)


# --------------------------------------------------------------------------- variogram and blocks
@pytest.mark.parametrize("practical_range", [600.0, 1500.0])
def test_variogram_recovers_known_range(practical_range: float) -> None:
    rng = np.random.default_rng(5)
    estimates = []
    for _ in range(9):
        xy = rng.uniform(0, 10_000, size=(500, 2))
        z = 40 + 5 * gaussian_field(xy, practical_range_m=practical_range, rng=rng) + rng.normal(0, 1.5, 500)
        estimates.append(estimate_variogram(xy[:, 0], xy[:, 1], z).range_m)
    # single realisations scatter; the median of nine is within 25 % of the truth
    assert np.median(estimates) == pytest.approx(practical_range, rel=0.25), estimates


def test_block_size_follows_range_with_floor_and_cap() -> None:
    rng = np.random.default_rng(8)
    xy = rng.uniform(0, 10_000, size=(500, 2))
    z = 40 + 5 * gaussian_field(xy, practical_range_m=1500.0, rng=rng) + rng.normal(0, 1.5, 500)
    choice = choose_block_size(xy[:, 0], xy[:, 1], z, n_folds=5)
    assert choice.variogram is not None
    assert choice.block_size_m >= choice.variogram.range_m > 900
    assert choice.block_size_m % 10 == 0
    assert not choice.capped
    # no spatial structure: the range is 0 and the 500 m floor applies
    noise = choose_block_size(xy[:, 0], xy[:, 1], rng.normal(size=500), n_folds=5)
    assert noise.variogram is not None
    assert noise.variogram.range_m == 0.0
    assert noise.block_size_m == 500.0
    # a range larger than the sampled area: capped so 5 size-balanced folds of whole blocks remain
    small = rng.uniform(0, 1000, size=(300, 2))
    z_small = 40 + 5 * gaussian_field(small, practical_range_m=3000.0, rng=rng) + rng.normal(0, 0.2, 300)
    capped = choose_block_size(small[:, 0], small[:, 1], z_small, n_folds=5)
    assert capped.capped
    assert capped.block_size_m < 1000
    assert "Roberts" in capped.rule
    assert capped.to_dict()["capped"] is True
    sizes = fold_sizes(fold_indices(small[:, 0], small[:, 1], n_folds=5, block_size_m=capped.block_size_m, seed=0))
    assert len(sizes) == 5
    assert min(sizes) >= 0.5 * 300 / 5, sizes


def test_block_floor_follows_the_field_and_the_sample_spacing() -> None:
    rng = np.random.default_rng(2)
    # a 250 m field with 30 samples (LimeSoDa-like): the 500 m default floor would be one block
    x, y = rng.uniform(0, 250, 30), rng.uniform(0, 250, 30)
    extent = max(np.ptp(x), np.ptp(y))
    assert block_floor(x, y, 500.0) == pytest.approx(max(extent / 3, 2 * _median_nn(x, y)))
    choice = choose_block_size(x, y, rng.normal(size=30), n_folds=5)
    sizes = fold_sizes(fold_indices(x, y, n_folds=5, block_size_m=choice.block_size_m, seed=0))
    assert len(sizes) == 5
    assert min(sizes) >= 3, sizes
    # dense samples on a large region: the configured floor applies
    X, Y = rng.uniform(0, 10_000, 2000), rng.uniform(0, 10_000, 2000)
    assert block_floor(X, Y, 500.0) == 500.0


def _median_nn(x: np.ndarray, y: np.ndarray) -> float:
    d = cdist(np.column_stack([x, y]), np.column_stack([x, y]))
    np.fill_diagonal(d, np.inf)
    return float(np.median(d.min(axis=1)))


# --------------------------------------------------------------------------- both kinds, calibrated
FAST_QRF = ModelConfig(n_estimators=100, cv_folds=5, seed=0)
FAST_GBM = ModelConfig(kind="gbm_quantile", gbm_max_iter=25, gbm_learning_rate=0.2, cv_folds=3, seed=0)


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training blocks and spatially held-out blocks (1 km checkerboard) of one generated region."""
    df = spatial_dataset()
    held_out = ((df["x"] // 1000 + df["y"] // 1000) % 2).astype(bool)
    return df[~held_out].reset_index(drop=True), df[held_out].reset_index(drop=True)


@pytest.fixture(scope="module", params=["qrf", "gbm_quantile"])
def trained(request: pytest.FixtureRequest, data: tuple[pd.DataFrame, pd.DataFrame]):
    cfg = FAST_QRF if request.param == "qrf" else FAST_GBM
    return cfg, train(data[0], COVS, cfg)


def test_spatial_cv_and_held_out_coverage_near_nominal(trained, data) -> None:
    cfg, res = trained
    assert isinstance(res.model, SOCPredictor)
    assert res.model.kind == cfg.kind
    # block size from the variogram (auto is the default), recorded with the model
    assert res.block.variogram is not None
    assert res.block.block_size_m >= 500
    assert res.model.metadata["cv_block_size_m"] == res.block.block_size_m
    assert 0.85 <= res.spatial_cv.picp_90 <= 0.97  # >= 0.9 from the pooled margin; decile bands widen the tails (#13.4)
    assert res.spatial_cv.rmse < 0.8 * res.spatial_cv.baseline_rmse
    test = data[1]
    out = res.model.predict(test[COVS].to_numpy("float32"))
    obs = test["soc_stock_t_ha"].to_numpy()
    coverage = float(np.mean((obs >= out[:, 1]) & (obs <= out[:, 3])))
    assert 0.85 <= coverage <= 0.97, coverage
    assert np.all(out[:, 1] <= out[:, 2])
    assert np.all(out[:, 2] <= out[:, 3])
    np.testing.assert_allclose(out[:, 4], (out[:, 3] - out[:, 1]) / (2 * 1.6448536), rtol=1e-4)


def test_model_ids_differ_by_kind(trained) -> None:
    cfg, res = trained
    assert res.model.model_id.startswith("qrf-" if cfg.kind == "qrf" else "gbm-")


@pytest.mark.parametrize("cfg", [replace(FAST_QRF, n_estimators=50), replace(FAST_GBM, gbm_max_iter=20)], ids=["qrf", "gbm"])
def test_sample_weights_are_used(cfg: ModelConfig) -> None:
    rng = np.random.default_rng(2)
    X = rng.uniform(-1, 1, size=(400, 2)).astype("float32")
    bad = rng.uniform(size=400) < 0.25  # a quarter of the samples is off by +30, anywhere in covariate space
    y = 40 + 10 * X[:, 0] + np.where(bad, 30.0, 0.0)
    probe = rng.uniform(-1, 1, size=(500, 2)).astype("float32")
    truth = 40 + 10 * probe[:, 0]
    even = fit_estimator(cfg, X, y, np.ones(400), ("a", "b")).predict(probe)
    # inverse-variance weights of very uncertain samples remove their bias from mean and median
    weighted = fit_estimator(cfg, X, y, np.where(bad, 1e-3, 1.0), ("a", "b")).predict(probe)
    assert np.mean(even[:, 0] - truth) > 5
    assert abs(np.mean(weighted[:, 0] - truth)) < 1
    assert abs(np.mean(weighted[:, 2] - truth)) < 1


def test_gbm_model_runs_through_predict_map(trained) -> None:
    cfg, res = trained
    if cfg.kind != "gbm_quantile":
        pytest.skip("the GBM model is the alternative kind checked here")
    assert isinstance(res.model, GBMQuantileModel)
    xs, ys = np.arange(30) * 20.0, 3000 - np.arange(25) * 20.0
    gx, gy = np.meshgrid(xs, ys)
    cov = smooth_covariates(gx.ravel(), gy.ravel()).T.reshape(len(COVS), 25, 30).astype("float32")
    cov[2, 3, 4] = np.nan
    stack = xr.DataArray(cov, dims=("covariate", "y", "x"), coords={"covariate": COVS, "y": ys, "x": xs})
    out = predict_map(stack, res.model, chunk_px=16).compute()
    assert out.attrs["model_id"] == res.model.model_id
    direct = res.model.predict(cov.reshape(len(COVS), -1).T)
    np.testing.assert_allclose(out.to_numpy().reshape(5, -1).T, direct, rtol=1e-6, equal_nan=True)
    assert np.isnan(out.to_numpy()[:, 3, 4]).all()
    assert np.isfinite(out.to_numpy()[:, 0, 0]).all()
    with pytest.raises(CovariateMismatch, match=r"missing \['c3'\], unexpected \['ndvi'\]"):
        predict_map(stack.assign_coords(covariate=["c0", "c1", "c2", "ndvi"]), res.model)


# --------------------------------------------------------------------------- configuration
def _raw_config(**model: object) -> dict[str, object]:
    return {
        "name": "t",
        "region": {"fields": "f.geojson", "crs": "EPSG:32633", "resolution_m": 10},
        "imagery": {"source": "local", "collection": "s2", "catalog": "c.json"},
        "rounds": [{"name": "r1", "start": "2021-03-01", "end": "2021-10-31"}],
        "model": model,
    }


def test_cv_design_config(tmp_path: Path) -> None:
    src = tmp_path / "cfg.yaml"
    assert parse_config(_raw_config(), source_path=src).model.cv_design == "knndm"
    assert parse_config(_raw_config(cv_design="blocks"), source_path=src).model.cv_design == "blocks"
    with pytest.raises(ConfigError, match=r"model.cv_design 'nndm' is not available; use 'blocks'"):
        parse_config(_raw_config(cv_design="nndm"), source_path=src)


def test_prediction_points_are_field_pixel_centres(tmp_path: Path) -> None:

    from pyproj import Transformer

    from mrv.pipeline.model import prediction_points

    grid = Grid(crs="EPSG:32633", bounds=(500_000.0, 5_000_000.0, 502_000.0, 5_002_000.0), resolution_m=10.0)
    tr = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    x0, y0 = 500_400.0, 5_000_600.0  # a 300 x 200 m field: 600 pixels
    ring = [tr.transform(x, y) for x, y in ((x0, y0), (x0 + 300, y0), (x0 + 300, y0 + 200), (x0, y0 + 200), (x0, y0))]
    feature = {
        "type": "Feature",
        "properties": {"field_id": "F1"},
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }
    (tmp_path / "f.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    cfg = parse_config(_raw_config(), source_path=tmp_path / "cfg.yaml")
    pts = prediction_points(cfg, grid, n=200)
    assert pts.shape == (200, 2)
    assert len(np.unique(pts, axis=0)) == 200
    assert np.all((pts[:, 0] > x0 - 1) & (pts[:, 0] < x0 + 301) & (pts[:, 1] > y0 - 1) & (pts[:, 1] < y0 + 201))
    assert np.allclose((pts - 5.0) % 10.0, 0.0, atol=1e-6)  # pixel centres of the 10 m grid
    everything = prediction_points(cfg, grid, n=5000)  # more than the field holds: every pixel once
    assert 560 <= len(everything) <= 640
    same = prediction_points(replace(cfg), grid, n=200)
    assert np.array_equal(pts, same)  # seeded by model.seed


def test_model_config_parsing(tmp_path: Path) -> None:
    src = tmp_path / "cfg.yaml"
    cfg = parse_config(_raw_config(), source_path=src).model
    assert cfg.cv_block_size_m == "auto"
    assert cfg.kind == "qrf"
    assert cfg.registry_dir == default_model_registry()  # resolved at load (tests: $MRV_MODEL_REGISTRY)
    cfg = parse_config(
        _raw_config(kind="gbm_quantile", cv_block_size_m=750, registry_dir="../reg", gbm_max_iter=50), source_path=src
    ).model
    assert (cfg.kind, cfg.cv_block_size_m, cfg.gbm_max_iter) == ("gbm_quantile", 750.0, 50)
    assert cfg.registry_dir == (tmp_path / ".." / "reg").resolve()
    with pytest.raises(ConfigError, match="'auto'"):
        parse_config(_raw_config(cv_block_size_m="big"), source_path=src)
    with pytest.raises(ConfigError, match="gbm_quantile"):
        parse_config(_raw_config(kind="svm"), source_path=src)
    # one interval level drives the lower_90/upper_90 keys, p05/p95 files and "90 %" labels: others are refused
    assert parse_config(_raw_config(confidence=0.9), source_path=src).model.confidence == 0.9
    with pytest.raises(ConfigError, match=r"model.confidence is 0.8, but only 0.9 is supported"):
        parse_config(_raw_config(confidence=0.8), source_path=src)


# --------------------------------------------------------------------------- pipeline: registry + covariate check
def _write_field(path: Path, grid: Grid) -> None:
    """One field polygon (GeoJSON, lon/lat) over the grid, 300 m inside its edges."""
    import json

    from pyproj import Transformer

    tr = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    x0, y0, x1, y1 = grid.bounds
    ring = [tr.transform(x, y) for x, y in ((x0 + 300, y0 + 300), (x1 - 300, y0 + 300), (x1 - 300, y1 - 300),
                                            (x0 + 300, y1 - 300), (x0 + 300, y0 + 300))]  # fmt: skip
    feature = {"type": "Feature", "properties": {"field_id": "F1"}, "geometry": {"type": "Polygon", "coordinates": [ring]}}
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))


def _write_round(layout: RunLayout, grid: Grid, names: list[str], fields: Path, *, n_sites: int = 160) -> None:
    """The imagery step's outputs (covariates.tif, covariate_norm.json) and the samples step's sites.csv for r1."""
    from mrv.fields import field_index_raster, read_fields
    from mrv.fsio import write_json
    from mrv.pipeline.imagery import normalisation_stats

    xs, ys = np.asarray(grid.x_coords()), np.asarray(grid.y_coords())
    gx, gy = np.meshgrid(xs, ys)
    cov = smooth_covariates(gx.ravel(), gy.ravel()).T.reshape(len(COVS), len(ys), len(xs)).astype("float32")
    n_bare = np.ones((1, len(ys), len(xs)), dtype="float32")
    write_cog(layout.covariates("r1"), np.concatenate([cov, n_bare]), grid, band_names=[*names, "n_bare"])
    on_fields = field_index_raster(read_fields(fields, crs=grid.crs), grid) >= 0
    write_json(layout.covariate_norm("r1"), normalisation_stats(layout.covariates("r1"), on_fields))
    rng = np.random.default_rng(4)
    row, col = rng.integers(0, len(ys), n_sites), rng.integers(0, len(xs), n_sites)
    c = cov[:, row, col].T
    sites = pd.DataFrame(
        {
            "site_id": [f"S{i}" for i in range(n_sites)],
            "x": xs[col],
            "y": ys[row],
            "soc_stock_t_ha": soc_truth(c) + rng.normal(0, 2, n_sites),
            "soc_stock_sd_t_ha": 1.5,
            "qa_flag": "",
        }
    )
    sites.to_csv(layout.sites("r1"), index=False)


@pytest.fixture
def run(tmp_path: Path) -> tuple[RunConfig, RunLayout, Grid]:
    grid = Grid(crs="EPSG:32633", bounds=(500_000.0, 5_000_000.0, 503_000.0, 5_003_000.0), resolution_m=30.0)
    root = tmp_path / "run"
    layout = RunLayout(root)
    for place in (StepPlace("imagery", "r1"), StepPlace("samples", "r1"), StepPlace("model"), StepPlace("maps", "r1")):
        d = root / "placed" / place.label
        d.mkdir(parents=True)
        layout = layout.placed(place, d)
    layout.work("r1").mkdir(parents=True)
    _write_field(tmp_path / "fields.geojson", grid)
    _write_round(layout, grid, COVS, tmp_path / "fields.geojson")
    cfg = RunConfig(
        name="t",
        source_path=tmp_path / "cfg.yaml",
        output_dir=layout.root,
        depth_cm=30.0,
        region=RegionConfig(fields=tmp_path / "fields.geojson", crs=grid.crs, resolution_m=30.0),
        imagery=ImageryConfig(source="local", collection="s2", catalog=tmp_path / "c.json", chunk_px=64),
        rounds=(RoundConfig("r1", dt.date(2021, 3, 1), dt.date(2021, 10, 31), ()),),
        model=ModelConfig(n_estimators=30, cv_folds=3, registry_dir=tmp_path / "registry"),
    )
    return cfg, layout, grid


def test_fit_model_registers_and_prediction_checks_covariates(run) -> None:
    cfg, layout, grid = run
    path = steps.fit_model(cfg, layout)
    card = read_card_from(path)
    reg = cfg.model.registry_dir
    assert list_models(reg) == [card["model_id"]]
    ref = read_reference(path)  # the run keeps a reference, not a second pickle
    assert not (layout.model_dir / MODEL_FILE).exists()
    assert (ref.model_id, ref.registry_dir) == (card["model_id"], reg.resolve())
    assert sha256_file(reg / card["model_id"] / MODEL_FILE) == ref.model_sha256 == card["model_sha256"]
    assert card["model_sha256"] == read_card(card["model_id"], registry_dir=reg)["model_sha256"]
    assert card["cv"]["block_size_m"] == card["cv_block_size_m"] >= 500
    assert card["autocorrelation_range_m"] is not None
    assert card["cv_block"]["target_range_m"] is not None
    assert card["cv_block"]["rule"].startswith("max(")
    # re-running the step on the same data is a no-op for the registry, not an error
    assert steps.fit_model(cfg, layout).read_bytes() == path.read_bytes()
    assert list_models(reg) == [card["model_id"]]

    maps = steps.predict_round(cfg, cfg.rounds[0], layout)
    assert maps["mean"].is_file()

    _write_round(layout, grid, ["c0", "c1", "c2", "swir16"], cfg.region.fields)
    with pytest.raises(CovariateMismatch, match=r"missing \['c3'\], unexpected \['swir16'\]"):
        steps.predict_round(cfg, cfg.rounds[0], layout)


def read_card_from(model_path: Path) -> dict[str, object]:
    import json

    return json.loads((model_path.parent / "model_card.json").read_text())


def test_configured_registry_and_tampered_registry_entry(run, tmp_path: Path) -> None:
    cfg, layout, _ = run
    shared = tmp_path / "shared_registry"
    cfg = replace(cfg, model=replace(cfg.model, registry_dir=shared, kind="gbm_quantile", gbm_max_iter=20))
    ref = read_reference(steps.fit_model(cfg, layout))
    model = steps.load_model(layout)
    assert isinstance(model, GBMQuantileModel)
    assert list_models(shared) == [model.model_id] == [ref.model_id]
    assert not (layout.root / "models").exists()
    assert not (tmp_path / "registry").exists()
    data = bytearray(ref.model_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    ref.model_path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match its model card"):
        steps.load_model(layout)


def test_qrf_is_an_soc_predictor() -> None:
    assert SOCModel.kind == "qrf"
    assert GBMQuantileModel.kind == "gbm_quantile"


@pytest.mark.parametrize("seed", range(5))
def test_auto_block_size_always_gives_balanced_folds(seed: int) -> None:
    # clustered sampling with a long-range signal (the MG.112 case gave folds of 33/30/26/21/2 before)
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 1200, size=(5, 2))
    xy = centres[rng.integers(0, 5, 110)] + rng.normal(0, 120, size=(110, 2))
    z = 40 + 5 * gaussian_field(xy, practical_range_m=2000.0, rng=rng)
    choice = choose_block_size(xy[:, 0], xy[:, 1], z, n_folds=5)
    sizes = fold_sizes(fold_indices(xy[:, 0], xy[:, 1], n_folds=5, block_size_m=choice.block_size_m, seed=0))
    assert len(sizes) == 5
    assert min(sizes) >= int(0.5 * 110 / 5), (choice.block_size_m, sizes)
