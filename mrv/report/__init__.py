"""Verifier-facing outputs: the typed report.json (:mod:`mrv.report.schema`), provenance manifest, PNG maps and the HTML report."""

from __future__ import annotations

from mrv.fsio import sha256_file
from mrv.report.html import render_report_html
from mrv.report.manifest import (
    Mismatch,
    VerifyResult,
    build_manifest,
    raise_on_mismatch,
    verify_manifest,
    write_manifest,
)
from mrv.report.maps import png_data_uri, render_map_png
from mrv.report.schema import REPORT_SCHEMA_VERSION, Report, read_report, report_json_schema

__all__ = [
    "REPORT_SCHEMA_VERSION",
    "Mismatch",
    "Report",
    "VerifyResult",
    "build_manifest",
    "png_data_uri",
    "raise_on_mismatch",
    "read_report",
    "render_map_png",
    "render_report_html",
    "report_json_schema",
    "sha256_file",
    "verify_manifest",
    "write_manifest",
]
