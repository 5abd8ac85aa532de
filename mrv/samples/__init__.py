"""Soil samples: sample files read by their format profile, validated, turned into 0-30 cm SOC stocks (fixed depth
or equivalent soil mass), quality-checked and stored.

The names below are imported lazily on first use, so ``import mrv.samples`` loads no pandas or SQLAlchemy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mrv.lazy import lazy_exports

if TYPE_CHECKING:
    from mrv.samples.esm import CumulativeMassCurve, EsmResult, cumulative_mass_curve, esm_stock, reference_mass_mg_ha
    from mrv.samples.formats import SampleFormat, load_format
    from mrv.samples.fusion import add_weights, source_weights
    from mrv.samples.ingest import IngestResult, Rejection
    from mrv.samples.qa import SampleChecks, check_samples
    from mrv.samples.sites import site_stocks
    from mrv.samples.stocks import fixed_depth_stock, soc_stock_t_ha
    from mrv.samples.store import SampleStore
    from mrv.samples.submit import submit_file

__all__ = [
    "CumulativeMassCurve",
    "EsmResult",
    "IngestResult",
    "Rejection",
    "SampleChecks",
    "SampleFormat",
    "SampleStore",
    "add_weights",
    "check_samples",
    "cumulative_mass_curve",
    "esm_stock",
    "fixed_depth_stock",
    "load_format",
    "reference_mass_mg_ha",
    "site_stocks",
    "soc_stock_t_ha",
    "source_weights",
    "submit_file",
]

#: Public name -> the submodule defining it (imported on first access, PEP 562).
_LAZY: dict[str, str] = {
    "SampleFormat": "formats", "load_format": "formats",
    "IngestResult": "ingest", "Rejection": "ingest",
    "SampleChecks": "qa", "check_samples": "qa",
    "site_stocks": "sites",
    "fixed_depth_stock": "stocks", "soc_stock_t_ha": "stocks",
    "CumulativeMassCurve": "esm", "EsmResult": "esm", "cumulative_mass_curve": "esm", "esm_stock": "esm", "reference_mass_mg_ha": "esm",
    "add_weights": "fusion", "source_weights": "fusion",
    "SampleStore": "store",
    "submit_file": "submit",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
