"""Assemble ``report.json`` (the source of truth) from a run's artefacts, then its renderings and the manifest.

:func:`build_report` is the pipeline's report step: it reads ``accounting.json``, the model card, the
samples and imagery summaries and the methodology profile, builds a typed :class:`~mrv.report.schema.Report`
(schema :data:`~mrv.report.schema.REPORT_SCHEMA_VERSION`), writes it, renders the figures, HTML, PDF
and GeoPackage (:mod:`mrv.report.render`) and writes ``manifest.json``. The section builders
(:func:`input_summaries`, :func:`methodology_section`, :func:`uncertainty_section`) are the ones
``mrv report verify`` re-runs to re-derive the report.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mrv.accounting.deductions import deduction_for
from mrv.accounting.methodology import Evidence, check_methodology, load_methodology
from mrv.accounting.vt0014 import vt0014_section
from mrv.config import RunConfig
from mrv.errors import MRVError, VerificationError
from mrv.fields import field_files, read_fields
from mrv.fsio import write_json
from mrv.identity import identity
from mrv.pipeline.change_step import credit_basis
from mrv.pipeline.layout import RunLayout
from mrv.pipeline.plan import run_outputs, write_index
from mrv.raster import read_raster
from mrv.report.manifest import package_versions, write_manifest
from mrv.report.maps import render_map_png
from mrv.report.render import VARIOGRAM_PNG, render_outputs, render_variogram_png
from mrv.report.schema import REPORT_SCHEMA_VERSION, Report

__all__ = ["build_report", "finite", "input_summaries", "methodology_section", "uncertainty_section"]


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _min_sites_per_field(features: Path, field_ids: list[str]) -> int | None:
    """Fewest training sites in any field (the stratum) in any round; fields without a site count 0."""
    if not features.is_file():
        return None
    table = pd.read_csv(features, usecols=["field_id", "round"], dtype=str)
    counts = table.dropna().groupby(["round", "field_id"]).size()
    return min(int(counts.get((rnd, fid), 0)) for rnd in table["round"].dropna().unique() for fid in field_ids)


def _esm_used(cfg: RunConfig, layout: RunLayout) -> bool:
    """Every round's lab sites got equivalent-soil-mass stocks (``stocks_esm`` in its samples.json)."""
    for rnd in cfg.rounds:
        esm = _read_json(layout.samples_summary(rnd.name)).get("stocks_esm") or {}
        if not esm.get("esm_sites"):
            return False
    return True


def _esm_increments(cfg: RunConfig, layout: RunLayout) -> int | None:
    """Fewest depth increments of an ESM site in any round; ``None`` without ESM stocks."""
    counts = [
        (_read_json(layout.samples_summary(r.name)).get("stocks_esm") or {}).get("min_depth_increments")
        for r in cfg.rounds
    ]
    ints = [c for c in counts if isinstance(c, int) and c > 0]
    return min(ints) if ints and len(ints) == len(counts) else None


