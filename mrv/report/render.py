"""Render a run's report outputs from ``report.json`` and rebuild them (``mrv report build``).

Everything here reads the typed :class:`~mrv.report.schema.Report` and the run directory only:
``report.html`` (:mod:`mrv.report.html`), ``report/report.pdf`` (:mod:`mrv.report.pdf`) and
``report/fields.gpkg`` (:mod:`mrv.report.gpkg`, with the field polygons recorded in ``run.fields``),
plus the error-variogram figure. ``mrv report verify`` re-renders with the same functions and compares
byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mrv.errors import MRVError, VerificationError
from mrv.fields import read_fields
from mrv.fsio import sha256_file, write_json
from mrv.pipeline.layout import RunLayout
from mrv.report.gpkg import write_fields_gpkg
from mrv.report.html import render_report_html
from mrv.report.manifest import MANIFEST_NAME
from mrv.report.pdf import render_report_pdf
from mrv.report.schema import Report, Uncertainty, read_report

__all__ = [
    "VARIOGRAM_PNG",
    "images",
    "read_report",
    "rebuild_report",
    "render_outputs",
    "render_variogram_png",
]

VARIOGRAM_PNG = "error_variogram.png"


def images(report: Report, root: Path) -> dict[str, tuple[str, Path]]:
    """The figures embedded in the HTML and PDF with their captions (only those that exist)."""
    run = report.run
    depth_txt = f"0-{float(run.depth_cm):g} cm"
    figs = RunLayout(root).figures
    out = {
        "mean": (f"SOC stock {depth_txt}, round {run.latest_round} (mean)", figs / "soc_stock_mean.png"),
        "width90": ("Width of the 90 % prediction interval (p95 - p05)", figs / "soc_stock_width90.png"),
    }
    unc = report.uncertainty
    if unc is not None and unc.variogram is not None and (figs / VARIOGRAM_PNG).is_file():
        out["error_variogram"] = (_variogram_caption(unc, unc.variogram), figs / VARIOGRAM_PNG)
    return {k: v for k, v in out.items() if v[1].is_file()}


def _variogram_caption(unc: Uncertainty, vario: Mapping[str, Any]) -> str:
    used = unc.error_range_source or "configured"
    rng_txt = f"{float(unc.error_range_m):,.0f} m" if unc.error_range_m is not None else "n/a"
    rho = unc.round_error_correlation if unc.round_error_correlation is not None else "n/a"
    return (
        "Semivariogram of the standardized cross-validation errors (observed - predicted) / sd with the fitted "
        f"exponential model (Cressie 1985 WLS): nugget {vario['nugget']:.3f}, partial sill {vario['partial_sill']:.3f}, "
        f"range a = {vario['range_m']:,.0f} m (practical range {3 * vario['range_m']:,.0f} m), nugget share "
        f"{vario['nugget_share']:.1%}, {vario['n_points']} points. Monte Carlo error range used: {rng_txt} ({used}); "
        f"round error correlation {rho} ({unc.round_error_correlation_source or 'configured'})."
    )


def render_variogram_png(vario: Mapping[str, Any], out_png: Path) -> Path:
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


def render_into(
    report: Report, root: Path, *, html: Path, pdf: Path, gpkg: Path, fields_path: Path | None = None
) -> tuple[Path, Path, Path]:
    """Render the three outputs of ``report`` (figures from ``root``) to the given paths.

    The field polygons are ``fields_path`` or, by default, the file recorded in ``run.fields``.
    """
    figures = images(report, root)
    html_path = render_report_html(report, images=figures, out_html=html)
    pdf_out = render_report_pdf(report, images=figures, out_pdf=pdf)
    source = fields_path if fields_path is not None else (Path(report.run.fields) if report.run.fields else None)
    if source is None or not source.is_file():
        raise MRVError(
            f"The field polygons recorded in report.json (run.fields = {report.run.fields!r}) are missing; restore them "
            "at that path (the manifest lists their SHA-256) to write report/fields.gpkg."
        )
    crs = report.run.crs
    gpkg_out = write_fields_gpkg(report, read_fields(source, crs=crs), gpkg, crs=crs)
    return html_path, gpkg_out, pdf_out


def render_outputs(root: Path, report: Report | None = None) -> tuple[Path, Path, Path]:
    """Render ``report.html``, ``report/fields.gpkg`` and ``report/report.pdf`` from ``report.json`` and the figures.

    Uses only the run directory and the field polygons recorded in ``report.json`` (``run.fields``).
    """
    layout = RunLayout(root)
    if report is None:
        report = read_report(layout.report_json)
    return render_into(report, root, html=layout.report_html, pdf=layout.report_pdf, gpkg=layout.report_gpkg)


def rebuild_report(run_dir: Path) -> tuple[tuple[Path, ...], list[str]]:
    """``mrv report build``: re-render report.html, report/fields.gpkg and report/report.pdf from report.json.

    report.json must still match its manifest entry (a tampered report is not rendered). Manifest
    entries of re-rendered files whose bytes changed are updated; their paths are returned.
    """
    root = Path(run_dir).expanduser().resolve()
    layout = RunLayout(root)
    if not layout.report_json.is_file():
        raise MRVError(f"{root} has no report.json; pass a run directory written by 'mrv run'.")
    manifest_path = root / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else None
    entries = {e["path"]: e for e in manifest.get("outputs", [])} if manifest else {}
    rel_report = layout.report_json.relative_to(root).as_posix()
    rep_entry = entries.get(rel_report)
    if rep_entry is not None and sha256_file(layout.report_json) != rep_entry["sha256"]:
        raise VerificationError(
            f"{layout.report_json} does not match its SHA-256 in manifest.json; it was changed after the run. "
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
            write_json(manifest_path, manifest)
    return rendered, changed
