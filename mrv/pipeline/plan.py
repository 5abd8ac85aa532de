"""The steps a config implies, in run order, and the index of their current directories.

Used by the report step (``index.json`` and the manifest's outputs) and by ``mrv report verify``
(the step chain it checks), so both see the same list as the flow runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mrv.config import RunConfig
from mrv.fsio import write_json
from mrv.pipeline import accounting, imagery, model, samples
from mrv.pipeline.cache import StepSpec
from mrv.pipeline.layout import STEP_RECORD, RunLayout, StepPlace

__all__ = ["places", "run_outputs", "run_steps", "step_specs", "write_index"]


def places(cfg: RunConfig) -> list[StepPlace]:
    """Every cached step of a run, in the order the flow runs them."""
    tile_names = [t.name for t in imagery.imagery_tiles(cfg)]
    out: list[StepPlace] = []
    for rnd in cfg.rounds:
        out.append(StepPlace("samples", rnd.name))
        out += [StepPlace("tile", rnd.name, t) for t in tile_names]
        out.append(StepPlace("imagery", rnd.name))
    out.append(StepPlace("model"))
    out += [StepPlace("maps", rnd.name) for rnd in cfg.rounds]
    out.append(StepPlace("accounting"))
    return out


def step_specs(cfg: RunConfig, layout: RunLayout) -> list[StepSpec]:
    """The spec of every step, computed from the config and the run directory's current upstream records."""
    grid = imagery.project_grid(cfg)
    tile_set = imagery.imagery_tiles(cfg, grid)
    specs: list[StepSpec] = []
    for rnd in cfg.rounds:
        specs.append(samples.samples_spec(cfg, rnd, layout))
        specs += [imagery.tile_spec(cfg, rnd, layout, t) for t in tile_set]
        specs.append(imagery.mosaic_spec(cfg, rnd, layout, tile_set))
    specs.append(model.model_spec(cfg, layout))
    specs += [model.predict_spec(cfg, rnd, layout) for rnd in cfg.rounds]
    specs.append(accounting.account_spec(cfg, layout))
    return specs


def run_steps(cfg: RunConfig, layout: RunLayout, *, client: Any | None = None, until: str = "accounting") -> None:
    """Run the cached steps in this process, in flow order, without Prefect (tests, benchmarks, notebooks).

    ``until`` stops after ``"samples"``, ``"imagery"``, ``"model"``, ``"maps"`` or ``"accounting"`` (every round's
    steps of that stage included). The flow (:mod:`flows.regional_monitoring`) runs the same steps as tasks.
    """
    order = ("samples", "imagery", "model", "maps", "accounting")
    if until not in order:
        raise ValueError(f"until must be one of {order}, not {until!r}")
    stop = order.index(until)
    for rnd in cfg.rounds:
        samples.run_samples(cfg, rnd, layout)
        if stop >= 1:
            imagery.run_round(cfg, rnd, layout)
    if stop >= 2:
        model.run_fit(cfg, layout)
    if stop >= 3:
        for rnd in cfg.rounds:
            model.run_predict(cfg, rnd, layout, client=client)
    if stop >= 4:
        accounting.run_account(cfg, layout)


def write_index(cfg: RunConfig, layout: RunLayout) -> Path:
    """``index.json``: each step's current directory (relative to the run) and the latest round's maps."""
    steps = {p.label: layout.step_dir(p).relative_to(layout.root).as_posix() for p in places(cfg)}
    latest = cfg.rounds[-1].name
    maps = {k: p.relative_to(layout.root).as_posix() for k, p in layout.round_maps(latest).items()}
    return write_json(layout.index, {"steps": steps, "latest_round": latest, "latest_maps": maps})


def _keyed_dirs(root: Path) -> Iterator[Path]:
    for record in root.rglob(STEP_RECORD):
        yield record.parent


def run_outputs(cfg: RunConfig, layout: RunLayout) -> list[Path]:
    """The files of ``work/`` and ``maps/`` that belong to this run: current step directories, pointers, caches.

    Keyed directories of earlier runs (kept, never overwritten) and staging directories of
    interrupted steps are left out.
    """
    current = {layout.step_dir(p).resolve() for p in places(cfg)}
    out: list[Path] = []
    for top in (layout.root / "work", layout.root / "maps"):
        if not top.is_dir():
            continue
        stale = {d.resolve() for d in _keyed_dirs(top)} - current
        for f in sorted(top.rglob("*")):
            if not f.is_file():
                continue
            rel_parts = f.relative_to(top).parts
            if any(part.startswith(".") for part in rel_parts[:-1]):  # .<dir>.partial-* / .<dir>.damaged-*
                continue
            if any(f.resolve().is_relative_to(d) for d in stale):
                continue
            out.append(f)
    return out
