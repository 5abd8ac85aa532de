"""Field and project accounting from stored files, and its independent recomputation by a verifier.

:func:`compute_accounting` is the single code path that turns the per-round ``mean``/``sd`` maps and
the field polygons into the ``project`` and ``fields`` sections of ``accounting.json`` (and hence of
``report.json``). The run records every setting it used (seed, number of simulations, error range,
nugget share, round correlation) under ``settings`` and every file under ``inputs``, so
:func:`recompute_and_compare` can redo the Monte Carlo from the stored maps and compare each number
with ``report.json`` (relative tolerance 1e-6), naming the first one that differs.

``mrv report verify`` does more (:mod:`mrv.report.verify`): it re-runs the pipeline's own accounting step
(:func:`mrv.pipeline.steps.account`) with the settings of the run's config, not of ``accounting.json``, and
re-derives the maps, the model and the report as well. :func:`recompute_and_compare` stays as the quick
check of one run directory's report against its stored maps.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mrv.accounting.aggregate import RoundMaps, simulate_zone_means, zone_summary
from mrv.accounting.variogram import (
    ExponentialVariogram,
    cross_round_correlation,
    fit_cv_error_variogram,
    standardized_errors,
)
from mrv.errors import AccountingError, VerificationError
from mrv.fields import Field, field_index_raster, read_fields
from mrv.raster import read_raster

__all__ = [
    "REL_TOLERANCE",
    "AccountingSettings",
    "ErrorModel",
    "compare_numbers",
    "compute_accounting",
    "estimate_error_model",
    "read_round_maps",
    "recompute_and_compare",
]

#: Relative tolerance of the verifier's comparison of recomputed and reported numbers.
REL_TOLERANCE = 1e-6
_ABS_FLOOR = 1e-9
_FIX = (
    "report.json, accounting.json or the maps were changed after the run: restore them from the original run "
    "(or its archive), or re-run the pipeline."
)


@dataclass(frozen=True)
class AccountingSettings:
    """Everything besides the maps and fields that determines the accounting numbers."""

    n_simulations: int
    seed: int
    confidence: float
    range_m: float | None
    """Distance parameter of the exponential error correlation; ``None`` = independent pixels."""
    nugget_share: float
    round_correlation: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_simulations": self.n_simulations,
            "seed": self.seed,
            "confidence": self.confidence,
            "error_range_m": self.range_m,
            "nugget_share": self.nugget_share,
            "round_error_correlation": self.round_correlation,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AccountingSettings:
        try:
            rng = d["error_range_m"]
            return cls(
                n_simulations=int(d["n_simulations"]),
                seed=int(d["seed"]),
                confidence=float(d["confidence"]),
                range_m=None if rng is None else float(rng),
                nugget_share=float(d["nugget_share"]),
                round_correlation=float(d["round_error_correlation"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise VerificationError(
                f"accounting.json 'settings' is incomplete or malformed ({exc!r}); it was written by an older "
                "version or edited. Re-run the accounting step (mrv run) to record the settings."
            ) from exc


@dataclass(frozen=True)
class ErrorModel:
    """The error correlation used by the Monte Carlo and where each part came from."""

    range_m: float
    nugget_share: float
    range_source: str
    """``fitted`` (variogram of CV errors) or ``configured``."""
    round_correlation: float
    round_correlation_source: str
    """``configured`` or ``estimated``."""
    variogram: ExponentialVariogram | None
    round_correlation_estimate: float | None
    round_correlation_pairs: int
    note: str


def read_round_maps(paths: dict[str, dict[str, Path]]) -> tuple[list[RoundMaps], Any]:
    """``{round: {"mean": path, "sd": path}}`` -> maps in that order and the grid of the first."""
    maps, grid = [], None
    for name, p in paths.items():
        mean, g, _ = read_raster(p["mean"])
        sd, _, _ = read_raster(p["sd"])
        if grid is not None and (g.shape != grid.shape or g.transform != grid.transform):
            raise AccountingError(
                f"The maps of round {name} are not on the grid of the first round; re-run the prediction step."
            )
        grid = grid or g
        maps.append(RoundMaps(name, mean[0], sd[0]))
    return maps, grid


def cv_points(cv_csv: Path, features_csv: Path | None) -> pd.DataFrame:
    """The out-of-fold predictions, with each point's ``round`` joined from the training table when known."""
    try:
        oof = pd.read_csv(cv_csv)
    except (OSError, ValueError) as exc:
        raise AccountingError(
            f"Cannot read the cross-validation predictions {cv_csv}: {exc}. Re-run the training step."
        ) from exc
    if "round" in oof.columns or features_csv is None or not features_csv.is_file():
        return oof
    feats = pd.read_csv(features_csv, usecols=lambda c: c in {"x", "y", "soc_stock_t_ha", "round"})
    if not {"x", "y", "soc_stock_t_ha", "round"} <= set(feats.columns):
        return oof
    key = feats.rename(columns={"soc_stock_t_ha": "observed"}).drop_duplicates(["x", "y", "observed"])
    merged = oof.merge(key, on=["x", "y", "observed"], how="left")
    return merged if len(merged) == len(oof) else oof


