"""Issue 12: what a step reads is declared once, beside it, and enforced; the keys follow the declarations.

One generated region (with a DEM, so that the imagery steps have a file beyond the catalog) is run
once per module through :func:`mrv.pipeline.plan.run_steps`, the in-process pipeline, and reported;
the tests then check that

1. a step reading a config value outside ``spec.reads``, or a run-directory file of a step that is
   not among its upstream inputs, fails with :class:`~mrv.pipeline.cache.UndeclaredRead`;
2. every step of :func:`mrv.pipeline.plan.step_specs` ran under its guard, and every path inside its
   declared config values is one of its inputs;
3. values the old hand-kept specs missed (``stocks.method``, ``model.round_normalisation``, the
   provider profile) are in the keys of the steps that read them, and only there;
4. a re-run with a changed setting writes a new keyed directory beside the old one, which stays byte
   for byte as the earlier report cited it, and the run still verifies.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from regions import region_config
from test_tiles import _bumpy_dem

from mrv.cli import main
from mrv.config import RunConfig, StocksConfig, load_config
from mrv.imagery.providers import load_profile
from mrv.pipeline import accounting, cache, imagery, model, plan, samples
from mrv.pipeline.cache import GuardedLayout, StepSpec, UndeclaredRead, run_cached, step_key
from mrv.pipeline.layout import STEP_RECORD, RunLayout, StepPlace
from mrv.resources import find_profile
from mrv.synthetic import SceneSpec

pytestmark = pytest.mark.slow

SPEC = SceneSpec(seed=11, width_px=64, height_px=64, n_fields=4, n_lab_sites=30, n_crowd=10)
SECTIONS = {
    "imagery": {"tile_px": 32, "chunk_px": 32},  # 2 x 2 tiles per round
    "model": {"n_estimators": 20, "cv_block_size_m": 160},
    "accounting": {"n_simulations": 60},
    "dask": {"n_workers": 1},
}
STAGE_MODULES = (samples, imagery, model, accounting)
#: Config fields holding paths that are not read by any step: where outputs go, where the config came from.
NOT_INPUT_FIELDS = frozenset({"output_dir", "registry_dir", "source_path"})


@dataclasses.dataclass(frozen=True)
class Guarded:
    """What one cached step saw while it computed: the layout handed to it."""

    spec: StepSpec
    layout: RunLayout


@dataclasses.dataclass(frozen=True)
class Run:
    config: Path
    cfg: RunConfig
    layout: RunLayout
    guarded: tuple[Guarded, ...]


def _recording(seen: list[Guarded]) -> Callable[..., bool]:
    """:func:`run_cached` that also records the layout each step's compute function is given."""

    def run(spec: StepSpec, layout: RunLayout, compute: Callable[[RunLayout], object]) -> bool:
        def observed(lay: RunLayout) -> object:
            seen.append(Guarded(spec, lay))
            return compute(lay)

        return run_cached(spec, layout, observed)

    return run


def _run_recorded(cfg: RunConfig, layout: RunLayout) -> list[Guarded]:
    """:func:`plan.run_steps` with every step's compute call recorded (the steps that ran, in order)."""
    seen: list[Guarded] = []
    with pytest.MonkeyPatch.context() as mp:
        for module in STAGE_MODULES:
            mp.setattr(module, "run_cached", _recording(seen))
        plan.run_steps(cfg, layout)
    return seen


