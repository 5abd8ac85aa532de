"""Validity of stock and change estimates against generated truth, today's estimator beside the new one.

``python benchmarks/validity.py [--preset small|default] [--seeds 11,23,37,41,59] [--size 200] [--zero-change-seeds 71,83]``

Presets (:data:`PRESETS`): ``small`` (the default invocation) = 20 + 8 regions of 200 x 200 px (2 x 2 km),
12 fields, 6 lab sites per field per round; ``default`` = :class:`mrv.synthetic.SceneSpec` defaults (500 x
500 px = 5 x 5 km, 36 fields, 180 lab sites and 80 crowd samples per round) on 16 + 8 regions, fewer than
``small`` so that each invocation stays within ~20 min on 2 cores. ``--size``, ``--fields``,
``--sites-per-field`` and the seed options override the preset.

For every seed a region is generated (:mod:`mrv.synthetic`, lab samples only, every baseline site
re-measured in the last round) and the pipeline steps run in this process through the step cache
(imagery, samples, model, prediction, accounting; no Prefect). Two estimators are compared on the same imagery and samples:

* **today**: one model pooled over both rounds on raw covariates; stock and change from the Monte Carlo
  of the maps (``mrv.accounting.aggregate``, round error correlation 0);
* **new**: round-normalised covariates (:func:`mrv.modeling.features.round_normalisation`); stock and
  change from the design-based estimators of :mod:`mrv.accounting.change` (re-measured sites as the
  evidence, maps as auxiliary).

Printed per estimator and quantity: pixel coverage of the 90 % map intervals (stock), field and
project coverage of the 90 % intervals of the true means, share of fields with the right sign of
change, bias (mean estimate - truth), and the interval width relative to the width implied by the
true errors (mean width / (2 x 1.645 x RMS error)). Zero-change regions (``change_scale=0``) are
reported separately: how often the project change interval covers zero. The stock and change estimators
are also run alone (no imagery, no model) on many more generated regions of the same spec (600 small, 300
default), to tell a real over- or under-width from the noise of a few regions: coverage, the variance ratio
``mean(err^2) / mean(se^2)`` and mean z^2 beside its t(df) expectation ``df / (df - 2)``, each with its standard
error, and the width ratio with its 90 % interval (the RMS of ``n`` normal errors is ``sigma * sqrt(chi2_n / n)``).
``--seeds "" --zero-change-seeds ""`` runs only this part (a few minutes). A final block lists every target of
issue 13 with the measured value and MET / MISSED.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mrv.config import ModelConfig, load_config  # noqa: E402
from mrv.fields import field_index_raster, read_fields  # noqa: E402
from mrv.pipeline import accounting, imagery, model, samples  # noqa: E402
from mrv.pipeline.layout import RunLayout  # noqa: E402
from mrv.raster import read_raster  # noqa: E402
from mrv.synthetic import SceneSpec, build_region  # noqa: E402

Z90 = 1.6448536269514722


@dataclass(frozen=True)
class Preset:
    """Region spec and seeds of one benchmark size."""

    size_px: int
    fields: int
    sites_per_field: int
    n_crowd: int
    seeds: str
    zero_change_seeds: str
    estimator_only_seeds: int
    """Further regions (seeds 1000...) for the stock and change estimators alone, without imagery: enough that a
    variance 20 % off is seen (the variance ratio's SE is ~sqrt(2 / n): 0.06 at 600, 0.08 at 300 regions), and
    cheap (~0.25 s per small and ~0.8 s per default region)."""


PRESETS = {
    "small": Preset(200, 12, 6, 10, "11,23,37,41,59,61,73,89,103,127,131,137,139,149,151,157,163,167,173,179",
                    "71,83,97,101,181,191,193,197", 600),
    "default": Preset(SceneSpec.width_px, SceneSpec.n_fields, SceneSpec.n_lab_sites // SceneSpec.n_fields,
                      SceneSpec.n_crowd, "11,23,37,41,59,61,73,89,103,127,131,137,139,149,151,157",
                      "71,83,97,101,181,191,193,197", 300),
}  # fmt: skip


def region_config(root: Path, spec: SceneSpec, cv_design: str = ModelConfig.cv_design) -> Path:
    region = build_region(root / "region", spec, overwrite=True)
    cfg = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    cfg.update(name=f"validity{spec.seed}", output_dir=str(root / "run"))
    cfg["region"]["fields"] = str(region.fields)
    cfg["imagery"]["catalog"] = str(region.collection)
    cfg["accounting"]["n_simulations"] = 200
    cfg["model"]["cv_design"] = cv_design
    cfg["model"]["cv_block_size_m"] = 500  # blocks on small regions: 'auto' can leave fewer blocks than folds
    for rnd in cfg["rounds"]:
        rnd["samples"] = [
            {"path": str(region.lab_samples[rnd["name"]]), "source": "lab", "format": "lab_wide", "submitter": "agency"}
        ]
    path = root / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_region(root: Path, spec: SceneSpec, cv_design: str = ModelConfig.cv_design) -> dict[str, Any]:
    """Both estimators on one region; returns per-field and project estimates with the truth."""
    cfg_path = region_config(root, spec, cv_design)
    base = load_config(cfg_path)
    layout = RunLayout(base.output_dir)
    for rnd in base.rounds:
        imagery.run_round(base, rnd, layout)
        samples.run_samples(base, rnd, layout)
    truth = pd.read_csv(root / "region" / "truth" / "fields_truth.csv", dtype={"round": str})
    first, last = base.rounds[0].name, base.rounds[-1].name
    out: dict[str, Any] = {"seed": spec.seed, "change_scale": spec.change_scale}
    for label, norm in (("today", False), ("new", True)):
        cfg = replace(base, model=replace(base.model, round_normalisation=norm))
        model.run_fit(cfg, layout)  # each estimator's steps in their own keyed directories
        for rnd in cfg.rounds:
            model.run_predict(cfg, rnd, layout)
        accounting.run_account(cfg, layout)
        acc = json.loads(layout.accounting.read_text())
        res: dict[str, Any] = {"fields": {}, "project": {}}
        # pixel coverage of the map intervals, both rounds, field pixels only
        pix = []
        for rnd in (first, last):
            maps = layout.round_maps(rnd)
            p05, grid, _ = read_raster(maps["p05"])
            p95, _, _ = read_raster(maps["p95"])
            tr_full, tgrid, _ = read_raster(root / "region" / "truth" / f"soc_stock_0_30cm_{rnd}.tif")
            r0 = int(round((tgrid.bounds[3] - grid.bounds[3]) / grid.resolution_m))
            c0 = int(round((grid.bounds[0] - tgrid.bounds[0]) / grid.resolution_m))
            tr = tr_full[0][r0 : r0 + grid.shape[0], c0 : c0 + grid.shape[1]]
            zones = field_index_raster(read_fields(cfg.region.fields, crs=cfg.region.crs), grid)
            on = np.isfinite(p05[0]) & (zones >= 0)
            pix.append(float(np.mean((tr[on] >= p05[0][on]) & (tr[on] <= p95[0][on]))))
        res["pixel_coverage"] = float(np.mean(pix))
        card = json.loads((layout.model_dir / "model_card.json").read_text())
        res["deciles"] = card.get("cv_coverage_by_decile") or []  # the maps' intervals (spatial CV)
        single = card.get("calibration", {}).get("single_margin") or {}
        res["deciles_single"] = single.get("cv_coverage_by_decile") or []  # one CQR margin, for comparison
        res["cv_picp"] = (card["cv"]["picp_90"], single.get("cv_picp"))
        res["cv_width"] = (card["cv"]["mean_width_90"], single.get("cv_mean_width_t_ha"))
        design = acc.get("design_based", {})
        for f in acc["fields"]:
            fid = f["field_id"]
            t = truth[truth.field_id == fid].set_index("round")["mean_soc_stock_t_ha"]
            rec: dict[str, Any] = {"true_stock": float(t[last]), "true_change": float(t[last] - t[first])}
            if label == "today":
                s = f["rounds"][last]["soc_stock_t_ha"]
                c = f["change"]["delta_soc_stock_t_ha"]
                rec.update(
                    stock=(s["mean"], s["lower_90"], s["upper_90"]), change=(c["mean"], c["lower_90"], c["upper_90"])
                )
            else:
                s = design["stock"][last]["fields"][fid]["per_ha"]
                c = design["change"]["fields"][fid]["per_ha"]
                rec.update(
                    stock=(s["mean"], s["lower_90"], s["upper_90"]), change=(c["mean"], c["lower_90"], c["upper_90"])
                )
            res["fields"][fid] = rec
        w = truth[truth["round"] == last].set_index("field_id")["n_pixels"]
        tl = truth[truth["round"] == last].set_index("field_id")["mean_soc_stock_t_ha"]
        tf = truth[truth["round"] == first].set_index("field_id")["mean_soc_stock_t_ha"]
        # project truth on the mapped field pixels: pixel-weighted mean of the true field means
        res["project"]["true_stock"] = float(np.average(tl, weights=w))
        res["project"]["true_change"] = float(np.average(tl - tf, weights=w))
        if label == "today":
            s = acc["project"]["rounds"][last]["soc_stock_t_ha"]
            c = acc["project"]["change"]["delta_soc_stock_t_ha"]
        else:
            s = design["stock"][last]["project"]["per_ha"]
            c = design["change"]["project"]["per_ha"]
        res["project"]["stock"] = (s["mean"], s["lower_90"], s["upper_90"])
        res["project"]["change"] = (c["mean"], c["lower_90"], c["upper_90"])
        res["project"]["change_se"] = c.get("se")
        if label == "new":
            ch = design["change"]
            res["change_info"] = {**ch.get("info", {}), "n_pairs": ch.get("n_pairs"), "df": ch["project"].get("df")}
            res["alone"] = sites_alone(cfg, layout, first, last)
        out[label] = res
    return out


def sites_alone(cfg: Any, layout: RunLayout, first: str, last: str) -> dict[str, Any]:
    """The change estimator alone on the run's ``sites.csv`` (every lab site, flagged or not, field from the
    sample file, b = 0, polygon areas): what the pipeline's design-based change adds to or loses from it."""
    from mrv.accounting.change import design_change, pair_sites

    fields = read_fields(cfg.region.fields, crs=cfg.region.crs)
    area = {f.field_id: float(f.area_ha) for f in fields}
    a = pd.read_csv(layout.sites(first), dtype={"field_id": str, "qa_flag": str})
    b = pd.read_csv(layout.sites(last), dtype={"field_id": str, "qa_flag": str})
    a, b = a[a["source"] == "lab"].reset_index(drop=True), b[b["source"] == "lab"].reset_index(drop=True)
    pairs = pair_sites(a, b, max_distance_m=cfg.accounting.pair_distance_m)
    _, proj, info = design_change(pairs, zones=list(area), zone_map_change_t_ha={}, area_ha=area, method="none",
                                  confidence=cfg.accounting.confidence)  # fmt: skip
    lo, hi = proj.interval()
    flagged = int(sum((t["qa_flag"].fillna("").astype(str).str.strip() != "").sum() for t in (a, b)))
    return {"change": (proj.mean_t_ha, lo, hi), "se": proj.se_t_ha, "df": proj.df, "n_pairs": len(pairs),
            "flagged": flagged, "unsampled": info["strata_without_sites"]}  # fmt: skip


