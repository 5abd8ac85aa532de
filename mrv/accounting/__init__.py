"""Carbon accounting: Monte Carlo field and project stocks with spatially correlated map errors, change, t CO2e,
uncertainty deductions and the methodology checks.

The names below are imported lazily on first use, so ``import mrv.accounting`` loads none of its submodules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mrv.lazy import lazy_exports

if TYPE_CHECKING:
    from mrv.accounting.aggregate import CO2_PER_C, Interval, simulate_zone_means, summarize
    from mrv.accounting.change import design_change, design_stock
    from mrv.accounting.deductions import Deduction, deduction_for
    from mrv.accounting.methodology import MethodologyProfile, check_methodology, load_methodology
    from mrv.accounting.recompute import AccountingSettings, MapErrorModel, compute_accounting, estimate_error_model
    from mrv.accounting.variogram import fit_cv_error_variogram
    from mrv.accounting.vt0014 import validate_dsm

__all__ = [
    "CO2_PER_C",
    "AccountingSettings",
    "Deduction",
    "Interval",
    "MapErrorModel",
    "MethodologyProfile",
    "check_methodology",
    "compute_accounting",
    "deduction_for",
    "design_change",
    "design_stock",
    "estimate_error_model",
    "fit_cv_error_variogram",
    "load_methodology",
    "simulate_zone_means",
    "summarize",
    "validate_dsm",
]

#: Public name -> the submodule defining it (imported on first access, PEP 562).
_LAZY: dict[str, str] = {
    "CO2_PER_C": "aggregate", "Interval": "aggregate", "simulate_zone_means": "aggregate", "summarize": "aggregate",
    "AccountingSettings": "recompute", "MapErrorModel": "recompute", "compute_accounting": "recompute", "estimate_error_model": "recompute",
    "fit_cv_error_variogram": "variogram",
    "design_change": "change", "design_stock": "change",
    "Deduction": "deductions", "deduction_for": "deductions",
    "MethodologyProfile": "methodology", "check_methodology": "methodology", "load_methodology": "methodology",
    "validate_dsm": "vt0014",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