@pytest.fixture(scope="module")
def pinned_code() -> Iterator[None]:
    """One code version for the module: the source tree may be edited by others while it runs."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(cache.CODE_VERSION_ENV, "step-declarations-test")
        cache.code_version.cache_clear()
        yield
    cache.code_version.cache_clear()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, pinned_code: None) -> Run:
    from mrv.report.build import build_report

    root = tmp_path_factory.mktemp("declared")
    config, _ = region_config(root, SPEC, name="declared", output_dir=root / "run", sections=SECTIONS)
    dem = _bumpy_dem(root / "dem.tif", imagery.project_grid(load_config(config)), margin_m=500.0)
    raw = yaml.safe_load(config.read_text())
    raw["imagery"]["dem"] = {"path": str(dem), "tpi_radius_m": 60.0}
    config.write_text(yaml.safe_dump(raw))
    cfg = load_config(config)
    layout = RunLayout(cfg.output_dir.resolve())
    seen = _run_recorded(cfg, layout)
    build_report(cfg, layout)
    return Run(config, cfg, layout, tuple(seen))


def _entries(layout: RunLayout) -> dict[Path, int | None]:
    """Every directory of the run's ``work/`` and ``maps/``, and every file with its mtime: to see that nothing changed."""
    return {
        p: p.stat().st_mtime_ns if p.is_file() else None
        for top in ("work", "maps")
        for p in sorted((layout.root / top).rglob("*"))
    }


# ----------------------------------------------------------------------------- 1. undeclared reads fail


def test_reading_an_undeclared_config_value_fails(run: Run) -> None:
    cfg, layout = run.cfg, run.layout
    rnd = cfg.rounds[0]
    spec = samples.samples_spec(cfg, rnd, layout)
    assert "cfg.model.process_sd_t_ha" in spec.reads
    narrowed = dataclasses.replace(
        spec,
        reads=tuple(r for r in spec.reads if r != "cfg.model.process_sd_t_ha"),
        config={k: v for k, v in spec.config.items() if k != "model.process_sd_t_ha"},  # another key: not skipped
    )
    assert step_key(narrowed).digest != step_key(spec).digest
    before = _entries(layout)
    # the guard refuses the model section as soon as the step reaches for it (only one value of it was declared)
    with pytest.raises(UndeclaredRead, match=r"prepare-samples\[2021\] read the config value model\b"):
        run_cached(
            narrowed, layout, lambda lay: samples.prepare_samples(narrowed.view("cfg", cfg), narrowed.view("round", rnd), lay)
        )  # fmt: skip
    assert _entries(layout) == before  # no keyed directory, no staging directory left, no pointer moved


def test_reading_a_step_that_is_not_upstream_fails(run: Run) -> None:
    cfg, layout = run.cfg, run.layout
    rnd = cfg.rounds[-1]
    spec = model.predict_spec(cfg, rnd, layout)
    imagery_record = layout.step_record(StepPlace("imagery", rnd.name))
    assert imagery_record in spec.inputs
    narrowed = dataclasses.replace(spec, inputs=tuple(p for p in spec.inputs if p != imagery_record))
    before = _entries(layout)
    expected = layout.step_dir(StepPlace("imagery", rnd.name)).relative_to(layout.root).as_posix()
    with pytest.raises(
        UndeclaredRead, match=rf"predict-maps\[2024\] read {expected}, which is not one of its declared"
    ):
        run_cached(
            narrowed, layout, lambda lay: model.predict_round(narrowed.view("cfg", cfg), narrowed.view("round", rnd), lay)
        )  # fmt: skip
    assert _entries(layout) == before

    # the guard is the layout's: a step that is not upstream is refused; upstream steps and its own directory are not
    guarded = next(g for g in run.guarded if g.spec.name == "account").layout
    assert isinstance(guarded, GuardedLayout)
    with pytest.raises(UndeclaredRead, match="Step account read work/2024/samples-"):
        guarded.sites(rnd.name)
    with pytest.raises(UndeclaredRead, match="Step account read work/2024/imagery-"):
        guarded.covariates(rnd.name)
    assert guarded.model_dir == layout.model_dir
    assert guarded.round_maps(rnd.name) == layout.round_maps(rnd.name)
    assert guarded.accounting.parent == guarded.own


# ----------------------------------------------------------------------------- 2. every step ran guarded


def _paths(value: Any, name: str = "") -> Iterator[tuple[str, Path]]:
    """``(field name, path)`` of every path inside a declared config value (dataclasses, mappings, sequences)."""
    if isinstance(value, Path):
        yield name, value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _paths(getattr(value, f.name), f.name)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, str(k))
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _paths(v, name)


