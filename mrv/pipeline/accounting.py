"""Accounting stage: field and project stocks per round, their change, t CO2e, with Monte Carlo intervals.

One cached step, ``account`` (:func:`account_spec`, :func:`account`): it reads the accounting, model
and region sections and the rounds; upstream are the model (its cross-validation predictions give the
error model) and every round's maps.
"""

from __future__ import annotations

from pathlib import Path

from mrv.accounting.recompute import (
    AccountingSettings,
    compute_accounting,
    cv_points,
    estimate_error_model,
    round_maps_grid,
    stream_zone_sums,
)
from mrv.config import RunConfig
from mrv.fields import read_fields
from mrv.fsio import write_json
from mrv.heap import limit_heap_growth
from mrv.pipeline.cache import StepSpec, declare, run_cached
from mrv.pipeline.change_step import design_accounting
from mrv.pipeline.layout import RunLayout, StepPlace

__all__ = ["account", "account_spec", "run_account"]

ACCOUNT_READS = ("cfg.accounting", "cfg.model", "cfg.region", "cfg.rounds")


def account_spec(cfg: RunConfig, layout: RunLayout) -> StepSpec:
    return declare(
        "account", StepPlace("accounting"), layout=layout, roots={"cfg": cfg}, reads=ACCOUNT_READS,
        upstream=[StepPlace("model"), *(StepPlace("maps", r.name) for r in cfg.rounds)], outputs=("accounting.json",),
    )  # fmt: skip


def run_account(cfg: RunConfig, layout: RunLayout) -> tuple[StepSpec, bool]:
    spec = account_spec(cfg, layout)
    return spec, run_cached(spec, layout, lambda lay: account(spec.view("cfg", cfg), lay))


def account(cfg: RunConfig, layout: RunLayout) -> Path:
    """Field and project stocks per round, change and tCO2e with Monte Carlo 90 % intervals.

    The error correlation comes from the variogram of the cross-validation errors when
    ``accounting.error_range_m`` is ``auto`` (:mod:`mrv.accounting.variogram`). Every setting and input
    is recorded so that ``mrv report verify`` can recompute the numbers (:mod:`mrv.accounting.recompute`).
    The maps are read strip by strip (:func:`mrv.accounting.recompute.stream_zone_sums`): memory is bounded by a
    strip of about 4 Mpx, not the region.
    """
    limit_heap_growth()
    fields = read_fields(cfg.region.fields, crs=cfg.region.crs)
    map_paths = {rnd.name: {k: layout.round_maps(rnd.name)[k] for k in ("mean", "sd")} for rnd in cfg.rounds}
    grid = round_maps_grid(map_paths)
    acc = cfg.accounting
    oof = cv_points(layout.cv_predictions, layout.features) if layout.cv_predictions.is_file() else None
    em = estimate_error_model(
        oof,
        interval_confidence=cfg.model.confidence,
        range_m=acc.error_range_m,
        round_correlation=acc.round_error_correlation,
        first_round=cfg.rounds[0].name,
        last_round=cfg.rounds[-1].name,
    )
    settings = AccountingSettings(
        n_simulations=acc.n_simulations,
        seed=acc.seed,
        confidence=acc.confidence,
        range_m=em.range_m,
        nugget_share=em.nugget_share,
        round_correlation=em.round_correlation,
    )
    sums = stream_zone_sums(fields, map_paths, grid, range_m=settings.range_m)  # the maps, strip by strip
    project, out_fields = compute_accounting(fields, sums, settings=settings)
    design = design_accounting(cfg, layout, fields, sums.centre_means(), grid)
    return write_json(
        layout.accounting,
        {
            "method": "Monte Carlo with spatially correlated prediction errors",
            "n_simulations": acc.n_simulations,
            "error_range_m": em.range_m,
            "error_range_source": em.range_source,
            "nugget_share": em.nugget_share,
            "round_error_correlation": em.round_correlation,
            "round_error_correlation_source": em.round_correlation_source,
            "confidence": acc.confidence,
            "settings": settings.to_dict(),
            "error_model": {
                "range_source": em.range_source,
                "interval_confidence": cfg.model.confidence,
                "variogram": em.variogram.to_dict() if em.variogram is not None else None,
                "round_error_correlation_source": em.round_correlation_source,
                "round_error_correlation_estimate": em.round_correlation_estimate,
                "round_error_correlation_pairs": em.round_correlation_pairs,
                "round_error_correlation_method": (
                    "intrinsic coregionalization: least squares of z_i z_j on c1 exp(-h/a) over CV point pairs of the "
                    "first and last round closer than a (Wackernagel 2003, Ch. 23); sampling error not propagated"
                ),
                "note": em.note,
            },
            "inputs": {
                "fields": str(Path(cfg.region.fields).resolve()),
                "crs": cfg.region.crs,
                "maps": {
                    r: {k: str(p.relative_to(layout.root)) for k, p in kinds.items()} for r, kinds in map_paths.items()
                },
            },
            "project": project,
            "fields": out_fields,
            "design_based": design,
        },
        allow_nan=True,
    )