def estimate_error_model(
    oof: pd.DataFrame | None,
    *,
    interval_confidence: float,
    range_m: float | str,
    round_correlation: float | str,
    first_round: str,
    last_round: str,
) -> ErrorModel:
    """Fit the CV-error variogram and settle range, nugget share and round correlation.

    ``range_m="auto"`` uses the fitted range and nugget share; a number is used as given with no
    nugget. ``round_correlation="auto"`` uses :func:`cross_round_correlation` clipped to [0, 1]; a
    number is used as given. The variogram is fitted (as a diagnostic) whenever CV points exist.
    """
    vario: ExponentialVariogram | None = None
    note = ""
    groups = None
    if oof is not None and "round" in oof.columns and oof["round"].notna().all():
        groups = oof["round"].astype(str).to_numpy()
    if oof is not None:
        try:
            vario = fit_cv_error_variogram(oof, confidence=interval_confidence, groups=groups)
        except AccountingError as exc:
            if range_m == "auto":
                raise
            note = f"error variogram not fitted: {exc}"
    elif range_m == "auto":
        raise AccountingError(
            "accounting.error_range_m is 'auto' but there are no cross-validation predictions "
            "(model/cv_predictions.csv); run the training step first or set error_range_m to a number (m)."
        )
    if range_m == "auto":
        assert vario is not None
        rng, nugget, rng_src = vario.range_m, vario.nugget_share, "fitted"
        if vario.range_at_bound:
            note = "fitted range sits on its search bound (poorly identified); consider setting error_range_m"
    else:
        rng, nugget, rng_src = float(range_m), 0.0, "configured"

    estimate, n_pairs = None, 0
    if vario is not None and groups is not None and oof is not None and first_round != last_round:
        z = standardized_errors(oof, confidence=interval_confidence)
        rho, n_pairs = cross_round_correlation(
            oof["x"].to_numpy(float), oof["y"].to_numpy(float), z, groups, first_round, last_round, vario
        )
        estimate = None if math.isnan(rho) else rho
    if round_correlation == "auto":
        if estimate is None:
            raise AccountingError(
                "accounting.round_error_correlation is 'auto' but it cannot be estimated: no cross-validation points of "
                "the first and last round lie within the error range of each other (or their rounds are unknown). Set "
                "round_error_correlation to a number (0 is conservative)."
            )
        rho_used, rho_src = float(np.clip(estimate, 0.0, 1.0)), "estimated"
    else:
        rho_used, rho_src = float(round_correlation), "configured"
    return ErrorModel(
        range_m=float(rng),
        nugget_share=float(nugget),
        range_source=rng_src,
        round_correlation=rho_used,
        round_correlation_source=rho_src,
        variogram=vario,
        round_correlation_estimate=estimate,
        round_correlation_pairs=n_pairs,
        note=note,
    )