def test_every_step_ran_under_its_guard_and_declares_its_config_files(run: Run) -> None:
    cfg, layout = run.cfg, run.layout
    specs = plan.step_specs(cfg, layout)
    assert [s.place for s in specs] == plan.places(cfg)
    assert len({s.name for s in specs}) == len(specs)
    # plan.run_steps ran exactly these steps, in this order, each once, each given its guarded layout
    assert [g.spec.name for g in run.guarded] == [s.name for s in specs]
    for spec, seen in zip(specs, run.guarded, strict=True):
        assert seen.spec == spec, spec.name  # today's spec is the one the step ran with: same key
        guarded = seen.layout
        assert isinstance(guarded, GuardedLayout), spec.name
        assert guarded.own.name.startswith(f".{layout.keyed_dir(spec.place, step_key(spec).digest).name}.partial-")
        upstream = {p.parent for p in spec.inputs if p.name == STEP_RECORD}
        assert guarded.allowed == upstream, spec.name
        done = cache.find_done(spec, layout)
        assert done is not None, spec.name
        assert done == layout.step_dir(spec.place), spec.name
        # the config a step is given allows its declared values only
        if "cfg" not in spec.reads:
            with pytest.raises(UndeclaredRead, match=re.escape(f"Step {spec.name} read the config value name,")):
                _ = spec.view("cfg", cfg).name

    dem = cfg.imagery.dem
    assert dem is not None
    found: dict[str, set[str]] = {}
    for spec in specs:
        inputs = set(spec.inputs)
        for name, path in _paths(dict(spec.config)):
            if name in NOT_INPUT_FIELDS:
                continue
            found.setdefault(spec.name, set()).add(name)
            assert path in inputs, f"{spec.name}: {name} = {path} is in its key's config but not among its inputs"
        for p in spec.inputs:
            assert Path(p).exists(), f"{spec.name}: declared input {p} does not exist"
    tiles = [s for s in specs if s.place.slug == "tile"]
    assert len(tiles) == 4 * len(cfg.rounds)
    for spec in tiles:  # the field polygons, the DEM and the whole local catalog
        assert {cfg.region.fields, dem.path, cfg.imagery.catalog.parent} <= set(spec.inputs)  # type: ignore[union-attr]
    for rnd in cfg.rounds:
        spec = next(s for s in specs if s.place == StepPlace("samples", rnd.name))
        assert {sf.path for sf in rnd.samples} | {cfg.region.fields} <= set(spec.inputs)
    assert found["account"] >= {"fields", "path"}  # the accounting reads the rounds (their sample files) too


# ----------------------------------------------------------------------------- 3. drift now in the keys


def _keys(cfg: RunConfig, layout: RunLayout) -> dict[str, str]:
    return {s.name: step_key(s).digest for s in plan.step_specs(cfg, layout)}


def _changed(a: dict[str, str], b: dict[str, str]) -> set[str]:
    assert set(a) == set(b)
    return {name for name in a if a[name] != b[name]}