def decile_table(results: list[dict[str, Any]], label: str = "new") -> list[str]:
    """Spatial-CV coverage by decile of the observed stock, pooled over regions (counts summed), maps' interval
    beside the one-margin CQR interval; plus the share of (region, decile) cells below 0.8."""
    lines = [
        "| decile | maps' interval | one margin | regions below 0.80 (maps / one margin) |",
        "|---:|---:|---:|---:|",
    ]
    for k in range(1, 11):
        cells = []
        for key in ("deciles", "deciles_single"):
            hit = n = 0.0
            low = 0
            for r in results:
                for e in r[label].get(key, []):
                    if e["decile"] == k:
                        hit += e["picp"] * e["n"]
                        n += e["n"]
                        low += e["picp"] < 0.8
            cells.append((hit / n if n else float("nan"), low))
        lines.append(
            f"| {k} | {cells[0][0]:.3f} | {cells[1][0]:.3f} | {cells[0][1]}/{len(results)} / {cells[1][1]}/{len(results)} |"
        )
    picp = np.array([r[label]["cv_picp"] for r in results], dtype=float)
    width = np.array([r[label]["cv_width"] for r in results], dtype=float)
    lines.append(f"| all | {np.nanmean(picp[:, 0]):.3f} (width {np.nanmean(width[:, 0]):.1f} t C/ha) | "
                 f"{np.nanmean(picp[:, 1]):.3f} (width {np.nanmean(width[:, 1]):.1f} t C/ha) | width ratio "
                 f"{np.nanmean(width[:, 0]) / np.nanmean(width[:, 1]):.2f} |")  # fmt: skip
    return lines


