"""Verra VT0014 (Estimating Organic Carbon Stocks Using Digital Soil Mapping, v1.0) validation criteria.

VM0042 v2.2 allows remote-sensing-based SOC estimates only through VT0014 (VM0042 v2.2, Sect. 8.2.1.4,
last paragraph, read in the v2.2 text of 21 October 2025). The tool's own text could not be obtained
for this code (see ``mrv/profiles/methodologies/verra_vt0014_v1.yaml``); the criteria below are those
reported publicly for v1.0 with its mandatory corrections of 16 October 2025, and every check carries
``section_confirmed: false`` until somebody reads them in the tool:

* R^2 (model efficiency 1 - SSE/SST) > 0 on the validation data;
* mean error not significantly different from 0 (two-sided one-sample t-test, alpha = 0.05);
* prediction interval coverage (PICP) at least the nominal level;
* at least 50 point pairs in every variogram lag bin over 0-500 m;
* validation data from inside the project area and after the project start.

The variance of a stock change between two mapped times is
var(dSOC) = var(t+dt) + var(t) - 2 rho sqrt(var(t+dt) var(t)) (:func:`change_variance`).

The validation data used here are the spatial cross-validation predictions of lab sites
(``model/cv_predictions.csv``): inside a field (``field_id`` set) and, when the run has more than one
round, of rounds after the baseline (the project start). Intervals are the cross-conformal ones
(``lower_cv``/``upper_cv``: each fold calibrated without itself) when recorded.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial.distance import pdist

from mrv.errors import AccountingError

__all__ = [
    "LAG_MAX_M",
    "LAG_WIDTH_M",
    "MIN_PAIRS_PER_LAG",
    "Vt0014Check",
    "Selection",
    "Vt0014Result",
    "change_variance",
    "evidence_fields",
    "lag_pair_counts",
    "validate_dsm",
    "validation_points",
    "vt0014_from_files",
    "vt0014_section",
]

#: Lag bins of the pair-count criterion: 0-500 m in bins of 50 m (the bin width is this code's choice).
LAG_MAX_M = 500.0
LAG_WIDTH_M = 50.0
MIN_PAIRS_PER_LAG = 50
ALPHA = 0.05
_SOURCE = "VT0014 v1.0 (criteria as reported publicly; tool text not read)"


@dataclass(frozen=True)
class Vt0014Check:
    """One validation criterion with its value, threshold and verdict (``None``: not assessable)."""

    id: str
    description: str
    value: float | list[int] | None
    threshold: str
    passed: bool | None
    note: str
    section: str = _SOURCE
    section_confirmed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Vt0014Result:
    n_validation: int
    selection: str
    checks: tuple[Vt0014Check, ...]
    lag_bins_m: tuple[float, ...]
    lag_pairs: tuple[int, ...]
    metrics: dict[str, float]

    @property
    def passed(self) -> bool | None:
        """True when every criterion passed, False when any failed, None when one could not be assessed."""
        verdicts = [c.passed for c in self.checks]
        if any(v is False for v in verdicts):
            return False
        return None if any(v is None for v in verdicts) else True

    def to_dict(self) -> dict[str, Any]:
        return {
            "tool": "Verra VT0014 Estimating Organic Carbon Stocks Using Digital Soil Mapping, v1.0",
            "passed": self.passed,
            "n_validation": self.n_validation,
            "selection": self.selection,
            "checks": [c.to_dict() for c in self.checks],
            "lag_bins_m": list(self.lag_bins_m),
            "lag_pairs": list(self.lag_pairs),
            "metrics": self.metrics,
            "change_variance_formula": "var(dSOC) = var(t+dt) + var(t) - 2 rho sqrt(var(t+dt) var(t))",
            "note": "Criteria as reported publicly for VT0014 v1.0 (with the corrections of 16 October 2025); the "
            "tool's text was not available to confirm sections, so every check is section_confirmed: false.",
        }


def change_variance(var_later: float, var_earlier: float, rho: float) -> float:
    """var(dSOC) = var(t+dt) + var(t) - 2 rho sqrt(var(t+dt) var(t)) (units of the variances, e.g. (t C/ha)^2)."""
    if var_later < 0 or var_earlier < 0 or not -1 <= rho <= 1:
        raise AccountingError(
            f"change_variance needs non-negative variances and rho in [-1, 1], got {var_later}, {var_earlier}, {rho}."
        )
    return float(var_later + var_earlier - 2.0 * rho * math.sqrt(var_later * var_earlier))


def lag_pair_counts(
    x: np.ndarray, y: np.ndarray, *, lag_max_m: float = LAG_MAX_M, lag_width_m: float = LAG_WIDTH_M
) -> tuple[np.ndarray, np.ndarray]:
    """Bin edges (m) and the number of point pairs in each [edge_i, edge_i+1) bin up to ``lag_max_m``."""
    edges = np.arange(0.0, lag_max_m + lag_width_m / 2, lag_width_m)
    pts = np.column_stack([np.asarray(x, dtype=float), np.asarray(y, dtype=float)])
    d = pdist(pts) if len(pts) > 1 else np.empty(0)
    counts, _ = np.histogram(d[d < lag_max_m], bins=edges)
    return edges, counts.astype(int)


@dataclass(frozen=True)
class Selection:
    """How the validation points were chosen; ``None`` where the CV table cannot tell."""

    text: str
    in_project: bool | None
    after_start: bool | None


def validation_points(oof: pd.DataFrame, *, baseline_round: str | None) -> tuple[pd.DataFrame, Selection]:
    """The lab, in-project, after-start rows of ``oof`` and how they were selected."""
    sel = pd.Series(True, index=oof.index)
    parts = []
    in_project: bool | None = None
    after_start: bool | None = None
    if "source" in oof.columns:
        sel &= oof["source"].astype(str) == "lab"
        parts.append("lab sites")
    if "field_id" in oof.columns:
        sel &= oof["field_id"].notna() & (oof["field_id"].astype(str).str.strip() != "")
        parts.append("inside a project field")
        in_project = True
    if "round" in oof.columns and baseline_round is not None:
        later = oof["round"].astype(str) != str(baseline_round)
        if (sel & later).sum() > 0:
            sel &= later
            parts.append(f"rounds after the baseline round {baseline_round} (the project start)")
            after_start = True
        else:
            parts.append(f"only the baseline round {baseline_round} is available (no data after the start)")
            after_start = False
    return oof[sel], Selection(", ".join(parts) or "all cross-validation points", in_project, after_start)


def validate_dsm(
    obs: np.ndarray,
    pred: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    *,
    confidence: float,
    selection: Selection | None = None,
    alpha: float = ALPHA,
    min_pairs: int = MIN_PAIRS_PER_LAG,
    lag_max_m: float = LAG_MAX_M,
    lag_width_m: float = LAG_WIDTH_M,
) -> Vt0014Result:
    """Check validation data (observed, predicted, interval bounds in t C/ha; positions in metres)."""
    obs, pred, lower, upper = (np.asarray(v, dtype=float) for v in (obs, pred, lower, upper))
    selection = selection or Selection("as given by the caller", None, None)
    n = int(obs.size)
    edges, pairs = lag_pair_counts(x, y, lag_max_m=lag_max_m, lag_width_m=lag_width_m)
    checks: list[Vt0014Check] = []
    met: dict[str, float] = {}
    if n < 3:
        na = f"only {n} validation points; at least 3 are needed"
        for cid, desc, thr in (
            ("r2_positive", "Model efficiency R^2 on validation data is above 0.", "> 0"),
            ("mean_error_zero", "Mean error is not significantly different from 0.", f"p >= {alpha:g}"),
            ("picp_nominal", "Prediction interval coverage is at least the nominal level.", f">= {confidence:g}"),
        ):
            checks.append(Vt0014Check(cid, desc, None, thr, None, f"not assessed: {na}."))
    else:
        err = pred - obs
        sst = float(np.sum((obs - obs.mean()) ** 2))
        r2 = 1.0 - float(np.sum(err**2)) / sst if sst > 0 else float("nan")
        me = float(err.mean())
        se = float(err.std(ddof=1) / math.sqrt(n))
        p = float(2 * stats.t.sf(abs(me) / se, df=n - 1)) if se > 0 else (1.0 if me == 0 else 0.0)
        inside = (obs >= lower) & (obs <= upper)
        picp = float(inside.mean())
        # one-sided binomial test of H0: coverage >= nominal, for the reader (the criterion is the point value)
        p_binom = float(stats.binomtest(int(inside.sum()), n, confidence, alternative="less").pvalue)
        met = {"r2": r2, "mean_error_t_ha": me, "mean_error_se_t_ha": se, "mean_error_p": p, "picp": picp,
               "picp_binomial_p": p_binom, "rmse_t_ha": float(np.sqrt(np.mean(err**2))),
               "mean_width_t_ha": float(np.mean(upper - lower))}  # fmt: skip
        checks.append(Vt0014Check(
            "r2_positive", "Model efficiency R^2 = 1 - SSE/SST on validation data is above 0.", r2, "> 0",
            bool(r2 > 0) if math.isfinite(r2) else None, f"R^2 = {r2:.3f} on {n} points.",
        ))  # fmt: skip
        checks.append(Vt0014Check(
            "mean_error_zero", "Mean error (predicted - observed) is not significantly different from 0 "
            f"(two-sided one-sample t-test, alpha = {alpha:g}).", p, f"p >= {alpha:g}", bool(p >= alpha),
            f"mean error {me:+.2f} t C/ha (SE {se:.2f}), t-test p = {p:.3f}; spatially correlated errors make the "
            "test liberal.",
        ))  # fmt: skip
        checks.append(Vt0014Check(
            "picp_nominal", f"Coverage of the {confidence:.0%} prediction intervals is at least the nominal level.",
            picp, f">= {confidence:g}", bool(picp >= confidence - 1e-12),
            f"PICP {picp:.3f} ({int(inside.sum())}/{n}); one-sided binomial p = {p_binom:.3f} for coverage below "
            f"{confidence:g} (the criterion compares the point value).",
        ))  # fmt: skip
    low = [int(c) for c in pairs]
    checks.append(Vt0014Check(
        "lag_pairs", f"At least {min_pairs} validation point pairs in every {lag_width_m:g} m lag bin over "
        f"0-{lag_max_m:g} m (bin width chosen here).", low, f">= {min_pairs} per bin",
        bool(min(low) >= min_pairs) if low else None,
        f"pairs per bin: {low}; fewest {min(low) if low else 0}.",
    ))  # fmt: skip
    checks.append(Vt0014Check(
        "validation_in_project_after_start", "Validation data come from inside the project and after its start.",
        None, "is true", _both(selection.in_project, selection.after_start), f"selected: {selection.text}.",
    ))  # fmt: skip
    return Vt0014Result(
        n_validation=n, selection=selection.text, checks=tuple(checks), lag_bins_m=tuple(float(e) for e in edges),
        lag_pairs=tuple(low), metrics=met,
    )  # fmt: skip


def _both(a: bool | None, b: bool | None) -> bool | None:
    if a is False or b is False:
        return False
    return None if a is None or b is None else True


def vt0014_from_files(cv_csv: Path, *, baseline_round: str | None, confidence: float) -> Vt0014Result:
    """:func:`validate_dsm` on the run's ``model/cv_predictions.csv``."""
    try:
        oof = pd.read_csv(cv_csv)
    except (OSError, ValueError) as exc:
        raise AccountingError(f"Cannot read the cross-validation predictions {cv_csv}: {exc}. Re-run the training step.") from exc
    pts, selection = validation_points(oof, baseline_round=baseline_round)
    lo = "lower_cv" if "lower_cv" in pts.columns else "lower"
    hi = "upper_cv" if "upper_cv" in pts.columns else "upper"
    return validate_dsm(
        pts["observed"].to_numpy(float), pts["predicted"].to_numpy(float), pts[lo].to_numpy(float),
        pts[hi].to_numpy(float), pts["x"].to_numpy(float), pts["y"].to_numpy(float),
        confidence=confidence, selection=selection,
    )  # fmt: skip


