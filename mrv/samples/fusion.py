"""Fusing lab and crowd-sourced site stocks: how much each source counts in the model.

Every site stock carries an SD from its source's error model (``samples: error_models:`` in the
run config, see :mod:`mrv.samples.sites`). The model weighs sites by inverse variance,
``w_i = 1 / (process_sd^2 + sd_i^2)`` (:func:`mrv.modeling.train.sample_weights`), so a crowd
site with a 20 % SOC error and an estimated bulk density counts far less than a lab site, but
many crowd sites still add information where lab sites are sparse. ``process_sd`` is the
variation the covariates cannot explain: it caps the weight of even a perfect measurement.

This module reports that weighting (per source: sites, weight share and Kish's effective number
of sites) and provides the naive alternative -- every site treated like a lab site -- for
comparisons.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from mrv.errors import SampleError
from mrv.modeling.train import sample_weights

__all__ = ["SourceWeight", "add_weights", "source_weights", "treat_as"]


@dataclass(frozen=True)
class SourceWeight:
    """How much one sample source counts in the weighted fit."""

    source: str
    n_sites: int
    median_sd_t_ha: float
    """Median stock SD of the source's sites (t C/ha)."""
    weight_share: float
    """Share of the total weight (0..1)."""
    effective_n: float
    """Kish's effective number of sites among the source's own weights, ``(sum w)^2 / sum w^2``
    (Kish 1965, Survey Sampling, Sect. 11.7): ``n_sites`` when they all weigh the same, fewer when a
    few dominate."""

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def _usable(sites: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ("source", "soc_stock_t_ha", "soc_stock_sd_t_ha") if c not in sites.columns]
    if missing:
        raise SampleError(f"The site table lacks column(s) {missing}; compute it with mrv.samples.sites.site_stocks.")
    ok = sites["soc_stock_t_ha"].notna() & sites["soc_stock_sd_t_ha"].notna()
    if "qa_flag" in sites.columns:
        ok &= sites["qa_flag"].fillna("").astype(str) == ""
    return sites[ok]


def add_weights(sites: pd.DataFrame, *, process_sd_t_ha: float) -> pd.DataFrame:
    """``sites`` with a ``weight`` column: the model's inverse-variance weight (mean 1 over the used sites).

    Sites with a ``qa_flag`` or without a stock get weight 0: they are left out of training.
    """
    out = sites.copy()
    out["weight"] = 0.0
    used = _usable(sites)
    if len(used):
        w = sample_weights(used["soc_stock_sd_t_ha"].to_numpy(dtype=float), process_sd=process_sd_t_ha)
        out.loc[used.index, "weight"] = w
    return out


def source_weights(sites: pd.DataFrame, *, process_sd_t_ha: float) -> dict[str, SourceWeight]:
    """Per source: sites used, median stock SD, share of the total weight, effective number of sites."""
    used = _usable(sites)
    if used.empty:
        return {}
    w = sample_weights(used["soc_stock_sd_t_ha"].to_numpy(dtype=float), process_sd=process_sd_t_ha)
    total = float(w.sum())
    out: dict[str, SourceWeight] = {}
    for source in sorted(used["source"].astype(str).unique()):
        mask = (used["source"].astype(str) == source).to_numpy()
        ws = w[mask]
        out[source] = SourceWeight(
            source=source,
            n_sites=int(mask.sum()),
            median_sd_t_ha=float(np.median(used.loc[mask, "soc_stock_sd_t_ha"].to_numpy(dtype=float))),
            weight_share=float(ws.sum() / total),
            effective_n=float(ws.sum() ** 2 / np.sum(ws**2)),
        )
    return out


def treat_as(sites: pd.DataFrame, *, reference: str = "lab") -> pd.DataFrame:
    """Naive pooling: every site gets the median stock SD of the ``reference`` source (equal weights).

    This is what ignoring the error models amounts to -- crowd sites counted like lab sites. It is
    a baseline for comparisons (see ``tests/test_fusion.py``), not something to fit a reported
    model on.
    """
    ref = sites.loc[sites["source"] == reference, "soc_stock_sd_t_ha"].astype(float)
    if ref.empty:
        raise SampleError(f"There are no '{reference}' sites to take the stock SD from.")
    return sites.assign(soc_stock_sd_t_ha=float(ref.median()))