def decile_summary(results: list[dict[str, Any]], label: str = "new") -> tuple[np.ndarray, int, int]:
    """Pooled coverage per decile of the maps' interval (counts summed over regions), the number of
    (region, decile) cells below 0.80 and the number of cells."""
    hit, n = np.zeros(10), np.zeros(10)
    low = cells = 0
    for r in results:
        for e in r[label].get("deciles", []):
            hit[e["decile"] - 1] += e["picp"] * e["n"]
            n[e["decile"] - 1] += e["n"]
            low += e["picp"] < 0.8
            cells += 1
    return np.divide(hit, n, out=np.full(10, np.nan), where=n > 0), low, cells


def summarise(results: list[dict[str, Any]], label: str) -> dict[str, str]:
    rows: dict[str, str] = {}
    for q in ("stock", "change"):
        fe, fw, fc, fs = [], [], [], []
        pe, pw, pc, sign_ok = [], [], [], []
        for r in results:
            res = r[label]
            for rec in res["fields"].values():
                est, lo, hi = rec[q]
                tru = rec[f"true_{q}"]
                fe.append(est - tru)
                fw.append(hi - lo)
                fc.append(lo <= tru <= hi)
                if q == "change":
                    fs.append(np.sign(est) == np.sign(tru))
            est, lo, hi = res["project"][q]
            tru = res["project"][f"true_{q}"]
            pe.append(est - tru)
            pw.append(hi - lo)
            pc.append(lo <= tru <= hi)
            if q == "change" and (lo > 0 or hi < 0):
                sign_ok.append(np.sign(est) == np.sign(tru))
        fe_a, pe_a = np.asarray(fe), np.asarray(pe)
        rows[f"{q}: field coverage"] = f"{np.mean(fc):.3f} ({sum(fc)}/{len(fc)})"
        rows[f"{q}: project coverage"] = f"{np.mean(pc):.2f} ({sum(pc)}/{len(pc)})"
        rows[f"{q}: field bias t C/ha"] = f"{fe_a.mean():+.2f}"
        rows[f"{q}: project bias t C/ha"] = f"{pe_a.mean():+.2f}"
        rows[f"{q}: field width / true-error width"] = f"{np.mean(fw) / (2 * Z90 * math.sqrt(np.mean(fe_a**2))):.2f}"
        ratio, lo90, hi90 = width_ratio(pw, pe)
        rows[f"{q}: project width / true-error width"] = f"{ratio:.2f} [{lo90:.2f}, {hi90:.2f}]"
        if q == "change":
            rows["change: field right sign"] = f"{np.mean(fs):.2f}"
            rows["change: project right sign when interval excludes 0"] = (
                f"{np.mean(sign_ok):.2f} ({sum(sign_ok)}/{len(sign_ok)})" if sign_ok else "n/a (0 significant)"
            )
    rows["stock: pixel coverage (90 % maps)"] = f"{np.mean([r[label]['pixel_coverage'] for r in results]):.3f}"
    return rows


