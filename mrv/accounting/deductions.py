"""Uncertainty deductions applied to credited soil-carbon removals.

Carbon-market methodologies do not credit the central estimate of a removal: they discount it
by its statistical uncertainty. This module turns an estimate and its standard error into the
quantity that may be credited, one pure function per methodology, plus :func:`deduction_for`
which dispatches on the methodology id used in ``mrv/profiles/methodologies/*.yaml``.

Conventions shared by every function here:

* ``estimate`` is the net removal in ``units`` (default t CO2e, the unit the methodologies credit
  in; convert t C with 44/12 first); positive means carbon gained.
* ``standard_error`` is the standard error of ``estimate`` in the same unit (not a fraction).
* ``df`` is the degrees of freedom of the t distribution used for the quantile, appropriate to
  the sampling design (e.g. the Satterthwaite df of a stratified estimator). ``None`` means the
  large-sample (normal) limit; it is recorded as ``None`` in the result.
* A removal (estimate > 0): a deduction fraction in [0, 1], so ``credited`` is in [0, estimate].
* A loss (estimate < 0) is an emission: under VM0042 v2.2 Eqs. 44-45 the uncertainty multiplier
  changes sign (``I = -1``), so the loss is multiplied by ``1 + UNC`` and ``credited`` is that
  (negative) amount, ``reported_as`` ``"emission"``. The Gold Standard and CAR rules here report a
  loss in full (no discount, no inflation; their loss rules are not confirmed offline, see notes).
* No change (estimate == 0) credits nothing and the uncertainty fraction is NaN.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scipy import stats

from mrv.errors import AccountingError, ConfigError

__all__ = [
    "DEDUCTION_METHODS",
    "GOLD_STANDARD_CONFIDENCE",
    "GOLD_STANDARD_THRESHOLD",
    "VM0042_QUANTILE",
    "Deduction",
    "car_sep_deduction",
    "deduction_for",
    "gold_standard_deduction",
    "vm0042_deduction",
]

#: One-sided quantile of the t distribution used by VM0042 v2: the "66.7 %" probability of
#: exceedance, taken as exactly two thirds. The literal 0.667 gives a slightly larger t
#: (0.43164 vs 0.43073 in the normal limit; UNC 8.633 % vs 8.615 % for estimate 10, SE 2).
VM0042_QUANTILE = 2.0 / 3.0
#: Two-sided confidence level whose half-width defines uncertainty in the Gold Standard rule.
GOLD_STANDARD_CONFIDENCE = 0.90
#: Uncertainty (fraction of the estimate) tolerated without deduction in the Gold Standard rule.
GOLD_STANDARD_THRESHOLD = 0.20


@dataclass(frozen=True)
class Deduction:
    """The outcome of applying one methodology's uncertainty deduction.

    Attributes:
        methodology: Id of the rule applied (``"verra_vm0042_v2"``, ``"gold_standard_soc"``,
            ``"car_sep"``).
        estimate: Net removal before deduction (caller's unit, e.g. t CO2e).
        standard_error: Standard error of ``estimate`` (same unit).
        uncertainty_fraction: Uncertainty as a fraction of ``estimate`` (0.086 = 8.6 %);
            NaN when ``estimate`` <= 0.
        deduction_fraction: Fraction of ``estimate`` removed, in [0, 1].
        credited: ``estimate * (1 - deduction_fraction)``, or 0 when ``estimate`` <= 0.
        df: Degrees of freedom used for the t quantile; ``None`` = normal limit.
        note: Human-readable explanation (rule used, caveats, why nothing was credited).
        units: Unit of ``estimate``, ``standard_error`` and ``credited``.
        reported_as: ``"removal"`` (credited >= 0), ``"emission"`` (a loss, credited < 0) or
            ``"none"`` (no change).
    """

    methodology: str
    estimate: float
    standard_error: float
    uncertainty_fraction: float
    deduction_fraction: float
    credited: float
    df: float | None
    note: str
    units: str = "t CO2e"
    reported_as: str = "removal"

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-friendly dict; NaN values become ``None``."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and math.isnan(value):
                value = None
            out[f.name] = value
        return out


def _validate(estimate: float, standard_error: float, df: float | None) -> None:
    if not isinstance(estimate, (int, float)) or isinstance(estimate, bool):
        raise AccountingError(
            f"estimate must be a number, got {estimate!r}; pass the net removal as a float."
        )
    if not math.isfinite(estimate):
        raise AccountingError(
            f"estimate is {estimate!r}; pass a finite net removal (check the stock-change "
            "totals for missing or infinite values)."
        )
    if (
        not isinstance(standard_error, (int, float))
        or isinstance(standard_error, bool)
        or math.isnan(standard_error)
        or math.isinf(standard_error)
        or standard_error < 0
    ):
        raise AccountingError(
            f"standard_error is {standard_error!r}; it must be a finite number >= 0 in the "
            "same unit as the estimate. Recompute it from the sample variance (a NaN usually "
            "means fewer than two samples in a stratum)."
        )
    if df is not None and (
        not isinstance(df, (int, float))
        or isinstance(df, bool)
        or math.isnan(df)
        or df <= 0
    ):
        raise AccountingError(
            f"df is {df!r}; degrees of freedom must be > 0 (e.g. n - 1 for n samples), "
            "or None for the large-sample normal limit."
        )


def _t_quantile(q: float, df: float | None) -> float:
    if df is None or math.isinf(df):
        return float(stats.norm.ppf(q))
    return float(stats.t.ppf(q, df))


def _no_credit(
    methodology: str,
    estimate: float,
    standard_error: float,
    df: float | None,
    prefix: str,
    units: str = "t CO2e",
) -> Deduction:
    """No change (estimate 0), or a loss under a rule without a confirmed loss treatment (reported in full)."""
    if estimate < 0:
        return Deduction(
            methodology=methodology,
            estimate=float(estimate),
            standard_error=float(standard_error),
            uncertainty_fraction=math.nan,
            deduction_fraction=0.0,
            credited=float(estimate),
            df=None if df is None else float(df),
            note=(
                f"{prefix}estimate {estimate:g} {units} < 0 is a loss: nothing is credited and the loss is "
                "reported in full as an emission (the rule's treatment of losses is not confirmed offline)."
            ),
            units=units,
            reported_as="emission",
        )
    return Deduction(
        methodology=methodology,
        estimate=float(estimate),
        standard_error=float(standard_error),
        uncertainty_fraction=math.nan,
        deduction_fraction=0.0,
        credited=0.0,
        df=None if df is None else float(df),
        note=(
            f"{prefix}estimate {estimate:g} {units} (no change): nothing is credited, "
            "so no uncertainty deduction applies and the relative uncertainty is undefined."
        ),
        units=units,
        reported_as="none",
    )


def vm0042_deduction(
    estimate: float, standard_error: float, *, df: float | None, units: str = "t CO2e"
) -> Deduction:
    """Verra VM0042 v2 uncertainty deduction (probability-of-exceedance rule).

    Formula::

        UNC      = t(q, df) * SE / estimate,   q = 66.7 % = 2/3 (VM0042_QUANTILE)
        credited = estimate * (1 - UNC)

    i.e. the credited quantity is the one-sided 66.7 % lower confidence bound of the removal
    (the value the true removal exceeds with probability two thirds). Worked example: estimate
    10, SE 2, df -> inf: t = 0.43073, UNC = 8.615 %, credited = 9.1385.

    A loss (estimate < 0): ``UNC = t x SE / |estimate|`` and ``credited = estimate x (1 + UNC)``,
    an emission larger than the central estimate (VM0042 v2.2 Eqs. 44-45: ``x (1 - UNC x I)`` with
    ``I = -1`` when the change is negative). Worked example: estimate -10, SE 2, df -> inf:
    credited = -10.8615.

    Source: Verra, *VM0042 Methodology for Improved Agricultural Land Management*, v2.2,
    Sect. 8.6.4 "Uncertainty Deductions", Eq. 74 (``UNC = sqrt(s^2) / mean x 100 x t0.667``, t with
    "degrees of freedom appropriate to the sampling design", about 0.4307 at large samples), and
    Sect. 8.5.1, Eqs. 44-45 for the sign function ``I`` (read from VM0042v2.2.pdf in the public
    repository questofprajjwal/VM0042-Learning-Module).

    Args:
        estimate: Net removal (e.g. t CO2e); positive = carbon gained.
        standard_error: Standard error of ``estimate`` (same unit), >= 0.
        df: Degrees of freedom of the t quantile, > 0; ``None`` = normal limit.

    Returns:
        A :class:`Deduction`; ``deduction_fraction`` is ``UNC`` capped at 1.

    Raises:
        AccountingError: if ``standard_error`` is negative/NaN/infinite, ``estimate`` is not
            finite, or ``df`` <= 0.
    """
    methodology = "verra_vm0042_v2"
    _validate(estimate, standard_error, df)
    if estimate == 0:
        return _no_credit(methodology, estimate, standard_error, df, "VM0042 v2: ", units)
    t = _t_quantile(VM0042_QUANTILE, df)
    if estimate < 0:
        unc = t * standard_error / abs(estimate)
        return Deduction(
            methodology=methodology,
            estimate=float(estimate),
            standard_error=float(standard_error),
            uncertainty_fraction=float(unc),
            deduction_fraction=float(-unc),
            credited=float(estimate * (1.0 + unc)),
            df=None if df is None else float(df),
            note=(
                f"VM0042 v2.2 Eqs. 44-45: a loss of {abs(estimate):g} {units} is an emission; multiplied by "
                f"1 + UNC (UNC = t(2/3, df={df if df is not None else 'inf'}) x SE / |estimate| = {unc:.1%})."
            ),
            units=units,
            reported_as="emission",
        )
    unc = t * standard_error / estimate
    deduction = min(max(unc, 0.0), 1.0)
    note = f"VM0042 v2: UNC = t(2/3, df={df if df is not None else 'inf'}) x SE / estimate."
    if unc > 1.0:
        note += " UNC exceeds 100 %, so the deduction is capped at 100 % and nothing is credited."
    return Deduction(
        methodology=methodology,
        estimate=float(estimate),
        standard_error=float(standard_error),
        uncertainty_fraction=float(unc),
        deduction_fraction=float(deduction),
        credited=float(estimate * (1.0 - deduction)),
        df=None if df is None else float(df),
        note=note,
        units=units,
    )


def gold_standard_deduction(
    estimate: float, standard_error: float, *, df: float | None, units: str = "t CO2e"
) -> Deduction:
    """Gold Standard SOC uncertainty deduction (90 % confidence, 20 % tolerance).

    Formula::

        UNC       = t(0.95, df) * SE / estimate      # half-width of the two-sided 90 % CI
        deduction = max(0, UNC - 0.20)
        credited  = estimate * (1 - deduction)

    Source: Gold Standard Foundation, *Soil Organic Carbon Framework Methodology* (v1.0),
    uncertainty section: uncertainty is the half-width of the 90 % confidence interval relative
    to the estimate, and only the part above 20 % is deducted. The section and equation
    numbers could not be confirmed from the sources available offline; the 90 % / 20 %
    parameters are those specified for this pipeline and must be checked against the current
    Gold Standard document before use in a verification report.

    Args:
        estimate: Net removal (e.g. t CO2e); positive = carbon gained.
        standard_error: Standard error of ``estimate`` (same unit), >= 0.
        df: Degrees of freedom of the t quantile, > 0; ``None`` = normal limit.

    Returns:
        A :class:`Deduction`; ``deduction_fraction`` is capped at 1.

    Raises:
        AccountingError: on invalid inputs (see :func:`vm0042_deduction`).
    """
    return _gold_standard_rule(
        "gold_standard_soc", "Gold Standard SOC: ", estimate, standard_error, df, units
    )


def _gold_standard_rule(
    methodology: str,
    prefix: str,
    estimate: float,
    standard_error: float,
    df: float | None,
    units: str = "t CO2e",
) -> Deduction:
    _validate(estimate, standard_error, df)
    if estimate <= 0:
        return _no_credit(methodology, estimate, standard_error, df, prefix, units)
    q = 0.5 + GOLD_STANDARD_CONFIDENCE / 2.0
    t = _t_quantile(q, df)
    unc = t * standard_error / estimate
    deduction = min(max(unc - GOLD_STANDARD_THRESHOLD, 0.0), 1.0)
    note = (
        f"{prefix}UNC = half-width of the two-sided 90 % t-interval / estimate "
        f"(t(0.95, df={df if df is not None else 'inf'})); deduction = max(0, UNC - 20 %)."
    )
    if unc <= GOLD_STANDARD_THRESHOLD:
        note += " UNC is within the 20 % tolerance, so no deduction applies."
    elif unc - GOLD_STANDARD_THRESHOLD > 1.0:
        note += " The deduction exceeds 100 % and is capped: nothing is credited."
    return Deduction(
        methodology=methodology,
        estimate=float(estimate),
        standard_error=float(standard_error),
        uncertainty_fraction=float(unc),
        deduction_fraction=float(deduction),
        credited=float(estimate * (1.0 - deduction)),
        df=None if df is None else float(df),
        note=note,
        units=units,
    )


def car_sep_deduction(
    estimate: float, standard_error: float, *, df: float | None, units: str = "t CO2e"
) -> Deduction:
    """Climate Action Reserve Soil Enrichment Protocol (SEP v1.1) deduction — PROVISIONAL.

    The SEP's own uncertainty-deduction procedure could not be found or confirmed in the
    sources available offline, so this applies the Gold Standard-style rule of
    :func:`gold_standard_deduction` (UNC = t(0.95, df) x SE / estimate; deduction =
    max(0, UNC - 20 %)) and says so in ``note``. Replace this with the SEP rule (Climate Action
    Reserve, *Soil Enrichment Protocol*, Version 1.1, 2022, quantification section) before
    using the result for CAR issuance.
    """
    result = _gold_standard_rule(
        "car_sep",
        "CAR SEP (PROVISIONAL, Gold Standard-style rule): ",
        estimate,
        standard_error,
        df,
        units,
    )
    return dataclasses.replace(
        result,
        note=result.note
        + " WARNING: the CAR SEP v1.1 uncertainty rule is not implemented; "
        "the Gold Standard-style 90 % / 20 % rule is a stand-in and must be checked against "
        "the protocol.",
    )


#: Methodology id -> deduction function. The ids match ``deduction:`` in the methodology profiles.
DEDUCTION_METHODS: dict[str, Callable[..., Deduction]] = {
    "verra_vm0042_v2": vm0042_deduction,
    "gold_standard_soc": gold_standard_deduction,
    "car_sep": car_sep_deduction,
}


def deduction_for(
    methodology_id: str, estimate: float, standard_error: float, *, df: float | None, units: str = "t CO2e"
) -> Deduction:
    """Apply the uncertainty deduction of ``methodology_id``.

    Dispatches to :func:`vm0042_deduction` (``"verra_vm0042_v2"``),
    :func:`gold_standard_deduction` (``"gold_standard_soc"``) or :func:`car_sep_deduction`
    (``"car_sep"``, provisional Gold Standard-style rule; see its docstring). Formulas and
    sources are cited on those functions.

    Raises:
        ConfigError: if ``methodology_id`` is not one of the known ids.
        AccountingError: on invalid numeric inputs.
    """
    try:
        func = DEDUCTION_METHODS[methodology_id]
    except KeyError:
        known = ", ".join(sorted(DEDUCTION_METHODS))
        raise ConfigError(
            f"unknown deduction methodology {methodology_id!r}; set 'deduction' in the "
            f"methodology profile to one of: {known}."
        ) from None
    return func(estimate, standard_error, df=df, units=units)