def methodology_section(
    cfg: RunConfig, layout: RunLayout, accounting: dict[str, Any], card: dict[str, Any], n_samples: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Checklist of the configured methodology and the uncertainty deductions on the project change.

    Strata are the fields: ``min_samples_per_stratum`` is the fewest located training sites in a field.
    """
    profile = cfg.accounting.methodology_profile or load_methodology(cfg.accounting.methodology, config_path=cfg.source_path)
    basis = credit_basis(accounting)
    years = None
    if len(cfg.rounds) > 1:
        years = (cfg.rounds[-1].start - cfg.rounds[0].start).days / 365.25
    evidence = Evidence(
        sampling_depth_cm=cfg.depth_cm,
        uses_equivalent_soil_mass=cfg.stocks.method == "esm" and _esm_used(cfg, layout),
        n_depth_increments=_esm_increments(cfg, layout),
        remeasurement_interval_years=years,
        min_samples_per_stratum=_min_sites_per_field(
            layout.features, [str(f["field_id"]) for f in accounting["fields"]]
        ),
        n_samples=n_samples,
        uncertainty_fraction=None,
        spatial_cross_validation=True,
        interval_coverage_90=card["cv"]["picp_90"],
        n_monte_carlo_draws=cfg.accounting.n_simulations,
    )
    vt0014 = vt0014_section(
        layout.cv_predictions, baseline_round=cfg.rounds[0].name, confidence=cfg.model.confidence,
        config_path=cfg.source_path,
    )  # fmt: skip
    evidence = dataclasses.replace(evidence, vt0014_validation_passed=vt0014.get("passed"))
    checks = [c.to_dict() for c in check_methodology(profile, evidence)]
    deductions = []
    if basis is not None:  # on the project change in t CO2e, df from the sampling design
        for mid in ("verra_vm0042_v2", "gold_standard_soc"):
            d = deduction_for(mid, basis["estimate"], basis["se"], df=basis["df"], units=basis["units"])
            deductions.append({**d.to_dict(), "basis": basis["basis"], "change_significant": basis["significant"]})
    section: dict[str, Any] = {
        "id": profile.id, "name": profile.name, "version": profile.version, "reference": profile.reference, "checks": checks,
        "vt0014": vt0014,
    }  # fmt: skip
    return section, deductions


def input_summaries(cfg: RunConfig, layout: RunLayout) -> tuple[dict[str, dict[str, int]], dict[str, Any]]:
    """The report's ``samples`` counts per source (summed over rounds) and ``imagery.rounds`` summaries."""
    samples: dict[str, dict[str, int]] = {}
    imagery_rounds = {}
    for rnd in cfg.rounds:
        for source, entry in _read_json(layout.samples_summary(rnd.name)).items():
            if source in ("incomplete_sites", "stocks_esm"):
                continue
            agg = samples.setdefault(source, {"submitted": 0, "accepted": 0, "rejected": 0, "flagged": 0})
            for k in agg:
                agg[k] += int(entry.get(k, 0))
        imagery_rounds[rnd.name] = _read_json(layout.imagery_summary(rnd.name))
    return samples, imagery_rounds


def uncertainty_section(accounting: dict[str, Any]) -> dict[str, Any]:
    """How the intervals were simulated: settings, error variogram and where each value came from."""
    keys = (
        "method", "n_simulations", "error_range_m", "error_range_source", "nugget_share",
        "round_error_correlation", "round_error_correlation_source", "settings", "error_model",
    )  # fmt: skip
    return {k: accounting[k] for k in keys if k in accounting}


def finite(obj: Any) -> Any:
    """JSON has no NaN: replace non-finite floats by null (tuples become lists)."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


def typed_report(data: dict[str, Any]) -> Report:
    """``data`` (the assembled report dict) as a :class:`Report`; a shape error here is a bug of the assembly."""
    try:
        return Report.from_json(finite(data), source="the report assembled from the run's artefacts")
    except VerificationError as exc:
        raise MRVError(
            f"{exc} This is a bug in mrv (a stage wrote a value the report schema does not allow): please report it "
            "with the run's accounting.json and model_card.json."
        ) from exc


def build_report(cfg: RunConfig, layout: RunLayout) -> Path:
    """Write report.json, figures, report.html and manifest.json into the run directory."""
    root = layout.root
    accounting = _read_json(layout.accounting)
    card = _read_json(layout.model_card)
    latest = cfg.rounds[-1].name
    samples, imagery_rounds = input_summaries(cfg, layout)

    # The latest round's maps are the headline products; every round's maps stay in their keyed directory.
    latest_maps = layout.round_maps(latest)
    width_path = latest_maps["width90"]

    n_samples = int(card["n_train"])
    methodology, deductions = methodology_section(cfg, layout, accounting, card, n_samples)
    data: dict[str, Any] = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "run": {
            "name": cfg.name,
            "created_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "config": str(cfg.source_path),
            "fields": str(Path(cfg.region.fields).resolve()),
            "crs": cfg.region.crs,
            "resolution_m": cfg.region.resolution_m,
            "depth_cm": cfg.depth_cm,
            "rounds": [r.name for r in cfg.rounds],
            "latest_round": latest,
            "baseline_round": cfg.rounds[0].name,
            "confidence": cfg.accounting.confidence,
            "units": {"soc_stock_t_ha": "t C/ha", "soc_total_t": "t C", "co2e_t": "t CO2e"},
        },
        "project": accounting["project"],
        "fields": accounting["fields"],
        "design_based": accounting.get("design_based"),
        "uncertainty": uncertainty_section(accounting),
        "model": card,
        "samples": samples,
        "imagery": {"source": cfg.imagery.source, "rounds": imagery_rounds},
        "maps": {k: p.relative_to(root).as_posix() for k, p in latest_maps.items()},
        "methodology": methodology,
        "deductions": deductions,
        "provenance": {
            "manifest": "manifest.json",
            "verify_with": "mrv report verify <run directory>",
            "mrv_version": identity().version,
            "source_revision": identity().revision,
            "packages": package_versions(),
        },
    }
    report = typed_report(data)
    report_path = write_json(layout.report_json, report.to_json())

    figs = layout.figures
    mean, grid, _ = read_raster(latest_maps["mean"])
    vmin, vmax = (float(v) for v in np.nanpercentile(mean, [2, 98]))
    outlines = read_fields(cfg.region.fields, crs=grid.crs)  # once, in the maps' CRS
    render_map_png(latest_maps["mean"], figs / "soc_stock_mean.png", title=f"SOC stock {latest}", units="t C/ha",
                   vmin=vmin, vmax=vmax, fields=outlines)
    render_map_png(width_path, figs / "soc_stock_width90.png", title="90 % interval width", units="t C/ha",
                   cmap="viridis", fields=outlines)  # fmt: skip
    vario = report.uncertainty.variogram if report.uncertainty is not None else None
    if vario is not None:
        render_variogram_png(vario, figs / VARIOGRAM_PNG)
    rendered = render_outputs(root, report)

    inputs: dict[str, Path | tuple[Path, ...]] = {"fields": field_files(cfg.region.fields)}  # + Shapefile sidecars
    if cfg.imagery.catalog is not None:
        inputs["stac_catalog"] = cfg.imagery.catalog.parent
    if cfg.imagery.dem is not None and cfg.imagery.dem.path is not None:
        inputs["dem"] = cfg.imagery.dem.path
    for rnd in cfg.rounds:
        for i, sf in enumerate(rnd.samples):
            inputs[f"samples_{rnd.name}_{sf.source}_{i}"] = sf.path
    outputs = [*run_outputs(cfg, layout), figs, report_path, *rendered, write_index(cfg, layout)]
    if layout.registry_in_run.is_dir():  # the model registry, when it is kept in the run directory
        outputs.append(layout.registry_in_run)
    write_manifest(root, inputs=inputs, config=cfg.source_path, outputs=outputs, extra={"run_name": cfg.name})
    return report_path
