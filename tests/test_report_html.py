from __future__ import annotations

import base64
import copy
import io
import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image
from pyproj import Transformer

from mrv.errors import MRVError
from mrv.report.html import render_report_html
from mrv.report.maps import png_data_uri, render_map_png
from mrv.report.schema import Report

EVIL = "<script>alert(1)</script> & Söhne"


def _iv(mean: float | None, lo: float | None, hi: float | None) -> dict[str, Any]:
    return {"mean": mean, "lower_90": lo, "upper_90": hi}


def make_report() -> dict[str, Any]:
    return {
        "schema_version": 2,
        "run": {
            "name": "demo",
            "created_utc": "2024-11-05T10:20:30Z",
            "config": "configs/demo.yaml",
            "crs": "EPSG:32633",
            "depth_cm": 30,
            "rounds": ["2021", "2024"],
            "latest_round": "2024",
            "baseline_round": "2021",
            "confidence": 0.9,
        },
        "project": {
            "area_ha": 2300.5,
            "n_fields": 2,
            "soc_stock_t_ha": _iv(55.1, 53.0, 57.2),
            "soc_total_t": _iv(126757.55, 121926.4, 131588.6),
            "rounds": {
                "2021": {
                    "soc_stock_t_ha": _iv(53.84, 51.7, 55.9),
                    "soc_total_t": _iv(123860.0, 118900.0, 128600.0),
                },
                "2024": {
                    "soc_stock_t_ha": _iv(55.1, 53.0, 57.2),
                    "soc_total_t": _iv(126757.55, 121926.4, 131588.6),
                },
            },
            "change": {
                "delta_soc_stock_t_ha": _iv(1.26, 0.41, 2.11),
                "delta_soc_total_t": _iv(2897.6, 943.2, 4852.0),
                "co2e_t": _iv(10624.4, 3458.4, 17790.7),
            },
        },
        "fields": [
            {
                "field_id": "F001",
                "name": "North meadow",
                "farm_id": "farm-A",
                "practice": "cover_crops",
                "area_ha": 12.34,
                "soc_stock_t_ha": _iv(56.2, 50.1, 62.3),
                "soc_total_t": _iv(693.5, 618.2, 768.8),
                "rounds": {
                    "2021": {"soc_stock_t_ha": _iv(54.9, 49.0, 60.8)},
                    "2024": {"soc_stock_t_ha": _iv(56.2, 50.1, 62.3)},
                },
                "change": {
                    "delta_soc_stock_t_ha": _iv(1.3, -0.4, 3.0),
                    "co2e_t": _iv(58.8, -18.1, 135.7),
                },
            },
            {
                "field_id": "F002",
                "name": EVIL,
                "farm_id": "<b>farm-B</b>",
                "practice": "no_till",
                "area_ha": 7.5,
                "soc_stock_t_ha": _iv(None, None, None),
                "rounds": {"2024": {"soc_stock_t_ha": _iv(52.0, None, None)}},
                "change": {},
            },
        ],
        "model": {
            "kind": "quantile_regression_forest",
            "model_id": "qrf-20241105",
            "n_train": 360,
            "covariates": ["blue", "green", "swir1"],
            "cv": {
                "scheme": "spatial_block",
                "block_size_m": 1000,
                "rmse": 4.321,
                "bias": 0.12,
                "r2": 0.612,
                "ccc": 0.734,
                "picp_90": 0.887,
                "mean_width_90": 13.9,
                "baseline_rmse": 6.8,
            },
            "cv_random": {
                "scheme": "random_kfold",
                "rmse": 3.1,
                "bias": 0.01,
                "r2": 0.8,
                "ccc": 0.86,
                "picp_90": 0.91,
                "mean_width_90": 11.2,
                "baseline_rmse": 6.8,
            },
        },
        "samples": {
            "lab": {"submitted": 720, "accepted": 718, "rejected": 2},
            "crowd": {"submitted": 1500, "accepted": 1420, "rejected": 80},
        },
        "imagery": {
            "source": "local",
            "rounds": {
                "2021": {
                    "items": ["S2B_33UWP_20210510", "S2A_33UWP_20210604"],
                    "dropped": [{"item": "S2A_33UWP_20210420", "reason": "cloud cover 87 %"}],
                    "bare_observations_median": 3,
                },
                "2024": {
                    "items": ["S2B_33UWP_20240502"],
                    "dropped": [],
                    "corrected": [{"item": "S2B_33UWP_20240502", "reason": "negative reflectance on clear land: +0.1"}],
                },
            },
        },
        "maps": {"mean": "maps/soc_stock_mean.tif", "sd": "maps/soc_stock_sd.tif"},
        "methodology": {
            "id": "verra_vm0042_v2",
            "name": "VM0042 v2.0",
            "checks": [
                {
                    "requirement_id": "R1",
                    "description": "Sampling depth",
                    "section": "8.2",
                    "evidence_name": "depth_cm",
                    "evidence_value": 30,
                    "threshold": 30,
                    "op": ">=",
                    "passed": True,
                    "note": "",
                },
                {
                    "requirement_id": "R2",
                    "description": "Interval coverage",
                    "section": "8.5",
                    "evidence_name": "picp_90",
                    "evidence_value": 0.887,
                    "threshold": 0.9,
                    "op": ">=",
                    "passed": False,
                    "note": "Agency <Umweltamt> notes",
                },
                {
                    "requirement_id": "R3",
                    "description": "Leakage",
                    "section": "9",
                    "evidence_name": "leakage",
                    "evidence_value": None,
                    "threshold": None,
                    "op": None,
                    "passed": None,
                    "note": "",
                },
            ],
        },
        "deductions": [
            {
                "methodology": "verra_vm0042_v2",
                "estimate": 10624.4,
                "standard_error": 2158.0,
                "uncertainty_fraction": 0.334,
                "deduction_fraction": 0.134,
                "credited": 9200.8,
                "note": "",
            }
        ],
        "provenance": {
            "manifest": "manifest.json",
            "git_revision": "0123456789abcdef0123456789abcdef01234567",
            "packages": {"numpy": "2.1.0", "rasterio": "1.4.0"},
        },
    }


