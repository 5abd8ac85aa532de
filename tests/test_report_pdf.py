"""The printable PDF report: summary page, one page per figure, the field table over pages."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from mrv.report.pdf import ROWS_PER_PAGE, render_report_pdf
from mrv.report.schema import Report


def test_pdf_has_summary_figure_and_table_pages(tmp_path: Path) -> None:
    png = tmp_path / "map.png"
    fig = Figure(figsize=(2, 2))
    fig.add_subplot().imshow(np.arange(16.0).reshape(4, 4))
    fig.savefig(png)
    interval = {"mean": 50.0, "lower_90": 45.0, "upper_90": 55.0}
    rounds = {"2024": {"soc_stock_t_ha": interval}}
    fields = [
        {"field_id": f"F{i:03d}", "name": "Huber & Söhne $x$ <b>", "farm_id": "", "practice": "", "area_ha": 10.0,
         "soc_stock_t_ha": interval, "rounds": rounds}
        for i in range(ROWS_PER_PAGE + 5)
    ]  # fmt: skip
    check = {"requirement_id": "depth", "description": "depth", "section": "8.2", "evidence_name": "depth_cm",
             "evidence_value": 30, "threshold": 30, "op": ">=", "passed": True, "note": ""}  # fmt: skip
    run = {"name": "t", "created_utc": "2024-11-01T00:00:00Z", "crs": "EPSG:32633", "rounds": ["2021", "2024"],
           "latest_round": "2024", "baseline_round": "2021", "depth_cm": 30, "confidence": 0.9}  # fmt: skip
    report = Report.from_json({
        "schema_version": 2,
        "run": run,
        "project": {"area_ha": 450.0, "n_fields": len(fields), "soc_stock_t_ha": interval, "soc_total_t": interval,
                    "rounds": rounds},
        "fields": fields,
        "methodology": {"id": "vm0042", "name": "VM0042", "checks": [check]},
    })  # fmt: skip
    out = render_report_pdf(report, images={"mean": ("Mean map", png)}, out_pdf=tmp_path / "r" / "report.pdf")
    data = out.read_bytes()
    assert data.startswith(b"%PDF")
    # 1 summary page + 1 figure page + 2 table pages (45 fields, 40 per page)
    assert len(re.findall(rb"/Type /Page\b", data)) == 4
    again = render_report_pdf(report, images={"mean": ("Mean map", png)}, out_pdf=tmp_path / "again.pdf")
    assert again.read_bytes() == data  # reproducible bytes, so the manifest hash is stable