def width_ratio(widths: list[float], errors: list[float]) -> tuple[float, float, float]:
    """Mean interval width / (2 x 1.645 x RMS error), with the 90 % interval of the ratio the errors' sd implies:
    the RMS of ``n`` zero-mean normal errors is ``sigma * sqrt(chi2_n / n)`` (so 8 regions leave it uncertain by
    about 25 %)."""
    from scipy.stats import chi2

    e = np.asarray(errors, dtype=float)
    n = e.size
    ratio = float(np.mean(widths) / (2 * Z90 * math.sqrt(np.mean(e**2))))
    return ratio, ratio * math.sqrt(chi2.ppf(0.05, n) / n), ratio * math.sqrt(chi2.ppf(0.95, n) / n)


def _generated_sites(truth: Any, round_name: str) -> pd.DataFrame:
    """Site stocks of one round's generated lab samples with the pipeline's formula (identical to ``sites.csv``)."""
    from mrv.synthetic import make_lab_samples, soc_stock_t_ha

    lab = make_lab_samples(truth, round_name)
    lab = lab.assign(stock=soc_stock_t_ha(lab.soc_g_kg, lab.bulk_density_g_cm3, lab.bottom_cm - lab.top_cm,
                                          lab.coarse_fragments_vol_pct))  # fmt: skip
    g = lab.groupby("site_id", sort=False)
    return pd.DataFrame({"x": g.x.first(), "y": g.y.first(), "field_id": g.field_id.first(),
                         "soc_stock_t_ha": g.stock.sum()}).reset_index(drop=True)  # fmt: skip