#: The methodology profile whose requirements cite the criteria (``mrv/profiles/methodologies``).
PROFILE_ID = "verra_vt0014_v1"


def evidence_fields(result: Vt0014Result) -> dict[str, Any]:
    """The :class:`mrv.accounting.methodology.Evidence` fields this validation provides."""
    checks = {c.id: c for c in result.checks}
    lag = checks["lag_pairs"].value
    return {
        "vt0014_validation_passed": result.passed,
        "validation_r2": result.metrics.get("r2"),
        "validation_mean_error_p": result.metrics.get("mean_error_p"),
        "validation_picp": result.metrics.get("picp"),
        "min_pairs_per_lag": int(min(lag)) if isinstance(lag, list) and lag else None,
        "validation_in_project_after_start": checks["validation_in_project_after_start"].passed,
    }


def vt0014_section(cv_csv: Path, *, baseline_round: str | None, confidence: float, config_path: Path | None = None) -> dict[str, Any]:
    """``report.json``'s VT0014 section: the computed validation and the methodology profile's checklist on it."""
    from mrv.accounting.methodology import Evidence, check_methodology, load_methodology

    if not cv_csv.is_file():
        return {"passed": None, "note": f"not assessed: {cv_csv.name} is missing (no cross-validation predictions)."}
    result = vt0014_from_files(cv_csv, baseline_round=baseline_round, confidence=confidence)
    profile = load_methodology(PROFILE_ID, config_path=config_path)
    fields = evidence_fields(result)
    fields.pop("vt0014_validation_passed")
    checks = check_methodology(profile, Evidence(**{k: v for k, v in fields.items() if v is not None}))
    return {
        **result.to_dict(),
        "profile": {"id": profile.id, "name": profile.name, "version": profile.version, "reference": profile.reference},
        "profile_checks": [c.to_dict() for c in checks],
    }
