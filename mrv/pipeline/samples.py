"""Samples stage: ingest a round's sample files (and its samples in the store) into site stocks with QA flags.

One cached step per round, ``prepare-samples[<round>]`` (:func:`samples_spec`, :func:`prepare_samples`).
It reads the region, the soil depth, the round (its sample files and store query), the samples and
stocks sections and the model's process SD (for the weights); with ``stocks: {method: esm}`` also every
round (the reference soil mass comes from the first round's lab samples). Inputs are the field
polygons and every sample file the declared config names; a store-fed round is keyed on the store's
submissions in its window (:func:`mrv.samples.store.store_state`), so new, corrected or withdrawn
submissions recompute it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from mrv.config import RoundConfig, RunConfig
from mrv.fields import read_fields
from mrv.fsio import write_json
from mrv.pipeline.cache import StepSpec, declare, run_cached
from mrv.pipeline.esm_step import esm_for_round
from mrv.pipeline.imagery import project_grid
from mrv.pipeline.layout import RunLayout, StepPlace
from mrv.samples.formats import load_format
from mrv.samples.fusion import add_weights, source_weights
from mrv.samples.ingest import ingest
from mrv.samples.qa import (
    carry_sample_flags,
    flag_duplicates,
    flag_field_edges,
    flag_gps_accuracy,
    flag_outliers_against_lab,
    flag_position_jitter,
)
from mrv.samples.sites import site_stocks
from mrv.textsafe import write_csv

__all__ = ["prepare_samples", "run_samples", "samples_spec"]

SAMPLES_READS = ("cfg.region", "cfg.depth_cm", "round", "cfg.samples", "cfg.stocks", "cfg.model.process_sd_t_ha")
SAMPLES_OUTPUTS = ("sites.csv", "samples_rejected.csv", "samples.json")


def samples_spec(cfg: RunConfig, rnd: RoundConfig, layout: RunLayout) -> StepSpec:
    reads = [*SAMPLES_READS, *(["cfg.rounds"] if cfg.stocks.method == "esm" else [])]
    roots: dict[str, Any] = {"cfg": cfg, "round": rnd}
    if rnd.store is not None:  # keyed on the store's submissions in the round's window (new, corrected, withdrawn)
        from mrv.samples.store import SampleStore, store_query, store_state

        url, query = store_query(rnd.store)
        with SampleStore.open(url) as opened:
            roots["store"] = store_state(opened, query)
        reads.append("store")
    return declare(
        f"prepare-samples[{rnd.name}]", StepPlace("samples", rnd.name), layout=layout, roots=roots, reads=reads,
        outputs=SAMPLES_OUTPUTS,
    )  # fmt: skip


def run_samples(cfg: RunConfig, rnd: RoundConfig, layout: RunLayout) -> tuple[StepSpec, bool]:
    spec = samples_spec(cfg, rnd, layout)
    ran = run_cached(spec, layout, lambda lay: prepare_samples(spec.view("cfg", cfg), spec.view("round", rnd), lay))
    return spec, ran


def prepare_samples(cfg: RunConfig, rnd: RoundConfig, layout: RunLayout) -> Path:
    """Ingest every sample file of a round, compute 0-depth site stocks, flag duplicates and outliers.

    Site stock SDs follow the per-source error models of ``cfg.samples``; crowd sites far from the
    lab sites around them are flagged (:func:`~mrv.samples.qa.flag_outliers_against_lab`). Flagged
    sites stay in sites.csv with their ``qa_flag`` and are left out of training. ``weight`` is each
    site's inverse-variance weight in the model (see :mod:`mrv.samples.fusion`).
    """
    grid = project_grid(cfg)
    records: list[pd.DataFrame] = []
    rejected: list[pd.DataFrame] = []
    summary: dict[str, dict[str, Any]] = {}
    for sf in rnd.samples:
        fmt = sf.format_profile or load_format(sf.format, config_path=cfg.source_path)
        res = ingest(
            sf.path, fmt, source=sf.source, submitter=sf.submitter, project_crs=grid.crs, region_bounds=grid.bounds
        )
        records.append(res.accepted)
        rej = res.rejected_frame()
        rej.insert(0, "file", sf.path.name)
        rejected.append(rej)
        entry = summary.setdefault(sf.source, {"submitted": 0, "accepted": 0, "rejected": 0, "samples": 0, "files": []})
        entry["submitted"] += res.submitted  # file lines: accepted + rejected == submitted
        entry["accepted"] += res.accepted_lines
        entry["rejected"] += len(res.rejected)
        entry["samples"] += len(res.accepted)
        entry["files"].append(sf.path.name)
    if rnd.store is not None:  # samples submitted to the store (mrv samples submit / the ingest deployment)
        from mrv.samples.store import redact_url, round_samples, store_query

        url, query = store_query(rnd.store)
        stored, _state = round_samples(url, query, project_crs=grid.crs)
        records.append(stored.drop(columns=["submission_id", "agency"]))
        for source, part in stored.groupby("source", sort=True):
            entry = summary.setdefault(
                str(source), {"submitted": 0, "accepted": 0, "rejected": 0, "samples": 0, "files": []}
            )
            entry["samples"] += len(part)
            # Stored samples were accepted at submission (their rejected lines stay in the store's ledger).
            entry["submitted"] += len(part)
            entry["accepted"] += len(part)
            entry["from_store"] = {"database": redact_url(url), "submissions": sorted(int(i) for i in part["submission_id"].unique()),
                                   "samples": len(part), "flagged_in_store": int((part["qa_flag"] != "").sum())}  # fmt: skip
    all_records = pd.concat(records, ignore_index=True) if records else pd.DataFrame()
    samples_cfg = cfg.samples
    if len(all_records):
        all_records = flag_gps_accuracy(all_records, tolerance_m=samples_cfg.gps_tolerance_m)
        all_records = flag_position_jitter(all_records, tolerance_m=samples_cfg.gps_tolerance_m)
    sites, incomplete = (
        site_stocks(all_records, depth_cm=cfg.depth_cm, error_models=samples_cfg.error_models)
        if len(all_records)
        else (pd.DataFrame(), {})
    )
    esm_summary = None
    if cfg.stocks.method == "esm" and len(sites):  # equivalent soil mass (VM0042 v2.2 Sect. 8.2.1.6)
        sites, esm_summary = esm_for_round(cfg, rnd.name, all_records, sites, grid.bounds)
    sites = flag_duplicates(sites, tolerance_m=samples_cfg.duplicate_tolerance_m)  # starts qa_flag afresh
    if len(sites):
        sites = carry_sample_flags(sites, all_records)  # the samples' GPS flags onto their site
        if samples_cfg.field_edge_check:
            fields = read_fields(cfg.region.fields, crs=cfg.region.crs)
            sites = flag_field_edges(
                sites,
                {f.field_id: f.geometry for f in fields},
                tolerance_m=samples_cfg.gps_tolerance_m,
                pixel_size_m=cfg.region.resolution_m,
            )
    sites = flag_outliers_against_lab(
        sites,
        radius_m=samples_cfg.outlier_radius_m,
        k=samples_cfg.outlier_k,
        min_lab_sites=samples_cfg.outlier_min_lab_sites,
    )
    weights = {}
    if len(sites):
        sites = add_weights(sites, process_sd_t_ha=cfg.model.process_sd_t_ha)
        weights = source_weights(sites, process_sd_t_ha=cfg.model.process_sd_t_ha)
    write_csv(sites, layout.sites(rnd.name))
    no_rejections = pd.DataFrame(columns=["file", "row", "column", "value", "reason"])  # a round fed by the store only
    write_csv(pd.concat(rejected, ignore_index=True) if rejected else no_rejections, layout.rejected(rnd.name))
    for source, entry in summary.items():
        entry["sites"] = int((sites["source"] == source).sum()) if len(sites) else 0
        entry["flagged"] = int(((sites["source"] == source) & (sites["qa_flag"] != "")).sum()) if len(sites) else 0
        if source in weights:
            w = weights[source]
            entry.update(weight_share=w.weight_share, effective_n=w.effective_n, median_stock_sd_t_ha=w.median_sd_t_ha)
        model = samples_cfg.error_models.get(source)
        if model is not None:
            entry["error_model"] = {"soc_rel_sd": model.soc_rel_sd, "bd_sd_g_cm3": model.bd_sd_g_cm3}
    summary["incomplete_sites"] = incomplete  # type: ignore[assignment]
    if esm_summary is not None:
        summary["stocks_esm"] = esm_summary
    write_json(layout.samples_summary(rnd.name), summary, allow_nan=True)
    return layout.sites(rnd.name)