class _Doc(HTMLParser):
    """Collects tables (by id) as lists of rows of cell text, images, URLs and style text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[dict[str, str | None]] = []
        self.urls: list[tuple[str, str]] = []
        self.styles: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        attr = dict(attrs)
        for name in ("src", "href", "action", "poster", "data"):
            if attr.get(name) is not None:
                self.urls.append((name, str(attr[name])))
        if attr.get("style"):
            self.styles.append(str(attr["style"]))
        if tag == "img":
            self.images.append(attr)
        elif tag == "table" and attr.get("id"):
            self._table = str(attr["id"])
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "style":
            self._in_style = True

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def _png(path: Path, colour: tuple[int, int, int]) -> Path:
    Image.new("RGB", (8, 6), colour).save(path, format="PNG")
    return path


def _render(tmp_path: Path, report: dict[str, Any] | None = None, *, with_images: bool = True) -> tuple[str, _Doc]:
    images: dict[str, tuple[str, Path]] = {}
    if with_images:
        images = {
            "mean": ("Mean SOC stock 2024 (t C/ha)", _png(tmp_path / "m.png", (200, 120, 0))),
            "sd": ("Prediction SD", _png(tmp_path / "s.png", (0, 80, 200))),
        }
    out = render_report_html(
        Report.from_json(make_report() if report is None else report),
        images=images,
        out_html=tmp_path / "out" / "report.html",
    )
    assert out == tmp_path / "out" / "report.html"
    html = out.read_text(encoding="utf-8")
    doc = _Doc()
    doc.feed(html)
    doc.close()
    return html, doc


def _row(table: list[list[str]], first: str) -> list[str]:
    matches = [r for r in table if r and r[0] == first]
    assert len(matches) == 1, (first, table)
    return matches[0]


def test_full_report_tables_and_headline(tmp_path: Path) -> None:
    html, doc = _render(tmp_path)
    assert "<title>SOC MRV report - demo - 2024-11-05</title>" in html
    text = " ".join(" ".join(doc.text).split())
    assert "Mean SOC stock (2024) 55.1 t C/ha 90 % interval [53.0, 57.2]" in text
    assert "Total SOC (2024) 126,758 t C 90 % interval [121,926, 131,589]" in text
    assert "10,624 t CO2e 90 % interval [3,458, 17,791]" in text
    assert "2,300.5 ha 2 fields" in text

    fields = doc.tables["fields-table"]
    header = fields[0]
    assert header[:5] == ["Field id", "Name", "Farm", "Practice", "Area (ha)"]
    assert "SOC stock 2021 (t C/ha) [90 % interval]" in header
    assert "SOC stock 2024 (t C/ha) [90 % interval]" in header
    assert _row(fields, "F001") == [
        "F001",
        "North meadow",
        "farm-A",
        "cover_crops",
        "12.3",
        "54.9 [49.0, 60.8]",
        "56.2 [50.1, 62.3]",
        "1.30 [-0.40, 3.00]",
        "58.8 [-18.1, 135.7]",
    ]
    # Missing round, missing bounds and missing change degrade to n/a, never crash.
    assert _row(fields, "F002")[4:] == ["7.5", "n/a", "52.0 [n/a, n/a]", "n/a", "n/a"]

    cv = doc.tables["cv-table"]
    assert cv[0] == [
        "Metric",
        "Spatial CV (spatial_block, 1,000 m blocks)",
        "Random CV (random_kfold) - optimistic",
    ]
    assert _row(cv, "RMSE")[1:] == ["4.32", "3.10"]
    assert _row(cv, "Bias (mean error)")[1:] == ["0.12", "0.01"]
    assert _row(cv, "R²")[1:] == ["0.612", "0.800"]
    assert _row(cv, "Lin's concordance (CCC)")[1:] == ["0.734", "0.860"]
    assert _row(cv, "PICP: share of observations inside the 90 % interval")[1:] == [
        "88.7 %",
        "91.0 %",
    ]
    assert _row(cv, "Mean width of the 90 % interval")[1:] == ["13.90", "11.20"]
    assert _row(cv, "Baseline RMSE (null model)")[1:] == ["6.80", "6.80"]
    assert "optimistic" in text

    samples = doc.tables["samples-table"]
    assert samples[0] == ["Source", "Submitted", "Accepted", "Rejected"]
    assert _row(samples, "lab") == ["lab", "720", "718", "2"]
    assert _row(samples, "crowd") == ["crowd", "1,500", "1,420", "80"]
    assert _row(samples, "Total") == ["Total", "2,220", "2,138", "82"]

    meth = doc.tables["methodology-table"]
    assert [r[5] for r in meth[1:]] == ["PASS", "FAIL", "not assessed"]
    assert meth[1][:5] == ["R1: Sampling depth", "8.2", "depth_cm", "30", ">= 30"]
    assert "1 PASS, 1 FAIL, 1 not assessed" in text

    deductions = doc.tables["deductions-table"]
    assert deductions[1][:6] == [
        "verra_vm0042_v2",
        "10,624 t CO2e",
        "2,158 t CO2e",
        "33.4 %",
        "13.4 %",
        "9,201 t CO2e",
    ]
    prov = doc.tables["provenance-table"]
    assert _row(prov, "Git revision")[1] == "0123456789abcdef0123456789abcdef01234567"
    assert _row(doc.tables["packages-table"], "numpy") == ["numpy", "2.1.0"]
    assert _row(doc.tables["imagery-round-1"], "Items used") == ["Items used", "2"]
    assert "cloud cover 87 %" in text
    assert "corrected negative reflectance on clear land: +0.1" in " ".join(text.split())
    assert "not available" not in text


def test_images_embedded_and_no_external_urls(tmp_path: Path) -> None:
    html, doc = _render(tmp_path)
    srcs = [str(img.get("src")) for img in doc.images]
    assert len(srcs) == 2
    for src, name in zip(srcs, ("m.png", "s.png"), strict=True):
        assert src.startswith("data:image/png;base64,")
        decoded = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert decoded == (tmp_path / name).read_bytes()
    assert [img.get("alt") for img in doc.images] == [
        "Mean SOC stock 2024 (t C/ha)",
        "Prediction SD",
    ]
    # Only data: URIs and in-page anchors; no external resources of any kind.
    assert doc.urls, "expected the TOC anchors and images to be found"
    for name, url in doc.urls:
        assert url.startswith(("data:", "#")), (name, url)
    assert not {"script", "link", "iframe", "object", "embed"} & set(doc.tags)
    css = "\n".join(doc.styles)
    assert "@media print" in css
    assert "url(" not in css
    assert "@import" not in css
    assert "http://" not in html
    assert "https://" not in html
    assert "//cdn" not in html


def test_user_strings_are_escaped(tmp_path: Path) -> None:
    html, doc = _render(tmp_path)
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Söhne" in html
    assert "<b>farm-B</b>" not in html
    assert "&lt;b&gt;farm-B&lt;/b&gt;" in html
    assert "&lt;Umweltamt&gt;" in html
    assert _row(doc.tables["fields-table"], "F002")[1] == EVIL
    assert "script" not in doc.tags
    assert "b" not in doc.tags


def test_missing_optional_sections_say_not_available(tmp_path: Path) -> None:
    report = make_report()
    for key in (
        "methodology",
        "deductions",
        "provenance",
        "imagery",
        "samples",
        "maps",
    ):
        del report[key]
    report["fields"] = []
    report["model"] = {"kind": "qrf", "cv": {"scheme": "random_kfold", "rmse": None}}
    report["project"]["change"] = {"co2e_t": None}
    html, doc = _render(tmp_path, report, with_images=False)
    text = " ".join(" ".join(doc.text).split())
    for what in (
        "Map images",
        "Field results",
        "Sample counts",
        "Imagery summary",
        "Methodology checklist",
        "Uncertainty deductions",
        "Provenance",
    ):
        assert f"{what}: not available in this report." in text
    assert "fields-table" not in doc.tables
    assert not doc.images
    # A random-only CV is flagged and labelled optimistic; null metrics are n/a.
    assert "No spatial cross-validation is reported" in text
    cv = doc.tables["cv-table"]
    assert cv[0][1] == "Random CV (random_kfold) - optimistic"
    assert _row(cv, "RMSE")[1] == "n/a"
    assert "Change as CO2e (2021 to 2024) n/a 90 % interval [n/a, n/a]" in text


def test_minimal_report_renders(tmp_path: Path) -> None:
    full = make_report()
    minimal = {"schema_version": 2, "run": {**full["run"], "name": ""}, "project": full["project"], "fields": []}
    _, doc = _render(tmp_path, minimal, with_images=False)
    text = " ".join(" ".join(doc.text).split())
    assert "unnamed run" in text
    assert "Model and validation: not available" in text
    assert "Mean SOC stock (2024) 55.1 t C/ha" in text


def test_report_must_be_a_mapping_and_images_must_exist(tmp_path: Path) -> None:
    with pytest.raises(MRVError, match=r"Report\.from_json"):
        render_report_html(make_report(), images={}, out_html=tmp_path / "r.html")  # type: ignore[arg-type]
    with pytest.raises(MRVError, match="render_map_png"):
        render_report_html(
            Report.from_json(make_report()),
            images={"mean": ("Mean", tmp_path / "missing.png")},
            out_html=tmp_path / "r.html",
        )
    not_png = tmp_path / "x.png"
    not_png.write_text("not a png")
    with pytest.raises(MRVError, match="not a PNG"):
        png_data_uri(not_png)


def test_rendering_does_not_mutate_report(tmp_path: Path) -> None:
    report = make_report()
    before = copy.deepcopy(report)
    _render(tmp_path, report)
    assert report == before
    json.dumps(report)  # the fixture itself is valid report.json


def _write_tif(path: Path, data: np.ndarray, *, nodata: float | None) -> Affine:
    transform = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5500000.0)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=data.shape[0],
        width=data.shape[1],
        count=1,
        dtype="float32",
        crs="EPSG:32633",
        transform=transform,
        nodata=nodata,
    ) as dst:
        dst.write(data.astype("float32"), 1)
    return transform


def test_render_map_png_from_geotiff(tmp_path: Path) -> None:
    rng = np.random.default_rng(42)
    data = 50 + 10 * rng.standard_normal((500, 500))  # worst case for PNG size
    data[:40, :40] = np.nan
    data[100:110, :] = -9999.0
    tif = tmp_path / "soc_mean.tif"
    _write_tif(tif, data, nodata=-9999.0)

    to_lonlat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    xs = [501000, 503000, 503000, 501000, 501000]
    ys = [5499000, 5499000, 5497000, 5497000, 5499000]
    lon, lat = to_lonlat.transform(xs, ys)
    geojson = tmp_path / "fields.geojson"
    ring = [[float(a), float(b)] for a, b in zip(lon, lat, strict=True)]
    geojson.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {"field_id": "F001"},
                        "geometry": {"type": "Polygon", "coordinates": [ring]},
                    }
                ],
            }
        )
    )

    out = render_map_png(
        tif,
        tmp_path / "maps" / "soc_mean.png",
        title="Mean SOC stock 2024",
        units="t C/ha",
        fields_geojson=geojson,
    )
    payload = out.read_bytes()
    assert payload.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(payload) < 300_000
    image = Image.open(io.BytesIO(payload))
    assert 400 <= image.width <= 800
    assert 300 <= image.height <= 700
    assert png_data_uri(out) == "data:image/png;base64," + base64.b64encode(payload).decode()

    # Same map without outlines differs only where the outline is drawn (black pixels).
    plain = render_map_png(tif, tmp_path / "plain.png", title="Mean SOC stock 2024", units="t C/ha")
    with_lines = np.asarray(image.convert("RGB")).astype(int)
    without = np.asarray(Image.open(plain).convert("RGB")).astype(int)
    assert with_lines.shape == without.shape
    changed = np.any(with_lines != without, axis=2)
    assert changed.any()
    assert (with_lines[changed].sum(axis=1) < 200).mean() > 0.5


def test_render_map_png_handles_all_nodata_and_bad_input(tmp_path: Path) -> None:
    tif = tmp_path / "empty.tif"
    _write_tif(tif, np.full((20, 30), np.nan), nodata=None)
    out = render_map_png(tif, tmp_path / "empty.png", title="Empty", units="t C/ha")
    assert out.read_bytes().startswith(b"\x89PNG")
    with pytest.raises(MRVError, match="vmin"):
        render_map_png(tif, tmp_path / "x.png", title="x", units="u", vmin=2.0, vmax=1.0)
    with pytest.raises(MRVError, match="colormap"):
        render_map_png(tif, tmp_path / "x.png", title="x", units="u", cmap="nope")
    with pytest.raises(MRVError, match="Cannot read GeoTIFF"):
        render_map_png(tmp_path / "missing.tif", tmp_path / "x.png", title="x", units="u")


def test_real_report_credits_the_design_based_change(tmp_path: Path) -> None:
    """The fixture is a real run's report.json: the headline shows the design-based change it credits."""
    data = json.loads((Path(__file__).parent / "fixtures" / "report_v2.json").read_text(encoding="utf-8"))
    html, doc = _render(tmp_path, data, with_images=False)
    text = " ".join(" ".join(doc.text).split())
    co2e = data["design_based"]["change"]["project"]["co2e"]
    assert f"Change as CO2e (2021 to 2024) {co2e['mean']:,.1f} t CO2e" in text
    assert "Not significant the 90 % interval spans zero (design-based, re-measured sites)" in text
    meth = doc.tables["methodology-table"]
    assert len(meth) == 1 + len(data["methodology"]["checks"]) + len(data["methodology"]["vt0014"]["checks"])
    assert any(r[0].startswith("VT0014 r2_positive") for r in meth)
    assert _row(doc.tables["samples-table"], "lab") == ["lab", "120", "120", "0"]
    assert "report.json schema version 2" in text
