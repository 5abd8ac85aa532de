"""A printable PDF of the verifier report, drawn with matplotlib (no non-Python dependency).

``report.json`` stays the source of truth; the PDF carries the headline numbers, the maps, the
methodology checklist, the deductions and the field table. User-supplied strings are drawn as
plain text (``parse_math=False``), never interpreted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.image as mpimg
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from mrv.fsio import atomic_path
from mrv.report.schema import Interval, Report

A4 = (8.27, 11.69)
ROWS_PER_PAGE = 40


def _iv(obj: Interval | None, unit: str, digits: int = 1) -> str:
    if obj is None or obj.mean is None:
        return "n/a"
    lo, hi = obj.lower_90, obj.upper_90
    span = f" [{lo:,.{digits}f}, {hi:,.{digits}f}]" if lo is not None and hi is not None else ""
    return f"{obj.mean:,.{digits}f}{span} {unit}"


def _f(value: float | None, spec: str) -> str:
    """``value`` formatted with ``spec``; ``nan`` formatting for a missing number (as before: ``nan``)."""
    return format(float("nan") if value is None else value, spec)


def _text_page(pdf: PdfPages, title: str, lines: Sequence[str]) -> None:
    fig = Figure(figsize=A4)
    fig.text(0.07, 0.95, title, fontsize=15, weight="bold", va="top", parse_math=False)
    fig.text(0.07, 0.90, "\n".join(lines), fontsize=9, va="top", family="monospace", parse_math=False)
    pdf.savefig(fig)


def _summary_lines(report: Report) -> list[str]:
    run, proj = report.run, report.project
    change = proj.change
    cv = report.model.cv if report.model is not None else None
    lines = [
        f"Run {run.name}, created {run.created_utc}, CRS {run.crs}",
        f"Depth 0-{run.depth_cm} cm; rounds {', '.join(run.rounds)}; 90 % intervals",
        "",
        f"Project area          {proj.area_ha:,.1f} ha in {proj.n_fields} fields",
        f"SOC stock ({run.latest_round})     {_iv(proj.soc_stock_t_ha, 't C/ha')}",
        f"SOC total             {_iv(proj.soc_total_t, 't C', 0)}",
    ]
    if change is not None:
        lines += [
            f"Change {change.from_round} -> {change.to_round}  {_iv(change.delta_soc_stock_t_ha, 't C/ha', 2)}",
            f"                      {_iv(change.co2e_t, 't CO2e', 0)}",
        ]
    if cv is not None:
        lines += [
            "",
            f"Model (spatial CV): RMSE {_f(cv.rmse, '.2f')} t C/ha "
            f"(mean-only {_f(cv.baseline_rmse, '.2f')}), R2 {_f(cv.r2, '.2f')}, "
            f"90 % coverage {_f(cv.picp_90, '.0%')}",
        ]
    meth = report.methodology
    if meth is not None:
        lines += ["", f"Methodology: {meth.name or meth.id}"]
        for c in meth.checks:
            status = "PASS" if c.passed is True else "FAIL" if c.passed is False else "not assessed"
            lines.append(f"  [{status:>12}] {c.description} (evidence {c.evidence_value}; {c.section})")
    for d in report.deductions or ():
        lines.append(
            f"Deduction {d.methodology}: uncertainty {100 * (d.uncertainty_fraction or 0):.2f} %, "
            f"deduction {100 * (d.deduction_fraction or 0):.2f} %, credited {d.credited or 0:,.1f}"
        )
    lines += ["", "Provenance: manifest.json lists the SHA-256 of every input and output; check with 'mrv report verify'."]
    return lines


def render_report_pdf(report: Report, *, images: Mapping[str, tuple[str, Path]], out_pdf: Path) -> Path:
    """Write the PDF: summary page, one page per figure, then the field table."""
    out_pdf.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"CreationDate": None, "ModDate": None, "Creator": "soilcarbon-mrv"}
    with atomic_path(out_pdf) as tmp, PdfPages(tmp, metadata=metadata) as pdf:
        _text_page(pdf, "Soil organic carbon MRV report", _summary_lines(report))
        for caption, png in images.values():
            fig = Figure(figsize=A4)
            ax = fig.add_axes((0.05, 0.15, 0.9, 0.75))
            ax.imshow(mpimg.imread(png))
            ax.set_axis_off()
            fig.text(0.05, 0.1, caption, fontsize=10, parse_math=False)
            pdf.savefig(fig)
        rows = [
            [f.field_id, f.name[:28], f"{f.area_ha or 0:.1f}", _iv(f.soc_stock_t_ha, ""),
             _iv(f.change.delta_soc_stock_t_ha if f.change is not None else None, "", 2)]
            for f in report.fields
        ]  # fmt: skip
        for start in range(0, len(rows), ROWS_PER_PAGE):
            fig = Figure(figsize=A4)
            ax = fig.add_axes((0.03, 0.03, 0.94, 0.9))
            ax.set_axis_off()
            fig.text(0.03, 0.96, "Fields: SOC stock (t C/ha, latest round) and change (t C/ha), 90 % intervals",
                     fontsize=10, parse_math=False)  # fmt: skip
            table = ax.table(
                cellText=rows[start : start + ROWS_PER_PAGE],
                colLabels=["field", "name", "area ha", "stock", "change"],
                loc="upper center",
                cellLoc="left",
            )
            table.auto_set_font_size(False)
            table.set_fontsize(7)
            for cell in table.get_celld().values():
                cell.get_text().set_parse_math(False)
            pdf.savefig(fig)
    return out_pdf