def _score(records: list[tuple[Any, float]]) -> dict[str, Any]:
    """Coverage, variance ratio, mean z^2, mean error and width ratio of ``(DesignEstimate, truth)`` pairs.

    What tells a variance right is ``mean(err^2) / mean(se^2)`` (1 for an unbiased variance estimator, whatever
    the df), with the standard error of a ratio estimator (Cochran 1977, *Sampling Techniques*, Eq. 6.9:
    ``sd(err_i^2 - R se_i^2) / (sqrt(n) mean(se^2))``). Mean z^2 is printed beside the value it has when the
    errors are exactly normal and the variance estimate unbiased, ``E[t_df^2] = df / (df - 2)`` (1.03 at 70 df,
    1.07 at 30 df), not 1; its standard error is ``sd(z^2) / sqrt(n)``. ``top5_share`` is the share of the sum
    of z^2 from the largest 5 % (0.28 for normal z: ``P(chi2_3 > chi2_1.0.95)``), a check for heavy tails.
    """
    hits, z2, err, width, se2, ref = [], [], [], [], [], []
    for est, true in records:
        lo, hi = est.interval()
        hits.append(lo <= true <= hi)
        z2.append(((est.mean_t_ha - true) / est.se_t_ha) ** 2)
        err.append(est.mean_t_ha - true)
        width.append(hi - lo)
        se2.append(est.se_t_ha**2)
        ref.append(_t_z2(est.df))
    n = len(records)
    e2, s2, z2a = np.square(err), np.asarray(se2), np.asarray(z2)
    ratio = float(e2.mean() / s2.mean())
    cov = float(np.mean(hits))
    top = np.sort(z2a)[::-1][: max(1, n // 20)]
    return {"coverage": cov, "coverage_se": math.sqrt(cov * (1 - cov) / n),
            "var_ratio": ratio, "var_ratio_se": float(np.std(e2 - ratio * s2, ddof=1) / (math.sqrt(n) * s2.mean())),
            "mean_z2": float(z2a.mean()), "mean_z2_se": float(np.std(z2a, ddof=1) / math.sqrt(n)),
            "mean_z2_expected": float(np.nanmean(ref)), "top5_share": float(top.sum() / z2a.sum()),
            "mean_error": float(np.mean(err)), "mean_error_se": float(np.std(err, ddof=1) / math.sqrt(n)),
            "mean_df": float(np.mean([est.df for est, _ in records])),
            "width_ratio": width_ratio(width, err), "n": n}  # fmt: skip


def estimators_alone(seeds: list[int], spec: SceneSpec, confidence: float = 0.9) -> dict[str, dict[str, Any]]:
    """The design-based stock (last round) and change estimators alone on many more generated regions (no
    imagery, no model: b = 0; field areas in pixels, as the truth's project mean).

    Site stocks from the generated lab samples with the pipeline's formula, pairs and the stratified estimators
    of :mod:`mrv.accounting.change`. Returns, per quantity, project coverage, mean z^2, mean error, the width
    ratio with its 90 % interval and the number of regions: a check of the design-based variances with many
    more seeds than the pipeline runs afford.
    """
    from mrv.accounting.change import design_change, design_stock, pair_sites
    from mrv.synthetic import make_truth

    stock, change = [], []
    for seed in seeds:
        sp = replace(spec, seed=seed)
        truth = make_truth(sp)
        first, last = sp.rounds[0].name, sp.rounds[-1].name
        site = {rnd: _generated_sites(truth, rnd) for rnd in (first, last)}
        idx = truth.fields.field_index
        ids = list(truth.fields.field_ids)
        area = {f: float((idx == i + 1).sum()) for i, f in enumerate(ids)}
        weights = [area[f] for f in ids]
        true_last = np.asarray(truth.field_mean_stock(last))
        _, proj, _ = design_stock(site[last], zones=ids, zone_map_mean_t_ha={}, area_ha=area, confidence=confidence)
        stock.append((proj, float(np.average(true_last, weights=weights))))
        pairs = pair_sites(site[first], site[last], max_distance_m=10.0)
        _, proj, _ = design_change(pairs, zones=ids, zone_map_change_t_ha={}, area_ha=area, confidence=confidence,
                                   method="none")  # fmt: skip
        change.append((proj, float(np.average(true_last - np.asarray(truth.field_mean_stock(first)), weights=weights))))
    return {"stock": _score(stock), "change": _score(change)}


def alone_table(alone: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown rows of :func:`estimators_alone`, each statistic with its standard error."""
    lines = [
        "| quantity | project coverage | err^2/se^2 (1 = variance right) | mean z^2 [t(df) expects] | top 5 % of "
        "z^2 (normal 0.28) | mean error t C/ha | mean df | width ratio [90 %] |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for q, a in alone.items():
        r, lo, hi = a["width_ratio"]
        label = "stock (last round)" if q == "stock" else "change"
        lines.append(
            f"| {label} | {a['coverage']:.3f} +- {a['coverage_se']:.3f} | {a['var_ratio']:.2f} +- {a['var_ratio_se']:.2f} "
            f"| {a['mean_z2']:.2f} +- {a['mean_z2_se']:.2f} [{a['mean_z2_expected']:.2f}] | {a['top5_share']:.2f} | "
            f"{a['mean_error']:+.3f} +- {a['mean_error_se']:.3f} | {a['mean_df']:.0f} | {r:.2f} [{lo:.2f}, {hi:.2f}] |"
        )
    return lines


def _about(hits: int, n: int, p: float = 0.9) -> bool:
    """``hits`` of ``n`` is 'about' ``p``: inside the central 90 % of Binomial(n, p)."""
    from scipy.stats import binom

    return bool(binom.ppf(0.05, n, p) <= hits <= binom.ppf(0.95, n, p))


def targets(results: list[dict[str, Any]], zero_results: list[dict[str, Any]]) -> list[tuple[str, str, bool]]:
    """Issue 13's targets (What must exist 4 and 7): (target, measured value, met) for the new estimator."""
    out: list[tuple[str, str, bool]] = []
    new = [r["new"] for r in results]
    fc = [lo <= f["true_change"] <= hi for r in new for f in r["fields"].values() for _, lo, hi in [f["change"]]]
    out.append(("field change coverage 0.85-0.95", f"{np.mean(fc):.3f} ({sum(fc)}/{len(fc)})",
                0.85 <= float(np.mean(fc)) <= 0.95))  # fmt: skip
    pc = [r["project"]["change"][1] <= r["project"]["true_change"] <= r["project"]["change"][2] for r in new]
    out.append(("project change inside its interval about 90 % (central 90 % of Binomial(n, 0.9))",
                f"{sum(pc)}/{len(pc)} = {np.mean(pc):.2f}", _about(sum(pc), len(pc))))  # fmt: skip
    sig = [(e, t) for r in new for (e, lo, hi), t in [(r["project"]["change"], r["project"]["true_change"])]
           if lo > 0 or hi < 0]  # fmt: skip
    ok = sum(np.sign(e) == np.sign(t) for e, t in sig)
    out.append(("right sign whenever the project change interval excludes 0", f"{ok}/{len(sig)}", ok == len(sig)))
    ratio, lo90, hi90 = width_ratio([r["project"]["stock"][2] - r["project"]["stock"][1] for r in new],
                                    [r["project"]["stock"][0] - r["project"]["true_stock"] for r in new])  # fmt: skip
    out.append(("project stock width <= 1.3 x the true-error width", f"{ratio:.2f} [90 %: {lo90:.2f}, {hi90:.2f}]",
                ratio <= 1.3))  # fmt: skip
    cov, low, cells = decile_summary(results)
    out.append(("spatial-CV coverage >= 0.80 in every decile of observed stock (pooled over regions)",
                f"lowest {np.nanmin(cov):.3f} (decile {int(np.nanargmin(cov)) + 1}); {low}/{cells} (region, decile) "
                "cells below 0.80", bool(np.nanmin(cov) >= 0.80)))  # fmt: skip
    if zero_results:
        zc = [r["new"]["project"]["change"][1] <= 0 <= r["new"]["project"]["change"][2] for r in zero_results]
        out.append(("zero true change: project change interval covers 0 about 90 %", f"{sum(zc)}/{len(zc)}",
                    _about(sum(zc), len(zc))))  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="small",
        help="region size and seeds: small = 2 x 2 km regions, default = SceneSpec() defaults (5 x 5 km)",
    )
    ap.add_argument("--seeds", default=None, help="comma-separated seeds (default: the preset's)")
    ap.add_argument("--zero-change-seeds", default=None, help="seeds of zero-change regions (default: the preset's)")
    ap.add_argument("--size", type=int, default=None, help="region edge in 10 m pixels (default: the preset's)")
    ap.add_argument("--fields", type=int, default=None)
    ap.add_argument("--sites-per-field", type=int, default=None)
    ap.add_argument("--keep", type=Path, default=None, help="keep the regions and runs under this directory")
    ap.add_argument("--cv-design", choices=["knndm", "blocks"], default=ModelConfig.cv_design,
                    help="model.cv_design of the runs (blocks: square 500 m blocks)")  # fmt: skip
    ap.add_argument(
        "--design-only-seeds",
        type=int,
        default=None,
        help="further regions (seeds 1000...) for the stock and change estimators alone, without imagery",
    )
    args = ap.parse_args(argv)
    pre = PRESETS[args.preset]
    size = args.size or pre.size_px
    n_fields = args.fields or pre.fields
    per_field = args.sites_per_field or pre.sites_per_field
    seeds = pre.seeds if args.seeds is None else args.seeds
    zero_seeds = pre.zero_change_seeds if args.zero_change_seeds is None else args.zero_change_seeds
    n_alone = pre.estimator_only_seeds if args.design_only_seeds is None else args.design_only_seeds
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    base = SceneSpec(width_px=size, height_px=size, n_fields=n_fields,
                     n_lab_sites=n_fields * per_field, n_crowd=pre.n_crowd)  # fmt: skip
    specs = [replace(base, seed=int(s)) for s in seeds.split(",") if s]
    zero = [replace(base, seed=int(s), change_scale=0.0) for s in zero_seeds.split(",") if s]
    t0 = time.time()
    results, zero_results = [], []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.keep or Path(tmp)
        for spec in [*specs, *zero]:
            t = time.time()
            r = run_region(workdir / f"seed{spec.seed}_c{spec.change_scale:g}", spec, args.cv_design)
            (zero_results if spec.change_scale == 0 else results).append(r)
            print(f"# seed {spec.seed} (change x{spec.change_scale:g}) done in {time.time() - t:.0f} s", flush=True)
    if results:
        today, new = summarise(results, "today"), summarise(results, "new")
        print(f"\n{len(results)} regions (preset {args.preset}: {size}x{size} px, {n_fields} fields, "
              f"{per_field} lab sites per field per round, all re-measured, CV design {args.cv_design}), seeds {seeds}")  # fmt: skip
        print("| quantity | today (pooled raw model, map Monte Carlo) | new (round-normalised, design-based) |")
        print("|---|---:|---:|")
        for k in today:
            print(f"| {k} | {today[k]} | {new[k]} |")
        print_change_regions(results)
    if results and results[0]["new"].get("deciles"):
        print(f"\nSpatial-CV 90 % coverage by decile of the observed stock (new estimator's model card), pooled over "
              f"{len(results)} regions:")  # fmt: skip
        print("\n".join(decile_table(results)))
    if zero_results:
        print(f"\nZero true change ({len(zero_results)} regions, seeds {zero_seeds}):")
        print("| estimator | project change covers 0 | mean project change t C/ha |")
        print("|---|---:|---:|")
        for label in ("today", "new"):
            cov = [r[label]["project"]["change"][1] <= 0 <= r[label]["project"]["change"][2] for r in zero_results]
            mean = np.mean([r[label]["project"]["change"][0] for r in zero_results])
            print(f"| {label} | {sum(cov)}/{len(cov)} | {mean:+.2f} |")
    if n_alone:
        alone = estimators_alone(list(range(1000, 1000 + n_alone)), base)
        print(f"\nEstimators alone (stratified, b = 0) on {n_alone} further generated regions (seeds 1000-"
              f"{999 + n_alone}, same spec, no imagery):")  # fmt: skip
        print("\n".join(alone_table(alone)))
    if results:
        print(
            f"\nTargets (issue 13; new estimator, preset {args.preset}, {len(results)} + {len(zero_results)} regions):"
        )
        print("| target | measured | |")
        print("|---|---|---|")
        for name, value, met in targets(results, zero_results):
            print(f"| {name} | {value} | {'MET' if met else 'MISSED'} |")
    print(f"\nwall {time.time() - t0:.0f} s, load average {os.getloadavg()[0]:.1f}")
    return 0


def print_change_regions(results: list[dict[str, Any]]) -> None:
    """Per-region project change: the pipeline's estimate beside the estimator alone on ``sites.csv``."""
    print("\nProject change, per region (new estimator; 'alone' = the estimator on sites.csv, b = 0, every site):")
    print(
        "| seed | truth | pipeline est [90 %] | z | pairs | b | unsampled fields | alone est [90 %] | z | pairs | flagged |"
    )
    print("|---:|---:|---|---:|---:|---:|---:|---|---:|---:|---:|")
    for r in results:
        n, al, tru = r["new"], r["new"]["alone"], r["new"]["project"]["true_change"]
        e, lo, hi = n["project"]["change"]
        ea, la, ha = al["change"]
        z = (e - tru) / n["project"]["change_se"] if n["project"]["change_se"] else float("nan")
        za = (ea - tru) / al["se"] if al["se"] else float("nan")
        info = n["change_info"]
        print(f"| {r['seed']} | {tru:+.2f} | {e:+.2f} [{lo:+.2f}, {hi:+.2f}] | {z:+.2f} | {info['n_pairs']} | "
              f"{info['slope_b']:+.2f} | {len(info['strata_without_sites'])} | {ea:+.2f} [{la:+.2f}, {ha:+.2f}] | "
              f"{za:+.2f} | {al['n_pairs']} | {al['flagged']} |")  # fmt: skip
    zs = [((r["new"]["project"]["change"][0] - r["new"]["project"]["true_change"]) / r["new"]["project"]["change_se"])
          for r in results]  # fmt: skip
    za = [((r["new"]["alone"]["change"][0] - r["new"]["project"]["true_change"]) / r["new"]["alone"]["se"])
          for r in results]  # fmt: skip
    exp_p = np.nanmean([_t_z2(r["new"]["change_info"].get("df")) for r in results])
    exp_a = np.nanmean([_t_z2(r["new"]["alone"].get("df")) for r in results])
    print(
        f"mean z^2: pipeline {np.mean(np.square(zs)):.2f} [t(df) expects {exp_p:.2f}], alone {np.mean(np.square(za)):.2f} "
        f"[{exp_a:.2f}], +- {math.sqrt(2 / len(zs)):.2f} (SE of a mean of {len(zs)} chi-square(1) values); mean z: "
        f"pipeline {np.mean(zs):+.2f}, alone {np.mean(za):+.2f} (0 when unbiased)"
    )


def _t_z2(df: float | None) -> float:
    """``E[t_df^2] = df / (df - 2)``: the mean z^2 of a right variance estimated with ``df`` df (nan if <= 2)."""
    return float(df) / (float(df) - 2) if df is not None and df > 2 else math.nan


if __name__ == "__main__":
    raise SystemExit(main())
