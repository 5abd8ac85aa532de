"""Assemble ``report.json`` (the source of truth), its HTML rendering and the provenance manifest."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np

from mrv.accounting.deductions import deduction_for
from mrv.accounting.methodology import Evidence, check_methodology, load_methodology
from mrv.config import RunConfig
from mrv.pipeline.layout import RunLayout
from mrv.pipeline.steps import write_json
from mrv.raster import read_raster, write_cog
from mrv.report.html import render_report_html
from mrv.report.manifest import git_state, package_versions, write_manifest
from mrv.report.maps import render_map_png
from mrv.resources import profile_dirs

REPORT_SCHEMA_VERSION = 1


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _methodology_section(cfg: RunConfig, accounting: dict[str, Any], card: dict[str, Any], n_samples: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Checklist of the configured methodology and the uncertainty deductions on the project change."""
    profile = load_methodology(cfg.accounting.methodology, directory=profile_dirs("methodologies", config_path=cfg.source_path)[0])
    change = accounting["project"].get("change", {}).get("delta_soc_total_t")
    years = None
    if len(cfg.rounds) > 1:
        years = (cfg.rounds[-1].start - cfg.rounds[0].start).days / 365.25
    evidence = Evidence(
        sampling_depth_cm=cfg.depth_cm,
        uses_equivalent_soil_mass=False,
        remeasurement_interval_years=years,
        min_samples_per_stratum=None,
        n_samples=n_samples,
        uncertainty_fraction=None,
        spatial_cross_validation=True,
        interval_coverage_90=card["cv"]["picp_90"],
    )
    checks = [c.to_dict() for c in check_methodology(profile, evidence)]
    deductions = []
    if change is not None:
        for mid in ("verra_vm0042_v2", "gold_standard_soc"):
            d = deduction_for(mid, change["mean"], change["sd"], df=max(n_samples - 1, 1))
            deductions.append(d.to_dict())
    section = {"id": profile.id, "name": profile.name, "version": profile.version, "reference": profile.reference, "checks": checks}
    return section, deductions


def build_report(cfg: RunConfig, layout: RunLayout) -> Path:
    """Write report.json, figures, report.html and manifest.json into the run directory."""
    root = layout.root
    accounting = _read_json(layout.accounting)
    card = _read_json(layout.model_dir / "model_card.json")
    latest = cfg.rounds[-1].name
    samples: dict[str, dict[str, int]] = {}
    imagery_rounds = {}
    for rnd in cfg.rounds:
        for source, entry in _read_json(layout.samples_summary(rnd.name)).items():
            if source == "incomplete_sites":
                continue
            agg = samples.setdefault(source, {"submitted": 0, "accepted": 0, "rejected": 0, "flagged": 0})
            for k in agg:
                agg[k] += int(entry.get(k, 0))
        imagery_rounds[rnd.name] = _read_json(layout.imagery_summary(rnd.name))

    # The latest round's maps are the headline products; per-round maps stay under maps/<round>/.
    latest_maps = layout.latest_maps()
    for name, src in layout.round_maps(latest).items():
        latest_maps[name].write_bytes(src.read_bytes())
    p05, grid, _ = read_raster(latest_maps["p05"])
    p95, _, _ = read_raster(latest_maps["p95"])
    width_path = write_cog(
        root / "maps" / "soc_stock_width90.tif", (p95 - p05)[0], grid,
        band_names=["soc_stock_width90"], tags={"quantity": "90 % interval width (p95 - p05)", "units": "t C/ha", "round": latest},
    )  # fmt: skip

    n_samples = int(card["n_train"])
    methodology, deductions = _methodology_section(cfg, accounting, card, n_samples)
    report: dict[str, Any] = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "run": {
            "name": cfg.name,
            "created_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "config": str(cfg.source_path),
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
        "uncertainty": {k: accounting[k] for k in ("method", "n_simulations", "error_range_m", "round_error_correlation")},
        "model": card,
        "samples": samples,
        "imagery": {"source": cfg.imagery.source, "rounds": imagery_rounds},
        "maps": {**{k: str(p.relative_to(root)) for k, p in latest_maps.items()}, "width90": str(width_path.relative_to(root))},
        "methodology": methodology,
        "deductions": deductions,
        "provenance": {
            "manifest": "manifest.json",
            "verify_with": "mrv report verify <run directory>",
            "git_revision": git_state()[0],
            "packages": package_versions(),
        },
    }
    report_path = write_json(root / "report.json", _finite(report))

    figs = layout.figures
    vmin, vmax = (float(v) for v in np.nanpercentile(read_raster(latest_maps["mean"])[0], [2, 98]))
    images = {
        "mean": (
            f"SOC stock 0-{cfg.depth_cm:g} cm, round {latest} (mean)",
            render_map_png(latest_maps["mean"], figs / "soc_stock_mean.png", title=f"SOC stock {latest}", units="t C/ha",
                           vmin=vmin, vmax=vmax, fields_geojson=cfg.region.fields),
        ),
        "width90": (
            "Width of the 90 % prediction interval (p95 - p05)",
            render_map_png(width_path, figs / "soc_stock_width90.png", title="90 % interval width", units="t C/ha",
                           cmap="viridis", fields_geojson=cfg.region.fields),
        ),
    }  # fmt: skip
    render_report_html(report, images=images, out_html=root / "report.html")

    inputs: dict[str, Path] = {"fields": cfg.region.fields}
    if cfg.imagery.catalog is not None:
        inputs["stac_catalog"] = cfg.imagery.catalog.parent
    for rnd in cfg.rounds:
        for i, sf in enumerate(rnd.samples):
            inputs[f"samples_{rnd.name}_{sf.source}_{i}"] = sf.path
    outputs = [root / "maps", root / "model", root / "work", figs, layout.accounting, report_path, root / "report.html"]
    write_manifest(root, inputs=inputs, config=cfg.source_path, outputs=outputs, extra={"run_name": cfg.name})
    return report_path


def _finite(obj: Any) -> Any:
    """JSON has no NaN: replace non-finite floats by null."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj
