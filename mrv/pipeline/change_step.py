"""Run-directory glue of the design-based estimates (:mod:`mrv.accounting.change`).

Reads the out-of-fold predictions (``model/cv_predictions.csv``), takes the fields and the zone means of the
round maps the accounting step streamed (never the maps themselves), and returns the ``design_based`` section
of ``accounting.json``: each round's stock and the change between the first and last round, per field and for
the project, from the lab sites (re-measured sites for the change) with the maps as auxiliary data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mrv.accounting.change import DesignEstimate, design_change, design_stock, pair_sites
from mrv.config import RunConfig
from mrv.errors import AccountingError
from mrv.fields import Field, field_index_at
from mrv.grid import Grid
from mrv.pipeline.layout import RunLayout

__all__ = ["design_accounting", "design_section"]


def _zone_of(x: np.ndarray, y: np.ndarray, fields: Sequence[Field], grid: Grid) -> np.ndarray:
    """The field index (pixel-centre rule of :func:`mrv.fields.field_index_raster`) of the pixel holding each point."""
    t = grid.transform  # north-up grid (mrv.grid.Grid): col = (x - x0) / a, row = (y - y0) / e
    col = np.floor((np.asarray(x, float) - t.c) / t.a).astype(np.int64)
    row = np.floor((np.asarray(y, float) - t.f) / t.e).astype(np.int64)
    return field_index_at(tuple(fields), grid, row, col)


def _section(
    est: tuple[dict[str, DesignEstimate], DesignEstimate, dict[str, Any]], area: dict[str, float]
) -> dict[str, Any]:
    fields, project, info = est
    return {
        "project": project.to_dict(area_ha=sum(area.values())),
        "fields": {z: e.to_dict(area_ha=area[z]) for z, e in fields.items()},
        "info": info,
    }


def design_section(
    oof: pd.DataFrame,
    fields: Sequence[Field],
    zone_means: Mapping[str, np.ndarray],
    grid: Grid,
    *,
    confidence: float,
    pair_distance_m: float,
    estimator: str,
) -> dict[str, Any]:
    """The ``design_based`` section from the out-of-fold lab predictions (pure; see the module docstring).

    ``oof`` needs ``x, y, observed, predicted, round`` (and ``source``: only ``lab`` rows are used,
    crowd samples being biased). Stocks per round use all that round's lab sites; the change uses the
    sites of the last round that re-measure a first-round site (:func:`pair_sites`). ``zone_means`` holds, per round
    in round order, each field's mean of the mean map over its pixel centres (t C/ha;
    :meth:`mrv.accounting.aggregate.ZoneSums.centre_means`); a site's field is the one of its pixel on ``grid``.
    """
    ids = [f.field_id for f in fields]
    area = {f.field_id: float(f.area_ha) for f in fields}
    lab = oof if "source" not in oof.columns else oof[oof["source"].astype(str) == "lab"]
    lab = lab.assign(zone=_zone_of(lab["x"].to_numpy(), lab["y"].to_numpy(), fields, grid))
    lab = lab[lab["zone"] >= 0]
    lab = lab.assign(field_id=np.asarray(ids, dtype=object)[lab["zone"].to_numpy(int)])
    means = dict(zone_means)
    rounds = list(means)
    out: dict[str, Any] = {
        "unit_note": "per_ha in t C/ha, total in t C, co2e in t CO2e (44/12 x t C)",
        "confidence": confidence,
        "stock": {},
    }
    for name in rounds:
        sites = lab[lab["round"].astype(str) == name].rename(
            columns={"observed": "soc_stock_t_ha", "predicted": "predicted_t_ha"}
        )
        try:
            est = design_stock(
                sites, zones=ids, zone_map_mean_t_ha=dict(zip(ids, means[name], strict=True)), area_ha=area,
                confidence=confidence,
            )  # fmt: skip
        except AccountingError as exc:
            out["stock"][name] = {"error": str(exc)}
            continue
        out["stock"][name] = {
            "estimator": "direct stratified estimator: area-weighted field means of the lab sites (design-based)",
            **_section(est, area),
        }
    if len(rounds) < 2:
        return out
    first, last = rounds[0], rounds[-1]
    a = lab[lab["round"].astype(str) == first].reset_index(drop=True)
    b = lab[lab["round"].astype(str) == last].reset_index(drop=True)
    pairs = pair_sites(
        a.rename(columns={"observed": "soc_stock_t_ha"}), b.rename(columns={"observed": "soc_stock_t_ha"}),
        max_distance_m=pair_distance_m,
    )  # fmt: skip
    pairs["map_change_t_ha"] = (
        b["predicted"].to_numpy(float)[pairs["i_last"].to_numpy(int)]
        - a["predicted"].to_numpy(float)[pairs["i_first"].to_numpy(int)]
    )
    zone_change = dict(zip(ids, means[last] - means[first], strict=True))
    change: dict[str, Any] = {"from_round": first, "to_round": last, "n_pairs": len(pairs)}
    if estimator == "map":
        change["note"] = "accounting.change_estimator is 'map': the credited change is the maps' Monte Carlo change"
    try:
        method = "difference" if estimator == "difference" else "regression"
        est = design_change(
            pairs, zones=ids, zone_map_change_t_ha=zone_change, area_ha=area, confidence=confidence,
            method=method,  # type: ignore[arg-type]
        )  # fmt: skip
        change.update(
            estimator=(
                f"model-assisted {method} estimator over {len(pairs)} re-measured sites "
                "(stratified by field; VM0042 v2.2 Eqs. 70-71; Saerndal et al. 1992)"
            ),
            **_section(est, area),
        )
    except AccountingError as exc:
        change["error"] = str(exc)
    out["change"] = change
    return out


def design_accounting(
    cfg: RunConfig,
    layout: RunLayout,
    fields: Sequence[Field],
    zone_means: Mapping[str, np.ndarray],
    grid: Grid,
) -> dict[str, Any]:
    """:func:`design_section` for a run directory (reads ``model/cv_predictions.csv``)."""
    cv = layout.cv_predictions
    if not cv.is_file():
        return {"error": "no cross-validation predictions (model/cv_predictions.csv); re-run the training step"}
    oof = pd.read_csv(cv, dtype={"round": str})
    if "round" not in oof.columns:
        return {"error": "model/cv_predictions.csv has no round column; re-run the training step"}
    return design_section(
        oof, fields, zone_means, grid,
        confidence=cfg.accounting.confidence, pair_distance_m=cfg.accounting.pair_distance_m,
        estimator=cfg.accounting.change_estimator,
    )  # fmt: skip


def credit_basis(accounting: dict[str, Any]) -> dict[str, Any] | None:
    """The project change the deductions are computed on, in t CO2e, with its SE and design df.

    The design-based change (``design_based.change``) when it exists and the configured estimator is not
    ``map``; otherwise the maps' Monte Carlo change (not design-based: normal limit, ``df`` None).
    """
    design = _as_dict(_as_dict(accounting.get("design_based")).get("change"))
    project = _as_dict(design.get("project"))
    if project and "note" not in design:
        co2 = project["co2e"]
        return {
            "estimate": float(co2["mean"]),
            "se": float(co2["se"]),
            "df": float(project["df"]) if project.get("df") else None,
            "units": "t CO2e",
            "basis": design.get("estimator", "design-based change"),
            "significant": bool(project.get("significant")),
        }
    mc = _as_dict(_as_dict(accounting.get("project")).get("change")).get("co2e_t")
    if not mc:
        return None
    return {
        "estimate": float(mc["mean"]),
        "se": float(mc["sd"]),
        "df": None,
        "units": "t CO2e",
        "basis": "Monte Carlo change of the maps (not design-based; normal limit)",
        "significant": bool(mc["lower_90"] > 0 or mc["upper_90"] < 0),
    }


def _as_dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}
