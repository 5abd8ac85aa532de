"""Verifier-facing outputs: provenance manifest, PNG maps and the self-contained HTML report."""

from __future__ import annotations

from mrv.report.html import render_report_html
from mrv.report.manifest import (
    Mismatch,
    VerifyResult,
    build_manifest,
    raise_on_mismatch,
    sha256_file,
    verify_manifest,
    write_manifest,
)
from mrv.report.maps import png_data_uri, render_map_png

__all__ = [
    "Mismatch",
    "VerifyResult",
    "build_manifest",
    "png_data_uri",
    "raise_on_mismatch",
    "render_map_png",
    "render_report_html",
    "sha256_file",
    "verify_manifest",
    "write_manifest",
]
