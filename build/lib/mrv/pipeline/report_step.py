"""Assemble ``report.json`` (the source of truth), its HTML rendering and the provenance manifest."""

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
from mrv.fields import read_fields
from mrv.identity import identity
from mrv.pipeline.change_step import credit_basis
from mrv.pipeline.layout import RunLayout
from mrv.pipeline.steps import write_json
from mrv.raster import read_raster, write_cog
from mrv.report.gpkg import write_fields_gpkg
from mrv.report.html import render_report_html
from mrv.report.manifest import MANIFEST_NAME, package_versions, sha256_file, write_manifest
from mrv.report.maps import render_map_png
from mrv.report.pdf import render_report_pdf

REPORT_SCHEMA_VERSION = 1
#: Per-field results for GIS (:mod:`mrv.report.gpkg`), relative to the run directory.
GPKG_PATH = Path("report") / "fields.gpkg"
#: Printable report, relative to the run directory.
PDF_PATH = Path("report") / "report.pdf"
VARIOGRAM_PNG = "error_variogram.png"


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _min_sites_per_field(features: Path, field_ids: list[str]) -> int | None:
    """Fewest training sites in any field (the stratum) in any round; fields without a site count 0."""
    if not features.is_file():
        return None
    table = pd.read_csv(features, usecols=["field_id", "round"], dtype=str)
    counts = table.dropna().groupby(["round", "field_id"]).size()
    return min(int(counts.get((rnd, fid), 0)) for rnd in table["round"].dropna().unique() for fid in field_ids)


