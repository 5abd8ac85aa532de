"""Self-contained HTML rendering of ``report.json`` for the verifier.

The HTML has inline CSS only and embeds every image as a ``data:`` URI, so it renders offline
and can be archived as a single file. All strings from the report are escaped by Jinja2's
autoescaping; numbers are formatted here (with units) before they reach the template, so the
template only lays out strings.

Optional sections that are absent from the report are rendered as "not available".
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from mrv.errors import MRVError
from mrv.report.maps import png_data_uri

__all__ = ["render_report_html"]

_TEMPLATE_PACKAGE = "mrv.report"
_TEMPLATE_NAME = "report.html.j2"
NA = "n/a"

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


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _nested(obj: object, *keys: str) -> object:
    for key in keys:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _interval(value: object, decimals: int | None, unit: str) -> dict[str, str]:
    """Mean and 90 % bounds of an interval object as strings (``n/a`` where missing).

    ``decimals=None`` picks 0 decimals for magnitudes of 100 and more, else 1.
    """
    obj = _mapping(value)
    mean = obj.get("mean")
    d = _total_decimals(mean) if decimals is None else decimals
    mean_text = _num(mean, d)
    bounds = f"[{_num(obj.get('lower_90'), d)}, {_num(obj.get('upper_90'), d)}]"
    return {
        "mean": _num(mean, d, unit),
        "range": bounds,
        "cell": NA if not _has_interval(obj) else f"{mean_text} {bounds}",
    }


def _has_interval(value: object) -> bool:
    obj = _mapping(value)
    return any(_as_float(obj.get(k)) is not None for k in ("mean", "lower_90", "upper_90"))


# --------------------------------------------------------------------------- sections


def _run_section(report: Mapping[str, Any]) -> dict[str, Any]:
    run = _mapping(report.get("run"))
    name = run.get("name")
    created = run.get("created_utc")
    date = str(created)[:10] if isinstance(created, str) and created else NA
    confidence = _as_float(run.get("confidence"))
    rows = [
        ("Run name", _generic(name)),
        ("Created (UTC)", _generic(created)),
        ("Configuration", _generic(run.get("config"))),
        ("Coordinate reference system", _generic(run.get("crs"))),
        ("Sampling depth", _num(run.get("depth_cm"), 0, "cm")),
        ("Rounds", _generic(run.get("rounds")) if run.get("rounds") else NA),
        ("Baseline round", _generic(run.get("baseline_round"))),
        ("Latest round", _generic(run.get("latest_round"))),
        (
            "Confidence level of intervals",
            _num(confidence * 100, 0, "%") if confidence is not None else NA,
        ),
        ("report.json schema version", _generic(report.get("schema_version"))),
    ]
    return {
        "name": _generic(name) if name else "unnamed run",
        "date": date,
        "rows": rows,
    }


def _rounds(report: Mapping[str, Any]) -> list[str]:
    run_rounds = _nested(report, "run", "rounds")
    if isinstance(run_rounds, list) and run_rounds:
        return [str(r) for r in run_rounds]
    seen: list[str] = []
    sources: list[object] = [_nested(report, "project", "rounds")]
    fields = report.get("fields")
    if isinstance(fields, list):
        sources.extend(_mapping(f).get("rounds") for f in fields)
    for src in sources:
        for key in _mapping(src):
            if str(key) not in seen:
                seen.append(str(key))
    return sorted(seen)


def _headline(report: Mapping[str, Any]) -> list[dict[str, str]] | None:
    project = _mapping(report.get("project"))
    if not project:
        return None
    run = _mapping(report.get("run"))
    latest = run.get("latest_round")
    baseline = run.get("baseline_round")
    latest_round = _mapping(_nested(project, "rounds", str(latest))) if latest else {}
    stock = latest_round.get("soc_stock_t_ha")
    if not _has_interval(stock):
        stock = project.get("soc_stock_t_ha")
    total = latest_round.get("soc_total_t")
    if not _has_interval(total):
        total = project.get("soc_total_t")
    change = _mapping(project.get("change"))
    design = _mapping(_nested(report, "design_based", "change", "project"))
    basis = "map Monte Carlo"
    if design:  # the credited change: design-based, from the re-measured sites
        basis = "design-based, re-measured sites"
        change = {"delta_soc_stock_t_ha": design.get("per_ha"), "delta_soc_total_t": design.get("total"),
                  "co2e_t": design.get("co2e")}  # fmt: skip
    suffix = f" ({_generic(latest)})" if latest else ""
    span = f" ({_generic(baseline)} to {_generic(latest)})" if baseline and latest else ""

    items = [
        ("Mean SOC stock" + suffix, _interval(stock, 1, _STOCK)),
        ("Total SOC" + suffix, _interval(total, None, _TOTAL)),
        (
            "Change in mean SOC stock" + span,
            _interval(change.get("delta_soc_stock_t_ha"), 2, _STOCK),
        ),
        (
            "Change in total SOC" + span,
            _interval(change.get("delta_soc_total_t"), None, _TOTAL),
        ),
        ("Change as CO2e" + span, _interval(change.get("co2e_t"), None, _CO2E)),
    ]
    out = [{"label": label, "value": iv["mean"], "note": f"90 % interval {iv['range']}"} for label, iv in items]
    out.extend(_credit_headline(report, change, basis))
    out.append(
        {
            "label": "Project area",
            "value": _num(project.get("area_ha"), 1, _AREA),
            "note": f"{_generic(project.get('n_fields'))} fields",
        }
    )
    return out


def _credit_headline(report: Mapping[str, Any], change: Mapping[str, Any], basis: str) -> list[dict[str, str]]:
    """Whether the change is significant (its 90 % interval excludes zero) and what each methodology credits."""
    out: list[dict[str, str]] = []
    co2 = _mapping(change.get("co2e_t"))
    lo, hi = _as_float(co2.get("lower_90")), _as_float(co2.get("upper_90"))
    if lo is not None and hi is not None:
        if lo > 0:
            verdict, note = "Significant gain", "the 90 % interval lies above zero"
        elif hi < 0:
            verdict, note = "Significant loss", "the 90 % interval lies below zero"
        else:
            verdict, note = "Not significant", "the 90 % interval spans zero"
        out.append({"label": "Change significant?", "value": verdict, "note": f"{note} ({basis})"})
    raw = report.get("deductions")
    for item in raw if isinstance(raw, list) else []:
        d = _mapping(item)
        unit = str(d.get("units") or _CO2E)
        credited = _as_float(d.get("credited"))
        what = "emission" if d.get("reported_as") == "emission" else "credited"
        out.append(
            {
                "label": f"{_generic(d.get('methodology'))} {what}",
                "value": _num(credited, _total_decimals(credited), unit),
                "note": f"estimate {_num(d.get('estimate'), _total_decimals(d.get('estimate')), unit)}, "
                f"deduction {_num((_as_float(d.get('deduction_fraction')) or 0.0) * 100, 1, '%')}",
            }
        )
    return out


def _fields(report: Mapping[str, Any], rounds: list[str]) -> dict[str, Any] | None:
    fields = report.get("fields")
    if not isinstance(fields, list) or not fields:
        return None
    columns = [f"SOC stock {r} ({_STOCK}) [90 % interval]" for r in rounds] or [f"SOC stock ({_STOCK}) [90 % interval]"]
    rows = []
    for raw in fields:
        f = _mapping(raw)
        if rounds:
            stocks = [_interval(_nested(f, "rounds", r, "soc_stock_t_ha"), 1, "")["cell"] for r in rounds]
        else:
            stocks = [_interval(f.get("soc_stock_t_ha"), 1, "")["cell"]]
        change = _mapping(f.get("change"))
        design = _mapping(_nested(report, "design_based", "change", "fields", str(f.get("field_id"))))
        if design:  # design-based field change (re-measured sites), as in the headline
            change = {"delta_soc_stock_t_ha": design.get("per_ha"), "co2e_t": design.get("co2e")}
        rows.append(
            {
                "field_id": _generic(f.get("field_id")),
                "name": _generic(f.get("name")),
                "farm": _generic(f.get("farm_id")),
                "practice": _generic(f.get("practice")),
                "area": _num(f.get("area_ha"), 1),
                "stocks": stocks,
                "change": _interval(change.get("delta_soc_stock_t_ha"), 2, "")["cell"],
                "co2e": _interval(change.get("co2e_t"), None, "")["cell"],
            }
        )
    return {"columns": columns, "rows": rows}


def _cv_value(value: object, kind: str, unit: str) -> str:
    if kind == "percent":
        x = _as_float(value)
        return _num(x * 100, 1, "%") if x is not None else NA
    if kind == "ratio":
        return _num(value, 3)
    return _num(value, 2, unit or None)


def _cv_label(cv: Mapping[str, Any], *, random: bool) -> str:
    scheme = str(cv.get("scheme") or "unspecified scheme")
    if random or "random" in scheme.lower():
        return f"Random CV ({scheme}) - optimistic"
    if "spatial" in scheme.lower() or "block" in scheme.lower():
        block = _as_float(cv.get("block_size_m"))
        blocks = f", {_num(block, 0, 'm')} blocks" if block is not None else ""
        return f"Spatial CV ({scheme}{blocks})"
    return f"Cross-validation ({scheme})"


def _model(report: Mapping[str, Any]) -> dict[str, Any] | None:
    model = _mapping(report.get("model"))
    if not model:
        return None
    unit = str(model.get("units") or model.get("target_units") or "")
    rows = [
        ("Model", _generic(model.get("kind"))),
        ("Model id", _generic(model.get("model_id"))),
        ("Training samples", _generic(model.get("n_train"))),
        (
            "Covariates",
            _generic(model.get("covariates")) if model.get("covariates") else NA,
        ),
    ]
    shown = {"kind", "model_id", "n_train", "covariates", "cv", "cv_random", "units"}
    for key, value in model.items():
        if key not in shown and _is_scalar(value):
            rows.append((str(key), _generic(value)))
    deciles = model.get("cv_coverage_by_decile")
    if isinstance(deciles, list) and deciles:
        cells = [
            f"{_generic(_mapping(d).get('decile'))}: {_num(_mapping(d).get('picp'), 2)} (n {_generic(_mapping(d).get('n'))})"
            for d in deciles
        ]
        rows.append(("Spatial-CV 90 % coverage by decile of observed stock", "; ".join(cells)))

    schemes: list[tuple[str, Mapping[str, Any]]] = []
    cv = _mapping(model.get("cv"))
    if cv:
        schemes.append((_cv_label(cv, random=False), cv))
    cv_random = _mapping(model.get("cv_random"))
    if cv_random:
        schemes.append((_cv_label(cv_random, random=True), cv_random))
    metric_rows: list[tuple[str, list[str]]] = []
    if schemes:
        for key, label, kind in _CV_METRICS:
            metric_rows.append((label, [_cv_value(s.get(key), kind, unit) for _, s in schemes]))
        known = {k for k, _, _ in _CV_METRICS} | _CV_DESCRIPTIVE
        extra_keys: list[str] = []
        for _, s in schemes:
            for key, value in s.items():
                if key not in known and key not in extra_keys and _is_scalar(value):
                    extra_keys.append(str(key))
        for key in extra_keys:
            metric_rows.append((key, [_generic(s.get(key)) for _, s in schemes]))
    spatial = bool(cv) and "random" not in str(cv.get("scheme", "")).lower()
    return {
        "rows": rows,
        "cv_columns": [label for label, _ in schemes],
        "cv_rows": metric_rows,
        "has_random": bool(cv_random) or (bool(cv) and not spatial),
        "has_spatial": spatial,
    }


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _samples(report: Mapping[str, Any]) -> dict[str, Any] | None:
    samples = _mapping(report.get("samples"))
    if not samples:
        return None
    rows = []
    totals = {"submitted": 0, "accepted": 0, "rejected": 0}
    complete = {k: True for k in totals}
    for source, raw in samples.items():
        counts = _mapping(raw)
        row = {"source": str(source)}
        for key in totals:
            n = _count(counts.get(key))
            row[key] = _generic(n)
            if n is None:
                complete[key] = False
            else:
                totals[key] += n
        rows.append(row)
    total_row = None
    if len(rows) > 1:
        total_row = {k: (_generic(v) if complete[k] else NA) for k, v in totals.items()}
    return {"rows": rows, "total": total_row}


def _imagery(report: Mapping[str, Any]) -> dict[str, Any] | None:
    imagery = _mapping(report.get("imagery"))
    if not imagery:
        return None
    rounds = []
    for name, raw in _mapping(imagery.get("rounds")).items():
        r = _mapping(raw)
        items = r.get("items")
        item_list = [str(i) for i in items] if isinstance(items, list) else []
        # Scenes the pipeline dropped, corrected (metadata and data disagreed) or flagged, with the reason.
        dropped = []
        for decision in ("dropped", "corrected", "flagged"):
            decided = r.get(decision)
            for d in decided if isinstance(decided, list) else []:
                dm = _mapping(d)
                item, reason = (dm.get("item"), dm.get("reason")) if dm else (d, None)
                dropped.append((_generic(item), decision, _generic(reason) if reason is not None else NA))
        extra = [
            (str(k), _generic(v))
            for k, v in r.items()
            if k not in {"items", "dropped", "corrected", "flagged", "bare_observations_median"} and _is_scalar(v)
        ]
        rounds.append(
            {
                "name": str(name),
                "n_items": _generic(len(item_list)) if isinstance(items, list) else NA,
                "item_ids": item_list,
                "dropped": dropped,
                "bare": _generic(r.get("bare_observations_median")),
                "extra": extra,
            }
        )
    rows = [(str(k), _generic(v)) for k, v in imagery.items() if k != "rounds" and _is_scalar(v)]
    return {"rows": rows, "rounds": rounds}


def _methodology(report: Mapping[str, Any]) -> dict[str, Any] | None:
    meth = _mapping(report.get("methodology"))
    if not meth:
        return None
    rows = []
    counts = {"PASS": 0, "FAIL": 0, "not assessed": 0}
    checks = meth.get("checks")
    for raw in checks if isinstance(checks, list) else []:
        c = _mapping(raw)
        passed = c.get("passed")
        status = "PASS" if passed is True else "FAIL" if passed is False else "not assessed"
        counts[status] += 1
        op = c.get("op")
        threshold = _generic(c.get("threshold"))
        rows.append(
            {
                "requirement_id": _generic(c.get("requirement_id")),
                "description": _generic(c.get("description")),
                "section": _generic(c.get("section")),
                "evidence_name": _generic(c.get("evidence_name")),
                "evidence_value": _generic(c.get("evidence_value")),
                "threshold": f"{op} {threshold}" if op else threshold,
                "status": status,
                "css": {"PASS": "pass", "FAIL": "fail"}.get(status, "na"),
                "note": _generic(c.get("note")) if c.get("note") else "",
            }
        )
    summary = ", ".join(f"{n} {label}" for label, n in counts.items())
    vt = _mapping(meth.get("vt0014"))
    vt_checks = vt.get("checks")
    for raw in vt_checks if isinstance(vt_checks, list) else []:
        c = _mapping(raw)
        passed = c.get("passed")
        status = "PASS" if passed is True else "FAIL" if passed is False else "not assessed"
        rows.append(
            {
                "requirement_id": f"VT0014 {_generic(c.get('id'))}",
                "description": _generic(c.get("description")),
                "section": _generic(c.get("section")),
                "evidence_name": "validation data",
                "evidence_value": _generic(c.get("value")),
                "threshold": _generic(c.get("threshold")),
                "status": status,
                "css": {"PASS": "pass", "FAIL": "fail"}.get(status, "na"),
                "note": _generic(c.get("note")) if c.get("note") else "",
            }
        )
    if vt:
        passed_all = vt.get("passed")
        verdict = "PASS" if passed_all is True else "FAIL" if passed_all is False else "not assessed"
        summary += f"; VT0014 validation ({_generic(vt.get('n_validation'))} points: {_generic(vt.get('selection'))}): {verdict}"
    return {
        "id": _generic(meth.get("id")),
        "name": _generic(meth.get("name")),
        "rows": rows,
        "summary": summary,
    }


def _deductions(report: Mapping[str, Any]) -> list[dict[str, str]] | None:
    raw = report.get("deductions")
    if isinstance(raw, Mapping):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        return None
    rows = []
    for item in raw:
        d = _mapping(item)
        unit = str(d.get("units") or _CO2E)
        unc = _as_float(d.get("uncertainty_fraction"))
        ded = _as_float(d.get("deduction_fraction"))
        rows.append(
            {
                "methodology": _generic(d.get("methodology")),
                "estimate": _num(d.get("estimate"), _total_decimals(d.get("estimate")), unit),
                "se": _num(
                    d.get("standard_error"),
                    _total_decimals(d.get("standard_error")),
                    unit,
                ),
                "uncertainty": _num(unc * 100, 1, "%") if unc is not None else NA,
                "deduction": _num(ded * 100, 1, "%") if ded is not None else NA,
                "credited": _num(d.get("credited"), _total_decimals(d.get("credited")), unit),
                "note": _generic(d.get("note")) if d.get("note") else "",
            }
        )
    return rows


def _provenance(report: Mapping[str, Any]) -> dict[str, Any] | None:
    prov = _mapping(report.get("provenance"))
    if not prov:
        return None
    rows = [
        ("Manifest", _generic(prov.get("manifest"))),
        ("Package version", _generic(prov.get("mrv_version"))),
        ("Git revision", _generic(prov.get("source_revision", prov.get("git_revision")))),
    ]
    for key, value in prov.items():
        if key not in {"manifest", "git_revision", "source_revision", "mrv_version", "packages"} and _is_scalar(value):
            rows.append((str(key), _generic(value)))
    packages = [(str(k), _generic(v)) for k, v in sorted(_mapping(prov.get("packages")).items())]
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


def _map_sources(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(str(k), _generic(v)) for k, v in _mapping(report.get("maps")).items()]


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


def _context(report: Mapping[str, Any], images: Iterable[_Image]) -> dict[str, Any]:
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
    report: Mapping[str, Any],
    *,
    images: Mapping[str, tuple[str, Path]],
    out_html: Path,
) -> Path:
    """Render ``report`` (the parsed ``report.json``) to one self-contained HTML file.

    ``images`` maps a key to ``(caption, png_path)``; the PNGs are embedded as data URIs in the
    given order. Returns ``out_html``.
    """
    if not isinstance(report, Mapping):
        raise MRVError("The report must be a JSON object (the parsed report.json); load it with json.load.")
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
    tmp = out_html.with_name(out_html.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, out_html)
    return out_html
