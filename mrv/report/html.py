"""Self-contained HTML rendering of ``report.json`` (the typed :class:`~mrv.report.schema.Report`) for the verifier.

The HTML has inline CSS only and embeds every image as a ``data:`` URI, so it renders offline
and can be archived as a single file. All strings from the report are escaped by Jinja2's
autoescaping; numbers are formatted here (with units) before they reach the template, so the
template only lays out strings.

Optional sections that are absent from the report are rendered as "not available".
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import jinja2

from mrv.errors import MRVError
from mrv.fsio import write_text
from mrv.report.maps import png_data_uri
from mrv.report.schema import (
    CvMetrics,
    DesignChange,
    DesignInterval,
    Interval,
    McChange,
    Report,
    RoundStocks,
)

__all__ = ["render_report_html"]

_TEMPLATE_PACKAGE = "mrv.report"
_TEMPLATE_NAME = "report.html.j2"
NA = "n/a"
_T = TypeVar("_T")

_STOCK = "t C/ha"
_TOTAL = "t C"
_CO2E = "t CO2e"
_AREA = "ha"

#: Cross-validation metrics in display order: key -> (label, kind).
_CV_METRICS: tuple[tuple[str, str, str], ...] = (
    ("rmse", "RMSE", "unit"),
    ("bias", "Bias (mean error)", "unit"),
    ("r2", "R²", "ratio"),
    ("ccc", "Lin's concordance (CCC)", "ratio"),
    ("picp_90", "PICP: share of observations inside the 90 % interval", "percent"),
    ("mean_width_90", "Mean width of the 90 % interval", "unit"),
    ("baseline_rmse", "Baseline RMSE (null model)", "unit"),
)
_CV_DESCRIPTIVE = frozenset({"scheme", "block_size_m"})


@dataclass(frozen=True)
class _Image:
    key: str
    caption: str
    uri: str


# --------------------------------------------------------------------------- formatting


def _as_float(value: object) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        out = float(value)
        return out if math.isfinite(out) else None
    return None


def _num(value: object, decimals: int, unit: str | None = None) -> str:
    """``1,234.5 t C`` with a fixed number of decimals; ``n/a`` for null/NaN/non-numbers."""
    x = _as_float(value)
    if x is None:
        return NA
    text = f"{x:,.{decimals}f}"
    if text.startswith("-") and float(text.replace(",", "")) == 0.0:
        text = text[1:]
    return f"{text} {unit}" if unit else text


def _total_decimals(value: object) -> int:
    x = _as_float(value)
    return 0 if x is not None and abs(x) >= 100 else 1


def _generic(value: object) -> str:
    """A scalar of unknown meaning: ints with separators, floats with 4 significant digits."""
    if value is None:
        return NA
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return NA
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence):
        return ", ".join(_generic(v) for v in value)
    return str(value)


def _is_scalar(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _lower(value: Interval | DesignInterval | None) -> float | None:
    if isinstance(value, DesignInterval):
        return value.bound("lower")
    return value.lower_90 if value is not None else None


def _upper(value: Interval | DesignInterval | None) -> float | None:
    if isinstance(value, DesignInterval):
        return value.bound("upper")
    return value.upper_90 if value is not None else None


def _interval(value: Interval | DesignInterval | None, decimals: int | None, unit: str) -> dict[str, str]:
    """Mean and 90 % bounds of an interval as strings (``n/a`` where missing).

    ``decimals=None`` picks 0 decimals for magnitudes of 100 and more, else 1.
    """
    mean = value.mean if value is not None else None
    d = _total_decimals(mean) if decimals is None else decimals
    mean_text = _num(mean, d)
    bounds = f"[{_num(_lower(value), d)}, {_num(_upper(value), d)}]"
    return {
        "mean": _num(mean, d, unit),
        "range": bounds,
        "cell": NA if not _has_interval(value) else f"{mean_text} {bounds}",
    }


def _has_interval(value: Interval | DesignInterval | None) -> bool:
    if value is None:
        return False
    return any(_as_float(v) is not None for v in (value.mean, _lower(value), _upper(value)))


# --------------------------------------------------------------------------- sections


def _run_section(report: Report) -> dict[str, Any]:
    run = report.run
    date = run.created_utc[:10] if run.created_utc else NA
    rows = [
        ("Run name", _generic(run.name)),
        ("Created (UTC)", _generic(run.created_utc)),
        ("Configuration", _generic(run.config)),
        ("Coordinate reference system", _generic(run.crs)),
        ("Sampling depth", _num(run.depth_cm, 0, "cm")),
        ("Rounds", _generic(run.rounds) if run.rounds else NA),
        ("Baseline round", _generic(run.baseline_round)),
        ("Latest round", _generic(run.latest_round)),
        ("Confidence level of intervals", _num(run.confidence * 100, 0, "%")),
        ("report.json schema version", _generic(report.schema_version)),
    ]
    return {"name": _generic(run.name) if run.name else "unnamed run", "date": date, "rows": rows}


def _rounds(report: Report) -> list[str]:
    if report.run.rounds:
        return list(report.run.rounds)
    seen: list[str] = []
    for keys in (report.project.rounds, *(f.rounds for f in report.fields)):
        seen.extend(k for k in keys if k not in seen)
    return sorted(seen)


def _design_change(report: Report) -> DesignChange | None:
    design = report.design_based
    return design.change if design is not None else None


def _headline(report: Report) -> list[dict[str, str]]:
    project, run = report.project, report.run
    latest, baseline = run.latest_round, run.baseline_round
    latest_round = _lookup(project.rounds, latest)
    stock: Interval | DesignInterval | None = latest_round.soc_stock_t_ha if latest_round else None
    if not _has_interval(stock):
        stock = project.soc_stock_t_ha
    total: Interval | DesignInterval | None = latest_round.soc_total_t if latest_round else None
    if not _has_interval(total):
        total = project.soc_total_t
    change = _Change.of(project.change)
    basis = "map Monte Carlo"
    design = _design_change(report)
    if design is not None and design.project is not None:  # the credited change: design-based, re-measured sites
        basis = "design-based, re-measured sites"
        change = _Change(design.project.per_ha, design.project.total, design.project.co2e)
    suffix = f" ({_generic(latest)})" if latest else ""
    span = f" ({_generic(baseline)} to {_generic(latest)})" if baseline and latest else ""
    items = [
        ("Mean SOC stock" + suffix, _interval(stock, 1, _STOCK)),
        ("Total SOC" + suffix, _interval(total, None, _TOTAL)),
        ("Change in mean SOC stock" + span, _interval(change.stock, 2, _STOCK)),
        ("Change in total SOC" + span, _interval(change.total, None, _TOTAL)),
        ("Change as CO2e" + span, _interval(change.co2e, None, _CO2E)),
    ]
    out = [{"label": label, "value": iv["mean"], "note": f"90 % interval {iv['range']}"} for label, iv in items]
    out.extend(_credit_headline(report, change.co2e, basis))
    out.append(
        {
            "label": "Project area",
            "value": _num(project.area_ha, 1, _AREA),
            "note": f"{_generic(project.n_fields)} fields",
        }
    )
    return out


@dataclass(frozen=True)
class _Change:
    """A change shown in the report: Monte Carlo (:class:`McChange`) or design-based blocks."""

    stock: Interval | DesignInterval | None = None
    total: Interval | DesignInterval | None = None
    co2e: Interval | DesignInterval | None = None

    @classmethod
    def of(cls, change: McChange | None) -> _Change:
        if change is None:
            return cls()
        return cls(change.delta_soc_stock_t_ha, change.delta_soc_total_t, change.co2e_t)


def _credit_headline(report: Report, co2: Interval | DesignInterval | None, basis: str) -> list[dict[str, str]]:
    """Whether the change is significant (its 90 % interval excludes zero) and what each methodology credits."""
    out: list[dict[str, str]] = []
    lo, hi = _as_float(_lower(co2)), _as_float(_upper(co2))
    if lo is not None and hi is not None:
        if lo > 0:
            verdict, note = "Significant gain", "the 90 % interval lies above zero"
        elif hi < 0:
            verdict, note = "Significant loss", "the 90 % interval lies below zero"
        else:
            verdict, note = "Not significant", "the 90 % interval spans zero"
        out.append({"label": "Change significant?", "value": verdict, "note": f"{note} ({basis})"})
    for d in report.deductions or ():
        unit = d.units or _CO2E
        what = "emission" if d.reported_as == "emission" else "credited"
        out.append(
            {
                "label": f"{_generic(d.methodology)} {what}",
                "value": _num(d.credited, _total_decimals(d.credited), unit),
                "note": f"estimate {_num(d.estimate, _total_decimals(d.estimate), unit)}, "
                f"deduction {_num((_as_float(d.deduction_fraction) or 0.0) * 100, 1, '%')}",
            }
        )
    return out


def _fields(report: Report, rounds: list[str]) -> dict[str, Any] | None:
    if not report.fields:
        return None
    columns = [f"SOC stock {r} ({_STOCK}) [90 % interval]" for r in rounds] or [f"SOC stock ({_STOCK}) [90 % interval]"]
    design = _design_change(report)
    design_fields = (design.fields if design is not None else None) or {}
    rows = []
    for f in report.fields:
        if rounds:
            stocks = [_interval(_round_stock(f.rounds, r), 1, "")["cell"] for r in rounds]
        else:
            stocks = [_interval(f.soc_stock_t_ha, 1, "")["cell"]]
        change = _Change.of(f.change)
        field_design = _lookup(design_fields, f.field_id)
        if field_design is not None:  # design-based field change (re-measured sites), as in the headline
            change = _Change(field_design.per_ha, None, field_design.co2e)
        rows.append(
            {
                "field_id": _generic(f.field_id),
                "name": _generic(f.name),
                "farm": _generic(f.farm_id),
                "practice": _generic(f.practice),
                "area": _num(f.area_ha, 1),
                "stocks": stocks,
                "change": _interval(change.stock, 2, "")["cell"],
                "co2e": _interval(change.co2e, None, "")["cell"],
            }
        )
    return {"columns": columns, "rows": rows}


def _round_stock(rounds: Mapping[str, RoundStocks], name: str) -> Interval | None:
    entry = _lookup(rounds, name)
    return entry.soc_stock_t_ha if entry is not None else None


def _cv_value(value: object, kind: str, unit: str) -> str:
    if kind == "percent":
        x = _as_float(value)
        return _num(x * 100, 1, "%") if x is not None else NA
    if kind == "ratio":
        return _num(value, 3)
    return _num(value, 2, unit or None)


def _cv_label(cv: CvMetrics, *, random: bool) -> str:
    scheme = cv.scheme or "unspecified scheme"
    if random or "random" in scheme.lower():
        return f"Random CV ({scheme}) - optimistic"
    if "spatial" in scheme.lower() or "block" in scheme.lower():
        block = _as_float(cv.block_size_m)
        blocks = f", {_num(block, 0, 'm')} blocks" if block is not None else ""
        return f"Spatial CV ({scheme}{blocks})"
    return f"Cross-validation ({scheme})"


def _model(report: Report) -> dict[str, Any] | None:
    model = report.model
    if model is None:
        return None
    unit = model.units or model.target_units or ""
    rows = [
        ("Model", _generic(model.kind)),
        ("Model id", _generic(model.model_id)),
        ("Training samples", _generic(model.n_train)),
        ("Covariates", _generic(model.covariates) if model.covariates else NA),
    ]
    if model.target_units is not None:
        rows.append(("target_units", _generic(model.target_units)))
    rows.extend((str(key), _generic(value)) for key, value in model.extra.items() if _is_scalar(value))
    if model.cv_coverage_by_decile:
        cells = [f"{_generic(d.decile)}: {_num(d.picp, 2)} (n {_generic(d.n)})" for d in model.cv_coverage_by_decile]
        rows.append(("Spatial-CV 90 % coverage by decile of observed stock", "; ".join(cells)))

    schemes: list[tuple[str, CvMetrics]] = []
    if model.cv is not None:
        schemes.append((_cv_label(model.cv, random=False), model.cv))
    if model.cv_random is not None:
        schemes.append((_cv_label(model.cv_random, random=True), model.cv_random))
    metric_rows: list[tuple[str, list[str]]] = []
    if schemes:
        for key, label, kind in _CV_METRICS:
            metric_rows.append((label, [_cv_value(getattr(s, key), kind, unit) for _, s in schemes]))
        extra_keys: list[str] = []
        for _, s in schemes:
            extra_keys.extend(k for k, v in s.extra.items() if k not in extra_keys and _is_scalar(v))
        for key in extra_keys:
            metric_rows.append((key, [_generic(s.extra[key]) if key in s.extra else NA for _, s in schemes]))
    cv = model.cv
    spatial = cv is not None and "random" not in (cv.scheme or "").lower()
    return {
        "rows": rows,
        "cv_columns": [label for label, _ in schemes],
        "cv_rows": metric_rows,
        "has_random": model.cv_random is not None or (cv is not None and not spatial),
        "has_spatial": spatial,
    }


def _samples(report: Report) -> dict[str, Any] | None:
    if not report.samples:
        return None
    rows = []
    totals = {"submitted": 0, "accepted": 0, "rejected": 0}
    for source, counts in report.samples.items():
        row = {"source": str(source)}
        for key in totals:
            n = int(getattr(counts, key))
            row[key] = _generic(n)
            totals[key] += n
        rows.append(row)
    total_row = {k: _generic(v) for k, v in totals.items()} if len(rows) > 1 else None
    return {"rows": rows, "total": total_row}


def _imagery(report: Report) -> dict[str, Any] | None:
    imagery = report.imagery
    if imagery is None:
        return None
    rounds = []
    for name, r in imagery.rounds.items():
        # Scenes the pipeline dropped, corrected (metadata and data disagreed) or flagged, with the reason.
        dropped = [
            (_generic(d.item), decision, _generic(d.reason) if d.reason is not None else NA)
            for decision, decided in (("dropped", r.dropped), ("corrected", r.corrected), ("flagged", r.flagged))
            for d in decided or ()
        ]
        rounds.append(
            {
                "name": str(name),
                "n_items": _generic(len(r.items)),
                "item_ids": list(r.items),
                "dropped": dropped,
                "bare": _generic(r.bare_observations_median),
                "extra": [(str(k), _generic(v)) for k, v in r.extra.items() if _is_scalar(v)],
            }
        )
    return {"rows": [("source", _generic(imagery.source))], "rounds": rounds}


_CSS = {"PASS": "pass", "FAIL": "fail", "not assessed": "na"}


def _lookup(mapping: Mapping[str, _T], key: str) -> _T | None:
    """``mapping[key]``, or ``None`` when the report has no entry for ``key``."""
    return mapping.get(key)


def _status(passed: bool | None) -> str:
    return "PASS" if passed is True else "FAIL" if passed is False else "not assessed"


def _methodology(report: Report) -> dict[str, Any] | None:
    meth = report.methodology
    if meth is None:
        return None
    rows = []
    counts = {"PASS": 0, "FAIL": 0, "not assessed": 0}
    for c in meth.checks:
        status = _status(c.passed)
        counts[status] += 1
        threshold = _generic(c.threshold)
        rows.append(
            {
                "requirement_id": _generic(c.requirement_id),
                "description": _generic(c.description),
                "section": _generic(c.section),
                "evidence_name": _generic(c.evidence_name),
                "evidence_value": _generic(c.evidence_value),
                "threshold": f"{c.op} {threshold}" if c.op else threshold,
                "status": status,
                "css": _CSS[status],
                "note": _generic(c.note) if c.note else "",
            }
        )
    summary = ", ".join(f"{n} {label}" for label, n in counts.items())
    vt = meth.vt0014
    for v in (vt.checks if vt is not None else None) or ():
        status = _status(v.passed)
        rows.append(
            {
                "requirement_id": f"VT0014 {_generic(v.id)}",
                "description": _generic(v.description),
                "section": _generic(v.section),
                "evidence_name": "validation data",
                "evidence_value": _generic(v.value),
                "threshold": _generic(v.threshold),
                "status": status,
                "css": _CSS[status],
                "note": _generic(v.note) if v.note else "",
            }
        )
    if vt is not None:
        summary += (
            f"; VT0014 validation ({_generic(vt.n_validation)} points: {_generic(vt.selection)}): {_status(vt.passed)}"
        )
    return {"id": _generic(meth.id), "name": _generic(meth.name), "rows": rows, "summary": summary}


def _deductions(report: Report) -> list[dict[str, str]] | None:
    if not report.deductions:
        return None
    rows = []
    for d in report.deductions:
        unit = d.units or _CO2E
        unc = _as_float(d.uncertainty_fraction)
        ded = _as_float(d.deduction_fraction)
        rows.append(
            {
                "methodology": _generic(d.methodology),
                "estimate": _num(d.estimate, _total_decimals(d.estimate), unit),
                "se": _num(d.standard_error, _total_decimals(d.standard_error), unit),
                "uncertainty": _num(unc * 100, 1, "%") if unc is not None else NA,
                "deduction": _num(ded * 100, 1, "%") if ded is not None else NA,
                "credited": _num(d.credited, _total_decimals(d.credited), unit),
                "note": _generic(d.note) if d.note else "",
            }
        )
    return rows


def _provenance(report: Report) -> dict[str, Any] | None:
    prov = report.provenance
    if prov is None:
        return None
    rows = [
        ("Manifest", _generic(prov.manifest)),
        ("Package version", _generic(prov.mrv_version)),
        ("Git revision", _generic(prov.source_revision or prov.git_revision)),
    ]
    if prov.verify_with is not None:
        rows.append(("verify_with", _generic(prov.verify_with)))
    rows.extend((str(k), _generic(v)) for k, v in prov.extra.items() if _is_scalar(v))
    packages = [(str(k), _generic(v)) for k, v in sorted((prov.packages or {}).items())]
    return {"rows": rows, "packages": packages}


def _images(images: Mapping[str, tuple[str, Path]]) -> list[_Image]:
    out = []
    for key, (caption, path) in images.items():
        if not Path(path).is_file():
            raise MRVError(
                f"Image {key!r} ({path}) does not exist; render it with render_map_png before "
                "the report, or leave it out of `images`."
            )
        out.append(_Image(key=str(key), caption=str(caption), uri=png_data_uri(Path(path))))
    return out


def _map_sources(report: Report) -> list[tuple[str, str]]:
    maps = report.maps
    if maps is None:
        return []
    named = [(f.name, getattr(maps, f.name)) for f in dataclasses.fields(maps) if f.name != "extra"]
    return [(k, _generic(v)) for k, v in [*named, *maps.extra.items()] if v is not None]


# --------------------------------------------------------------------------- rendering


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _template_source() -> str:
    return resources.files(_TEMPLATE_PACKAGE).joinpath("templates", _TEMPLATE_NAME).read_text(encoding="utf-8")


def _context(report: Report, images: Iterable[_Image]) -> dict[str, Any]:
    rounds = _rounds(report)
    return {
        "run": _run_section(report),
        "headline": _headline(report),
        "images": list(images),
        "map_sources": _map_sources(report),
        "fields": _fields(report, rounds),
        "model": _model(report),
        "samples": _samples(report),
        "imagery": _imagery(report),
        "methodology": _methodology(report),
        "deductions": _deductions(report),
        "provenance": _provenance(report),
        "NA": NA,
    }


def render_report_html(
    report: Report,
    *,
    images: Mapping[str, tuple[str, Path]],
    out_html: Path,
) -> Path:
    """Render ``report`` (the typed ``report.json``, :meth:`Report.from_json`) to one self-contained HTML file.

    ``images`` maps a key to ``(caption, png_path)``; the PNGs are embedded as data URIs in the
    given order. Returns ``out_html``.
    """
    if not isinstance(report, Report):
        raise MRVError(
            "The report must be a mrv.report.schema.Report; read report.json with Report.from_json(json.load(f))."
        )
    context = _context(report, _images(images))
    try:
        template = _environment().from_string(_template_source())
        html = template.render(**context)
    except jinja2.TemplateError as exc:  # pragma: no cover - a template bug, not user input
        raise MRVError(
            f"The report template failed to render ({exc}); this is a bug in mrv.report - "
            "please report it with the report.json that triggered it."
        ) from exc
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    write_text(out_html, html)
    return out_html