def _methodology_section(
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
        uses_equivalent_soil_mass=False,
        remeasurement_interval_years=years,
        min_samples_per_stratum=_min_sites_per_field(
            layout.model_dir / "features.csv", [str(f["field_id"]) for f in accounting["fields"]]
        ),
        n_samples=n_samples,
        uncertainty_fraction=None,
        spatial_cross_validation=True,
        interval_coverage_90=card["cv"]["picp_90"],
        n_monte_carlo_draws=cfg.accounting.n_simulations,
    )
    vt0014 = vt0014_section(
        layout.model_dir / "cv_predictions.csv", baseline_round=cfg.rounds[0].name, confidence=cfg.model.confidence,
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
            if source == "incomplete_sites":
                continue
            agg = samples.setdefault(source, {"submitted": 0, "accepted": 0, "rejected": 0, "flagged": 0})
            for k in agg:
                agg[k] += int(entry.get(k, 0))
        imagery_rounds[rnd.name] = _read_json(layout.imagery_summary(rnd.name))
    return samples, imagery_rounds


def build_report(cfg: RunConfig, layout: RunLayout) -> Path:
    """Write report.json, figures, report.html and manifest.json into the run directory."""
    root = layout.root
    accounting = _read_json(layout.accounting)
    card = _read_json(layout.model_dir / "model_card.json")
    latest = cfg.rounds[-1].name
    samples, imagery_rounds = input_summaries(cfg, layout)

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
    methodology, deductions = _methodology_section(cfg, layout, accounting, card, n_samples)
    report: dict[str, Any] = {
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
        "uncertainty": _uncertainty_section(accounting),
        "model": card,
        "samples": samples,
        "imagery": {"source": cfg.imagery.source, "rounds": imagery_rounds},
        "maps": {**{k: str(p.relative_to(root)) for k, p in latest_maps.items()}, "width90": str(width_path.relative_to(root))},
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
    report_path = write_json(root / "report.json", _finite(report))

    figs = layout.figures
    vmin, vmax = (float(v) for v in np.nanpercentile(read_raster(latest_maps["mean"])[0], [2, 98]))
    render_map_png(latest_maps["mean"], figs / "soc_stock_mean.png", title=f"SOC stock {latest}", units="t C/ha",
                   vmin=vmin, vmax=vmax, fields_geojson=cfg.region.fields)
    render_map_png(width_path, figs / "soc_stock_width90.png", title="90 % interval width", units="t C/ha",
                   cmap="viridis", fields_geojson=cfg.region.fields)  # fmt: skip
    vario = (accounting.get("error_model") or {}).get("variogram")
    if isinstance(vario, dict):
        render_variogram_png(vario, figs / VARIOGRAM_PNG)
    rendered = render_outputs(root)

    inputs: dict[str, Path] = {"fields": cfg.region.fields}
    if cfg.imagery.catalog is not None:
        inputs["stac_catalog"] = cfg.imagery.catalog.parent
    if cfg.imagery.dem is not None and cfg.imagery.dem.path is not None:
        inputs["dem"] = cfg.imagery.dem.path
    for rnd in cfg.rounds:
        for i, sf in enumerate(rnd.samples):
            inputs[f"samples_{rnd.name}_{sf.source}_{i}"] = sf.path
    outputs = [root / "maps", root / "model", root / "work", figs, layout.accounting, report_path, *rendered]
    if (root / "models").is_dir():  # the model registry, when it is kept in the run directory
        outputs.append(root / "models")
    write_manifest(root, inputs=inputs, config=cfg.source_path, outputs=outputs, extra={"run_name": cfg.name})
    return report_path


def _uncertainty_section(accounting: dict[str, Any]) -> dict[str, Any]:
    """How the intervals were simulated: settings, error variogram and where each value came from."""
    keys = (
        "method", "n_simulations", "error_range_m", "error_range_source", "nugget_share",
        "round_error_correlation", "round_error_correlation_source", "settings", "error_model",
    )  # fmt: skip
    return {k: accounting[k] for k in keys if k in accounting}


def _images(report: dict[str, Any], root: Path) -> dict[str, tuple[str, Path]]:
    """The figures embedded in the HTML with their captions (only those that exist)."""
    run = report.get("run", {})
    latest = run.get("latest_round", "")
    depth = run.get("depth_cm")
    depth_txt = f"0-{float(depth):g} cm" if isinstance(depth, int | float) else "topsoil"
    figs = root / "figures"
    images = {
        "mean": (f"SOC stock {depth_txt}, round {latest} (mean)", figs / "soc_stock_mean.png"),
        "width90": ("Width of the 90 % prediction interval (p95 - p05)", figs / "soc_stock_width90.png"),
    }
    unc = report.get("uncertainty", {})
    vario = (unc.get("error_model") or {}).get("variogram")
    if isinstance(vario, dict) and (figs / VARIOGRAM_PNG).is_file():
        images["error_variogram"] = (_variogram_caption(unc, vario), figs / VARIOGRAM_PNG)
    return {k: v for k, v in images.items() if v[1].is_file()}


def _variogram_caption(unc: dict[str, Any], vario: dict[str, Any]) -> str:
    used = unc.get("error_range_source", "configured")
    rng_used = unc.get("error_range_m")
    rng_txt = f"{float(rng_used):,.0f} m" if isinstance(rng_used, int | float) else "n/a"
    return (
        "Semivariogram of the standardized cross-validation errors (observed - predicted) / sd with the fitted "
        f"exponential model (Cressie 1985 WLS): nugget {vario['nugget']:.3f}, partial sill {vario['partial_sill']:.3f}, "
        f"range a = {vario['range_m']:,.0f} m (practical range {3 * vario['range_m']:,.0f} m), nugget share "
        f"{vario['nugget_share']:.1%}, {vario['n_points']} points. Monte Carlo error range used: {rng_txt} ({used}); "
        f"round error correlation {unc.get('round_error_correlation', 'n/a')} "
        f"({unc.get('round_error_correlation_source', 'configured')})."
    )


def render_variogram_png(vario: dict[str, Any], out_png: Path) -> Path:
    """Plot the empirical semivariogram (points sized by pair count) and the fitted exponential model."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    emp = vario.get("empirical") or {}
    lag = np.asarray(emp.get("lag_m", []), dtype=float)
    gamma = np.asarray(emp.get("gamma", []), dtype=float)
    n = np.asarray(emp.get("n_pairs", []), dtype=float)
    fig = Figure(figsize=(5.5, 3.4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if lag.size:
        ax.scatter(lag, gamma, s=10 + 40 * n / max(n.max(), 1), color="#333333", label="empirical")
    h = np.linspace(0, max(float(lag.max()) if lag.size else 0.0, 3 * float(vario["range_m"])), 200)[1:]
    model = vario["nugget"] + vario["partial_sill"] * (1 - np.exp(-h / vario["range_m"]))
    ax.plot(h, model, color="#b2182b", label="exponential fit")
    ax.set_xlabel("distance (m)")
    ax.set_ylabel("semivariance (standardized)")
    ax.set_ylim(bottom=0)
    ax.legend(loc="lower right", frameon=False)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, format="png", metadata={"Software": None})
    return out_png


def render_outputs(root: Path) -> tuple[Path, Path, Path]:
    """Render ``report.html``, ``report/fields.gpkg`` and ``report/report.pdf`` from ``report.json`` and the figures.

    Uses only the run directory and the field polygons recorded in ``report.json`` (``run.fields``).
    """
    report = _read_json(root / "report.json")
    images = _images(report, root)
    html_path = render_report_html(report, images=images, out_html=root / "report.html")
    pdf_path = render_report_pdf(report, images=images, out_pdf=root / PDF_PATH)
    run = report.get("run", {})
    fields_path = run.get("fields")
    if not fields_path or not Path(fields_path).is_file():
        raise MRVError(
            f"The field polygons recorded in report.json (run.fields = {fields_path!r}) are missing; restore them "
            "at that path (the manifest lists their SHA-256) to write report/fields.gpkg."
        )
    fields = read_fields(Path(fields_path), crs=str(run["crs"]))
    gpkg_path = write_fields_gpkg(report, fields, root / GPKG_PATH, crs=str(run["crs"]))
    return html_path, gpkg_path, pdf_path


def rebuild_report(run_dir: Path) -> tuple[tuple[Path, ...], list[str]]:
    """``mrv report build``: re-render report.html, report/fields.gpkg and report/report.pdf from report.json.

    report.json must still match its manifest entry (a tampered report is not rendered). Manifest
    entries of re-rendered files whose bytes changed are updated; their paths are returned.
    """
    root = Path(run_dir).expanduser().resolve()
    if not (root / "report.json").is_file():
        raise MRVError(f"{root} has no report.json; pass a run directory written by 'mrv run'.")
    manifest_path = root / MANIFEST_NAME
    manifest = _read_json(manifest_path) if manifest_path.is_file() else None
    entries = {e["path"]: e for e in manifest.get("outputs", [])} if manifest else {}
    rep_entry = entries.get("report.json")
    if rep_entry is not None and sha256_file(root / "report.json") != rep_entry["sha256"]:
        raise VerificationError(
            f"{root / 'report.json'} does not match its SHA-256 in manifest.json; it was changed after the run. "
            "Restore it from the original run before re-rendering (run 'mrv report verify' for details)."
        )
    rendered = render_outputs(root)
    changed = []
    if manifest is not None:
        for p in rendered:
            rel = p.relative_to(root).as_posix()
            new = {"path": rel, "sha256": sha256_file(p), "bytes": p.stat().st_size}
            old = entries.get(rel)
            if old is None or old["sha256"] != new["sha256"]:
                changed.append(rel)
                if old is None:
                    manifest["outputs"].append(new)
                else:
                    old.update(new)
        if changed:
            manifest["outputs"].sort(key=lambda e: e["path"])
            tmp = manifest_path.with_name(MANIFEST_NAME + ".tmp")
            tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            tmp.replace(manifest_path)
    return rendered, changed


def _finite(obj: Any) -> Any:
    """JSON has no NaN: replace non-finite floats by null."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj
