"""Synthetic soil-sample tables: agency lab data and crowd-sourced submissions.

Pure builders (:func:`make_lab_samples`, :func:`make_crowd_samples`) return pandas
DataFrames with exactly the published column order; :func:`write_csv` writes them with
stable formatting so the same spec always gives the same bytes.

Lab table (``LAB_COLUMNS``): ``n_lab_sites`` sites per round, stratified over fields (every
field gets ``n_lab_sites // n_fields`` sites, the remainder goes to randomly chosen fields),
placed at random inside the field away from its edge pixels; one row per site and depth increment
(``spec.lab_layers_cm``, default 0-15 and 15-30 cm). Measured values are the truth at the site's
10 m pixel (integrated over the increment, :meth:`~mrv.synthetic.truth.SoilState.layer`) plus lab
error: SOC x (1 + N(0, 0.04)), bulk density + N(0, 0.05) g/cm3, coarse fragments + N(0, 1.5) vol %.
Coordinates are projected (``epsg`` column). Later rounds re-measure ``spec.remeasured_share`` of
the first round's sites at their recorded position (GPS re-location error ``relocation_sd_m``);
the other sites are new locations.

Crowd table (``CROWD_COLUMNS``): a single 0-30 cm core per submission, SOC in percent
(g/100 g, mass-weighted over the two layers) x exp(N(0, 0.2)) (~20 % relative error),
lon/lat in EPSG:4326 with 5-30 m GPS jitter, no bulk density.

Planted crowd defects (all listed in the returned :class:`CrowdDefects`):

* 3 impossible rows: one with negative ``soc_percent`` (-1.2), one with ``soc_percent`` 85.0,
  one with ``bottom_cm`` (0) < ``top_cm`` (30);
* 3 exact duplicates: three valid rows appear twice, byte-identical;
* 2 near-duplicates: two valid rows re-submitted with a new ``sample_id`` (``C<round>-9xxx``)
  and otherwise identical values (same point, submitter, date and SOC).

So a crowd table has ``n_crowd + 5`` rows, in shuffled order.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from pyproj import Transformer
from scipy import ndimage

from mrv.synthetic.truth import RegionTruth

LAB_COLUMNS: tuple[str, ...] = (
    "sample_id",
    "site_id",
    "farm_id",
    "field_id",
    "x",
    "y",
    "epsg",
    "sampling_date",
    "top_cm",
    "bottom_cm",
    "soc_g_kg",
    "bulk_density_g_cm3",
    "coarse_fragments_vol_pct",
    "method",
)
CROWD_COLUMNS: tuple[str, ...] = (
    "sample_id",
    "submitter",
    "lon",
    "lat",
    "sampling_date",
    "top_cm",
    "bottom_cm",
    "soc_percent",
    "method",
)
LAB_METHOD = "dry combustion (ISO 10694)"
_SUBMITTERS = (
    "anna.gruber",
    "sepp_bauer",
    "m.hofer",
    "lisa-w",
    "agrar_kurt",
    "leitner.maria",
    "jakob.s",
    "biohof-eder",
)
_CROWD_METHODS = ("loss on ignition", "field test kit", "dry combustion", "Walkley-Black")


@dataclass(frozen=True)
class CrowdDefects:
    """Sample ids of the rows deliberately planted as defects in a crowd table."""

    negative_soc_id: str
    too_high_soc_id: str
    inverted_depth_id: str
    exact_duplicate_ids: tuple[str, ...]
    near_duplicate_pairs: tuple[tuple[str, str], ...]  # (original id, re-submitted id)

    @property
    def impossible_ids(self) -> tuple[str, str, str]:
        """Ids of the three physically impossible rows."""
        return (self.negative_soc_id, self.too_high_soc_id, self.inverted_depth_id)


def _site_pixels(truth: RegionTruth, n_sites: int, rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """(field index, row, col) of ``n_sites`` stratified sites; >= n_sites // n_fields each."""
    idx = truth.fields.field_index
    n_f = truth.fields.n
    counts = np.full(n_f, n_sites // n_f)
    counts[rng.choice(n_f, size=n_sites - counts.sum(), replace=False)] += 1
    out: list[tuple[int, int, int]] = []
    for f in range(n_f):
        mask = idx == f + 1
        inner = ndimage.binary_erosion(mask)
        cand = np.flatnonzero(inner if inner.sum() >= counts[f] else mask)
        picks = rng.choice(cand, size=int(counts[f]), replace=len(cand) < counts[f])
        for p in picks:
            r, c = divmod(int(p), idx.shape[1])
            out.append((f, r, c))
    return out


def _revisits(truth: RegionTruth, round_name: str) -> list[tuple[int, float, float]]:
    """(field index, x, y) of the first round's sites sampled again in ``round_name`` (none in the first)."""
    spec = truth.spec
    first = spec.rounds[0].name
    if round_name == first or spec.remeasured_share <= 0:
        return []
    base = make_lab_samples(truth, first).drop_duplicates("site_id")
    n_re = int(round(spec.remeasured_share * len(base)))
    rng = spec.rng(f"remeasure/{round_name}")
    pick = np.sort(rng.choice(len(base), size=n_re, replace=False))
    jitter = rng.normal(0.0, spec.relocation_sd_m, (n_re, 2))
    index = {fid: i for i, fid in enumerate(truth.fields.field_ids)}
    rows = base.iloc[pick]
    return [
        (index[str(f)], float(x) + dx, float(y) + dy)
        for f, x, y, (dx, dy) in zip(rows["field_id"], rows["x"], rows["y"], jitter, strict=True)
    ]


def make_lab_samples(truth: RegionTruth, round_name: str) -> pd.DataFrame:
    """Agency lab samples of one round (one row per site and depth increment), columns ``LAB_COLUMNS``.

    In later rounds the first ``remeasured_share`` of the baseline sites are visited again at their
    recorded position (plus GPS re-location error) and listed first; the rest are new sites.
    """
    spec = truth.spec
    rnd = next(r for r in spec.rounds if r.name == round_name)
    rng = spec.rng(f"lab/{round_name}")
    state = truth.states[round_name]
    fields = truth.fields
    res = spec.resolution_m
    revisits = _revisits(truth, round_name)
    n_new = spec.n_lab_sites - len(revisits)
    fresh = _site_pixels(truth, n_new, rng) if n_new > 0 else []
    sites: list[tuple[int, float | None, float | None, int, int]] = [(f, x, y, -1, -1) for f, x, y in revisits]
    sites += [(f, None, None, r, c) for f, r, c in fresh]
    rows: list[dict[str, object]] = []
    nrow, ncol = spec.shape
    for k, (f, x0, y0, r0, c0) in enumerate(sites, start=1):
        if x0 is None or y0 is None:  # a new site: random position in its pixel (drawn in the loop, as before)
            x = spec.origin_x + (c0 + rng.uniform(0.1, 0.9)) * res
            y = spec.origin_y - (r0 + rng.uniform(0.1, 0.9)) * res
        else:
            x, y = x0, y0
        r = min(max(int((spec.origin_y - y) // res), 0), nrow - 1)
        c = min(max(int((x - spec.origin_x) // res), 0), ncol - 1)
        site = f"L{round_name}-{k:04d}"
        for j, (top, bottom) in enumerate(spec.lab_layers_cm):
            soc, bd = state.layer(float(top), float(bottom), (r, c))
            rows.append(
                {
                    "sample_id": f"{site}-{chr(ord('A') + j)}",
                    "site_id": site,
                    "farm_id": fields.farm_ids[f],
                    "field_id": fields.field_ids[f],
                    "x": round(x, 2),
                    "y": round(y, 2),
                    "epsg": spec.crs_epsg,
                    "sampling_date": rnd.sampling_date,
                    "top_cm": int(top),
                    "bottom_cm": int(bottom),
                    "soc_g_kg": round(float(soc * (1.0 + rng.normal(0.0, 0.04))), 2),
                    "bulk_density_g_cm3": round(float(bd + rng.normal(0.0, 0.05)), 2),
                    "coarse_fragments_vol_pct": round(
                        float(max(0.0, state.cf_vol_pct[r, c] + rng.normal(0.0, 1.5))), 1
                    ),
                    "method": LAB_METHOD,
                }
            )
    return pd.DataFrame(rows, columns=list(LAB_COLUMNS))


def make_crowd_samples(truth: RegionTruth, round_name: str) -> tuple[pd.DataFrame, CrowdDefects]:
    """Crowd-sourced 0-30 cm samples of one round with planted defects (see module doc)."""
    spec = truth.spec
    rnd = next(r for r in spec.rounds if r.name == round_name)
    rng = spec.rng(f"crowd/{round_name}")
    state = truth.states[round_name]
    idx = truth.fields.field_index
    cand = np.flatnonzero(idx.ravel() > 0)
    picks = rng.choice(cand, size=spec.n_crowd, replace=False)
    r, c = np.divmod(picks, idx.shape[1])
    res = spec.resolution_m
    x = spec.origin_x + (c + rng.uniform(0.0, 1.0, spec.n_crowd)) * res
    y = spec.origin_y - (r + rng.uniform(0.0, 1.0, spec.n_crowd)) * res
    dist = rng.uniform(5.0, 30.0, spec.n_crowd)
    bearing = rng.uniform(0.0, 2 * np.pi, spec.n_crowd)
    x, y = x + dist * np.sin(bearing), y + dist * np.cos(bearing)
    lon, lat = Transformer.from_crs(spec.crs, "EPSG:4326", always_xy=True).transform(x, y)
    # Mass-weighted 0-30 cm SOC of a mixed core (equal thickness, same coarse fragments).
    m_top, m_sub = state.bd_top_g_cm3[r, c], state.bd_sub_g_cm3[r, c]
    soc_030 = (state.soc_top_g_kg[r, c] * m_top + state.soc_sub_g_kg[r, c] * m_sub) / (m_top + m_sub)
    soc_pct = soc_030 / 10.0 * np.exp(rng.normal(0.0, 0.2, spec.n_crowd))
    day0 = date.fromisoformat(rnd.sampling_date)
    rows: list[dict[str, object]] = []
    for k in range(spec.n_crowd):
        rows.append(
            {
                "sample_id": f"C{round_name}-{k + 1:04d}",
                "submitter": _SUBMITTERS[int(rng.integers(len(_SUBMITTERS)))],
                "lon": round(float(lon[k]), 6),
                "lat": round(float(lat[k]), 6),
                "sampling_date": (day0 + timedelta(days=int(rng.integers(-25, 26)))).isoformat(),
                "top_cm": 0,
                "bottom_cm": 30,
                "soc_percent": round(float(soc_pct[k]), 2),
                "method": _CROWD_METHODS[int(rng.integers(len(_CROWD_METHODS)))],
            }
        )
    chosen = [int(i) for i in rng.choice(spec.n_crowd, size=8, replace=False)]
    neg, high, inv = chosen[0], chosen[1], chosen[2]
    rows[neg]["soc_percent"] = -1.2
    rows[high]["soc_percent"] = 85.0
    rows[inv]["top_cm"], rows[inv]["bottom_cm"] = 30, 0
    dup_rows = [dict(rows[i]) for i in chosen[3:6]]
    near_rows = []
    for j, i in enumerate(chosen[6:8]):
        copy = dict(rows[i])
        copy["sample_id"] = f"C{round_name}-{9001 + j:04d}"
        near_rows.append(copy)
    all_rows = rows + dup_rows + near_rows
    order = rng.permutation(len(all_rows))
    df = pd.DataFrame([all_rows[int(i)] for i in order], columns=list(CROWD_COLUMNS))
    defects = CrowdDefects(
        negative_soc_id=str(rows[neg]["sample_id"]),
        too_high_soc_id=str(rows[high]["sample_id"]),
        inverted_depth_id=str(rows[inv]["sample_id"]),
        exact_duplicate_ids=tuple(str(d["sample_id"]) for d in dup_rows),
        near_duplicate_pairs=tuple(
            (str(rows[i]["sample_id"]), str(n["sample_id"])) for i, n in zip(chosen[6:8], near_rows, strict=True)
        ),
    )
    return df, defects


def to_csv_text(df: pd.DataFrame) -> str:
    """Render a table as CSV text (UTF-8, ``\\n`` line ends, minimal quoting)."""
    buf = io.StringIO()
    df.to_csv(buf, index=False, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    return buf.getvalue()


def write_csv(path: Path, df: pd.DataFrame) -> Path:
    """Write a table with :func:`to_csv_text`; creates parent directories."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_csv_text(df), encoding="utf-8")
    return path