def test_values_the_old_specs_missed_are_in_the_keys(run: Run, tmp_path: Path) -> None:
    cfg, layout = run.cfg, run.layout
    base = _keys(cfg, layout)
    assert base == {g.spec.name: step_key(g.spec).digest for g in run.guarded}

    esm = dataclasses.replace(cfg, stocks=StocksConfig(method="esm"))
    assert _changed(base, _keys(esm, layout)) == {f"prepare-samples[{r.name}]" for r in cfg.rounds}

    raw_covariates = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, round_normalisation=False))
    changed = _changed(base, _keys(raw_covariates, layout))
    assert {f"predict-maps[{r.name}]" for r in cfg.rounds} <= changed
    assert not any(n.startswith(("prepare-", "mosaic-")) for n in changed)
    # the chunk size is read by the prediction but cannot change a pixel: it stays out of the key
    chunks = dataclasses.replace(cfg, imagery=dataclasses.replace(cfg.imagery, chunk_px=16))
    assert {n for n in _changed(base, _keys(chunks, layout)) if n.startswith("predict-")} == set()

    # the provider profile of a live STAC source, edited between two runs (the offsets it publishes)
    profile_file = tmp_path / "my_provider.yaml"
    shutil.copy(find_profile("providers", "earth_search"), profile_file)
    before = load_profile(profile_file)
    text = profile_file.read_text()
    flag = f"raster_offsets_published: {str(before.raster_offsets_published).lower()}"
    assert flag in text, text
    profile_file.write_text(
        text.replace(flag, f"raster_offsets_published: {str(not before.raster_offsets_published).lower()}")
    )
    after = load_profile(profile_file)
    assert after.raster_offsets_published is not before.raster_offsets_published

    def live(profile: Any) -> RunConfig:
        return dataclasses.replace(cfg, imagery=dataclasses.replace(
            cfg.imagery, source="stac", catalog=None, url=before.url, provider=str(profile_file), provider_profile=profile
        ))  # fmt: skip

    rnd, tile = cfg.rounds[0], imagery.imagery_tiles(cfg)[0]
    first, second = (step_key(imagery.tile_spec(live(p), rnd, layout, tile)).digest for p in (before, after))
    assert first != second
    assert (
        step_key(samples.samples_spec(live(before), rnd, layout)).digest
        == step_key(samples.samples_spec(live(after), rnd, layout)).digest
    )


# ----------------------------------------------------------------------------- 4. a changed re-run


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_rerun_with_changed_setting_keeps_the_old_directories_and_verifies(
    run: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    from mrv.report.build import build_report

    layout = run.layout
    root = layout.root
    old_report = json.loads(layout.report_json.read_text())
    old_dir = layout.step_dir(StepPlace("accounting"))
    old_accounting = _snapshot(old_dir)
    cited = {p: (root / p).read_bytes() for p in old_report["maps"].values()}
    assert len(cited) == 6  # mean, p05, p50, p95, sd, width90 of the latest round
    pointers_before = {p.label: layout.step_dir(p) for p in plan.places(run.cfg)}

    raw = yaml.safe_load(run.config.read_text())
    raw["accounting"]["n_simulations"] = 80
    config = run.config.with_name("declared-rerun.yaml")
    config.write_text(yaml.safe_dump(raw))
    cfg = load_config(config)
    seen = _run_recorded(cfg, layout)
    build_report(cfg, layout)

    assert [g.spec.name for g in seen] == ["account"]  # every other step was up to date and skipped
    new_dir = layout.step_dir(StepPlace("accounting"))
    assert new_dir != old_dir
    assert new_dir.parent == old_dir.parent
    assert json.loads(layout.accounting.read_text())["n_simulations"] == 80
    assert _snapshot(old_dir) == old_accounting  # the superseded directory, byte for byte
    assert json.loads((old_dir / "accounting.json").read_text())["n_simulations"] == 60
    for rel, data in cited.items():  # what the earlier report cited is still there, unchanged
        assert (root / rel).read_bytes() == data, rel
    pointers_after = {p.label: layout.step_dir(p) for p in plan.places(cfg)}
    assert {k for k in pointers_before if pointers_before[k] != pointers_after[k]} == {"accounting"}

    index = json.loads(layout.index.read_text())
    assert index["steps"]["accounting"] == new_dir.relative_to(root).as_posix()
    assert index["latest_maps"] == old_report["maps"] == json.loads(layout.report_json.read_text())["maps"]
    manifest = json.loads((root / "manifest.json").read_text())
    listed = {e["path"] for e in manifest["outputs"]}
    old_rel = old_dir.relative_to(root).as_posix()
    assert not any(p.startswith(old_rel + "/") for p in listed)  # the superseded directory is not the run's
    assert f"{new_dir.relative_to(root).as_posix()}/{STEP_RECORD}" in listed

    assert main(["report", "verify", str(root)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "  accounting " in out, out
    assert "re-derived" in out, out
    assert old_dir.is_dir()  # verified with the superseded directory present
