"""A printable PDF of the verifier report, drawn with matplotlib (no non-Python dependency).

``report.json`` stays the source of truth; the PDF carries the headline numbers, the maps, the
methodology checklist, the deductions and the field table. User-supplied strings are drawn as
plain text (``parse_math=False``), never interpreted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.image as mpimg
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

A4 = (8.27, 11.69)
ROWS_PER_PAGE = 40


def _iv(obj: Any, unit: str, digits: int = 1) -> str:
    if not isinstance(obj, Mapping) or obj.get("mean") is None:
        return "n/a"
    lo, hi = obj.get("lower_90"), obj.get("upper_90")
    span = f" [{lo:,.{digits}f}, {hi:,.{digits}f}]" if lo is not None and hi is not None else ""
    return f"{obj['mean']:,.{digits}f}{span} {unit}"


def _text_page(pdf: PdfPages, title: str, lines: Sequence[str]) -> None:
    fig = Figure(figsize=A4)
    fig.text(0.07, 0.95, title, fontsize=15, weight="bold", va="top", parse_math=False)
    fig.text(0.07, 0.90, "\n".join(lines), fontsize=9, va="top", family="monospace", parse_math=False)
    pdf.savefig(fig)


def _summary_lines(report: Mapping[str, Any]) -> list[str]:
    run, proj = report.get("run", {}), report.get("project", {})
    change = proj.get("change", {})
    cv = report.get("model", {}).get("cv", {})
    lines = [
        f"Run {run.get('name', '')}, created {run.get('created_utc', '')}, CRS {run.get('crs', '')}",
        f"Depth 0-{run.get('depth_cm', '')} cm; rounds {', '.join(map(str, run.get('rounds', [])))}; 90 % intervals",
        "",
        f"Project area          {proj.get('area_ha', 0):,.1f} ha in {proj.get('n_fields', '')} fields",
        f"SOC stock ({run.get('latest_round', '')})     {_iv(proj.get('soc_stock_t_ha'), 't C/ha')}",
        f"SOC total             {_iv(proj.get('soc_total_t'), 't C', 0)}",
    ]
    if change:
        lines += [
            f"Change {change.get('from_round')} -> {change.get('to_round')}  {_iv(change.get('delta_soc_stock_t_ha'), 't C/ha', 2)}",
            f"                      {_iv(change.get('co2e_t'), 't CO2e', 0)}",
        ]
    if cv:
        lines += [
            "",
            f"Model (spatial block CV): RMSE {cv.get('rmse', float('nan')):.2f} t C/ha "
            f"(mean-only {cv.get('baseline_rmse', float('nan')):.2f}), R2 {cv.get('r2', float('nan')):.2f}, "
            f"90 % coverage {cv.get('picp_90', float('nan')):.0%}",
        ]
    meth = report.get("methodology") or {}
    if meth:
        lines += ["", f"Methodology: {meth.get('name', meth.get('id', ''))}"]
        for c in meth.get("checks", []):
            status = {True: "PASS", False: "FAIL"}.get(c.get("passed"), "not assessed")
            lines.append(f"  [{status:>12}] {c.get('description', '')} (evidence {c.get('evidence_value')}; {c.get('section', '')})")
    for d in report.get("deductions") or []:
        lines.append(
            f"Deduction {d.get('methodology')}: uncertainty {100 * (d.get('uncertainty_fraction') or 0):.2f} %, "
            f"deduction {100 * (d.get('deduction_fraction') or 0):.2f} %, credited {d.get('credited', 0):,.1f}"
        )
    lines += ["", "Provenance: manifest.json lists the SHA-256 of every input and output; check with 'mrv report verify'."]
    return lines


def render_report_pdf(report: Mapping[str, Any], *, images: Mapping[str, tuple[str, Path]], out_pdf: Path) -> Path:
    """Write the PDF: summary page, one page per figure, then the field table."""
    out_pdf.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_pdf.with_name(out_pdf.name + ".tmp")
    with PdfPages(tmp, metadata={"CreationDate": None, "ModDate": None, "Creator": "soilcarbon-mrv"}) as pdf:
        _text_page(pdf, "Soil organic carbon MRV report", _summary_lines(report))
        for caption, png in images.values():
            fig = Figure(figsize=A4)
            ax = fig.add_axes((0.05, 0.15, 0.9, 0.75))
            ax.imshow(mpimg.imread(png))
            ax.set_axis_off()
            fig.text(0.05, 0.1, caption, fontsize=10, parse_math=False)
            pdf.savefig(fig)
        rows = [
            [str(f.get("field_id", "")), str(f.get("name", ""))[:28], f"{f.get('area_ha', 0):.1f}",
             _iv(f.get("soc_stock_t_ha"), ""), _iv((f.get("change") or {}).get("delta_soc_stock_t_ha"), "", 2)]
            for f in report.get("fields", [])
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
    tmp.replace(out_pdf)
    return out_pdf