def compute_accounting(
    fields: Sequence[Field],
    maps: Sequence[RoundMaps],
    zones: np.ndarray,
    *,
    pixel_m: float,
    settings: AccountingSettings,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(project, fields)`` sections: Monte Carlo stocks, totals, change and t CO2e per zone."""
    sim = simulate_zone_means(
        maps,
        zones,
        len(fields),
        pixel_m=pixel_m,
        range_m=settings.range_m,
        nugget_share=settings.nugget_share,
        round_correlation=settings.round_correlation,
        n_sim=settings.n_simulations,
        seed=settings.seed,
    )
    out_fields = []
    for i, f in enumerate(fields):
        s = zone_summary(sim, i, confidence=settings.confidence)
        out_fields.append(
            {
                "field_id": f.field_id,
                "name": f.properties.get("name", ""),
                "farm_id": f.properties.get("farm_id", ""),
                "practice": f.properties.get("practice", ""),
                "area_ha": round(f.area_ha, 4),
                "mapped_fraction": float(sim.coverage[i]),
                **s,
            }
        )
    project = zone_summary(sim, len(fields), confidence=settings.confidence)
    project.update(area_ha=round(sum(f.area_ha for f in fields), 4), n_fields=len(fields))
    return project, out_fields


# --------------------------------------------------------------------------- verification


def _leaves(obj: Any, where: str) -> Iterator[tuple[str, Any]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, f"{where}.{k}")
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            yield from _leaves(v, f"{where}[{i}]")
    else:
        yield where, obj


def _same(a: Any, b: Any) -> bool:
    """Numbers equal within :data:`REL_TOLERANCE`; NaN equals null (report.json stores NaN as null)."""
    if isinstance(a, bool) or isinstance(b, bool) or isinstance(a, str) or isinstance(b, str):
        return bool(a == b)
    fa = math.nan if a is None else float(a)
    fb = math.nan if b is None else float(b)
    if math.isnan(fa) or math.isnan(fb):
        return math.isnan(fa) and math.isnan(fb)
    return abs(fa - fb) <= max(REL_TOLERANCE * max(abs(fa), abs(fb)), _ABS_FLOOR)


def compare_numbers(reported: Any, recomputed: Any, *, label: str) -> str | None:
    """The first leaf of ``recomputed`` that ``reported`` lacks or holds a different value for, as a message."""

    def walk(rep: Any, rec: Any, where: str) -> str | None:
        if isinstance(rec, dict):
            if not isinstance(rep, dict):
                return f"{where}: report has {type(rep).__name__}, recomputed an object"
            for k, v in rec.items():
                if k not in rep:
                    return f"{where}.{k}: missing from the report (recomputed {v!r})"
                msg = walk(rep[k], v, f"{where}.{k}")
                if msg:
                    return msg
            return None
        if isinstance(rec, list | tuple):
            if not isinstance(rep, list) or len(rep) != len(rec):
                return (
                    f"{where}: report has {len(rep) if isinstance(rep, list) else rep!r} entries, recomputed {len(rec)}"
                )
            for i, (a, b) in enumerate(zip(rep, rec, strict=True)):
                msg = walk(a, b, f"{where}[{i}]")
                if msg:
                    return msg
            return None
        if not _same(rep, rec):
            return f"{where}: report.json says {rep!r}, recomputed {rec!r}"
        return None

    return walk(reported, recomputed, label)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise VerificationError(
            f"Cannot read {path} ({exc}); restore it from the original run or re-run the pipeline."
        ) from exc


def recompute_and_compare(run_dir: Path) -> int:
    """Redo the accounting of ``run_dir`` from its stored maps and compare with ``report.json``.

    Reads the seeded settings and input paths from ``accounting.json``, refits the error variogram
    from ``model/cv_predictions.csv`` when it was fitted (and checks it), recomputes every field and
    the project, and raises :class:`VerificationError` naming the first number that differs by more
    than :data:`REL_TOLERANCE` (relative). Returns the number of values compared.
    """
    run_dir = Path(run_dir).resolve()
    acc = _read_json(run_dir / "accounting.json")
    report = _read_json(run_dir / "report.json")
    if "settings" not in acc or "inputs" not in acc:
        raise VerificationError(
            f"{run_dir / 'accounting.json'} records no 'settings'/'inputs'; it was written before recomputation "
            "was supported. Re-run the pipeline to make the run verifiable."
        )
    settings = AccountingSettings.from_dict(acc["settings"])
    inputs = acc["inputs"]
    try:
        map_paths = {r: {k: run_dir / p for k, p in kinds.items()} for r, kinds in inputs["maps"].items()}
        fields_path = Path(inputs["fields"])
        crs = str(inputs["crs"])
    except (KeyError, TypeError, AttributeError) as exc:
        raise VerificationError(f"accounting.json 'inputs' is malformed ({exc!r}); re-run the pipeline.") from exc
    for kinds in map_paths.values():
        for p in kinds.values():
            if not p.is_file():
                raise VerificationError(f"The map {p} is missing; restore it from the original run.")
    if not fields_path.is_file():
        raise VerificationError(
            f"The field polygons {fields_path} recorded in accounting.json are missing; restore the file at that path."
        )

    vario_rec = acc.get("error_model", {}).get("variogram")
    if acc.get("error_model", {}).get("range_source") == "fitted":
        cv = run_dir / "model" / "cv_predictions.csv"
        features = run_dir / "model" / "features.csv"
        rounds = list(map_paths)
        em = estimate_error_model(
            cv_points(cv, features),
            interval_confidence=float(acc["error_model"]["interval_confidence"]),
            range_m="auto",
            round_correlation=settings.round_correlation,
            first_round=rounds[0],
            last_round=rounds[-1],
        )
        assert em.variogram is not None
        for key, value in (("range_m", em.range_m), ("nugget_share", em.nugget_share)):
            if not isinstance(vario_rec, dict) or not _same(vario_rec.get(key), value):
                got = vario_rec.get(key) if isinstance(vario_rec, dict) else None
                raise VerificationError(
                    f"error_model.variogram.{key}: accounting.json says {got!r}, refitted from model/cv_predictions.csv "
                    f"{value!r}. The CV predictions or accounting.json were changed; re-run the pipeline."
                )
        if not (_same(settings.range_m, em.range_m) and _same(settings.nugget_share, em.nugget_share)):
            raise VerificationError(
                "accounting.json settings.error_range_m/nugget_share differ from the fitted variogram; "
                "the file was edited. Re-run the pipeline."
            )

    maps, grid = read_round_maps(map_paths)
    fields = read_fields(fields_path, crs=crs)
    zones = field_index_raster(fields, grid)
    project, out_fields = compute_accounting(fields, maps, zones, pixel_m=grid.resolution_m, settings=settings)

    rep_fields = report.get("fields")
    if not isinstance(rep_fields, list):
        raise VerificationError("report.json has no 'fields' list; restore it from the original run.")
    by_id = {str(f.get("field_id")): f for f in rep_fields if isinstance(f, dict)}
    if len(by_id) != len(out_fields):
        raise VerificationError(
            f"report.json lists {len(by_id)} fields but {fields_path} has {len(out_fields)}; the report does not "
            "belong to these inputs. Re-run the pipeline."
        )
    n = 0
    for rec in out_fields:
        fid = rec["field_id"]
        if fid not in by_id:
            raise VerificationError(f"Field {fid!r} of {fields_path} is missing from report.json; re-run the pipeline.")
        msg = compare_numbers(by_id[fid], rec, label=f"fields[{fid}]")
        if msg:
            raise VerificationError(f"Recomputed accounting differs from report.json at {msg}. {_FIX}")
        n += sum(1 for _ in _leaves(rec, ""))
    msg = compare_numbers(report.get("project"), project, label="project")
    if msg:
        raise VerificationError(f"Recomputed accounting differs from report.json at {msg}. {_FIX}")
    n += sum(1 for _ in _leaves(project, ""))
    return n
