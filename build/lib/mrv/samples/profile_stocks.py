"""Table-level SOC stock computation behind ``mrv samples stocks`` (no argparse here).

Input table: one row per layer with ``profile_id, round, top_cm, bottom_cm, soc_g_kg`` and
either ``bulk_density_g_cm3`` (optionally ``coarse_fragments_vol_pct``) or ``soil_mass_g`` +
``core_area_cm2`` (oven-dry fine-earth core mass and total cored area). A profile is one
``(profile_id, round)`` pair: the same sampling point re-sampled in another round is a
different profile.

Output: one row per profile with exactly ``profile_id, round, soc_stock_t_ha,
soil_mass_mg_ha, equivalent_depth_cm``:

* ``method="fixed"``: stock and fine-earth mass of 0..``depth_cm``;
  ``equivalent_depth_cm == depth_cm``.
* ``method="esm"``: stock in the reference soil mass (:mod:`mrv.samples.esm`);
  ``soil_mass_mg_ha`` is the reference mass and ``equivalent_depth_cm`` the depth at which
  this profile reaches it.
"""

from __future__ import annotations

import csv
from os import PathLike
from typing import Literal

import numpy as np
import pandas as pd

from mrv.errors import StockError
from mrv.samples.esm import (
    CumulativeProfile,
    Interpolation,
    cumulative_profile,
    esm_stock,
    mass_at_depth_mg_ha,
    reference_mass_mg_ha,
    soc_at_depth_t_ha,
    soil_mass_from_bulk_density_mg_ha,
    soil_mass_from_core_mg_ha,
)
from mrv.samples.stocks import (
    check_columns,
    check_values,
    find_layer_problems,
    format_layer_problems,
)

OUTPUT_COLUMNS = (
    "profile_id",
    "round",
    "soc_stock_t_ha",
    "soil_mass_mg_ha",
    "equivalent_depth_cm",
)
BASE_COLUMNS = ("profile_id", "round", "top_cm", "bottom_cm", "soc_g_kg")
NUMERIC_COLUMNS = (
    "top_cm",
    "bottom_cm",
    "soc_g_kg",
    "bulk_density_g_cm3",
    "soil_mass_g",
    "core_area_cm2",
    "coarse_fragments_vol_pct",
    "soc_sd_g_kg",
    "bulk_density_sd_g_cm3",
)
_MISSING_TOKENS = frozenset({"", "na", "nan", "n/a", "null", "none"})


def read_profile_csv(path: str | PathLike[str]) -> pd.DataFrame:
    """Read a layer CSV; ``profile_id`` and ``round`` stay text, known numeric columns become float.

    Empty cells (and NA/NaN/null) become NaN. Any other cell in a numeric column that is not a
    number raises one :class:`StockError` listing each bad cell by file line number (the header
    is line 1), data row number and column.
    """
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except FileNotFoundError as exc:
        raise StockError(f"Profile file {path} does not exist; check the path.") from exc
    except (
        pd.errors.ParserError,
        pd.errors.EmptyDataError,
        UnicodeDecodeError,
        csv.Error,
    ) as exc:
        raise StockError(
            f"Profile file {path} is not a readable CSV ({exc}); save it as comma-separated "
            "UTF-8 text with one header row."
        ) from exc
    raw.columns = [str(c).strip() for c in raw.columns]
    out = pd.DataFrame(index=raw.index)
    bad: list[str] = []
    for col in raw.columns:
        text = raw[col].astype(str).str.strip()
        if col not in NUMERIC_COLUMNS:
            out[col] = text
            continue
        missing = text.str.lower().isin(_MISSING_TOKENS)
        values = pd.to_numeric(text.where(~missing), errors="coerce")
        for i in np.flatnonzero((values.isna() & ~missing).to_numpy()):
            bad.append(f"line {i + 2} (data row {i + 1}), column {col}: {text.iloc[i]!r}")
        out[col] = values.astype(np.float64)
    if bad:
        shown = "\n  - ".join(bad[:20])
        more = f"\n  (+{len(bad) - 20} more)" if len(bad) > 20 else ""
        raise StockError(
            f"Profile file {path} has non-numeric value(s) in numeric columns:\n  - {shown}{more}\n"
            "Use plain numbers with a dot as decimal separator, or leave the cell empty if "
            "the value is missing."
        )
    return out


def _layer_masses(df: pd.DataFrame) -> np.ndarray:
    """Per-row fine-earth mass (Mg/ha): from the core mass when present, else from BD."""
    n = len(df)
    mass = np.full(n, np.nan)
    has_core_cols = "soil_mass_g" in df.columns and "core_area_cm2" in df.columns
    if has_core_cols:
        core_ok = (df["soil_mass_g"].notna() & df["core_area_cm2"].notna()).to_numpy()
        if core_ok.any():
            mass[core_ok] = soil_mass_from_core_mg_ha(
                df.loc[core_ok, "soil_mass_g"].to_numpy(dtype=np.float64),
                df.loc[core_ok, "core_area_cm2"].to_numpy(dtype=np.float64),
            )
    if "bulk_density_g_cm3" in df.columns:
        use_bd = np.isnan(mass) & df["bulk_density_g_cm3"].notna().to_numpy()
        if use_bd.any():
            sub = df.loc[use_bd]
            cf = (
                sub["coarse_fragments_vol_pct"].fillna(0.0).to_numpy(dtype=np.float64) / 100.0
                if "coarse_fragments_vol_pct" in df.columns
                else 0.0
            )
            mass[use_bd] = soil_mass_from_bulk_density_mg_ha(
                sub["bulk_density_g_cm3"].to_numpy(dtype=np.float64),
                (sub["bottom_cm"] - sub["top_cm"]).to_numpy(dtype=np.float64),
                cf,
            )
    missing = np.flatnonzero(np.isnan(mass))
    if len(missing):
        rows = ", ".join(str(df.index[i]) for i in missing[:10])
        raise StockError(
            f"{len(missing)} layer(s) have neither bulk_density_g_cm3 nor soil_mass_g + "
            f"core_area_cm2 (rows {rows}); fill in one of them for every layer."
        )
    return mass


def compute_profile_stocks(
    df: pd.DataFrame,
    *,
    method: Literal["fixed", "esm"],
    depth_cm: float = 30.0,
    reference_mass_mg_ha: float | Literal["lightest", "baseline_mean"] | None = None,
    baseline_round: str | None = None,
    interpolation: Interpolation = "natural_cubic",
) -> pd.DataFrame:
    """SOC stock per profile (``profile_id`` x ``round``) by fixed depth or equivalent soil mass.

    Args:
        df: layer table (see module docstring).
        method: ``"fixed"`` (0..depth_cm) or ``"esm"`` (equivalent soil mass).
        depth_cm: fixed depth; for ESM the nominal depth used by the reference-mass rules.
        reference_mass_mg_ha: ESM only. A number (Mg/ha); ``"lightest"`` (smallest 0..depth_cm
            mass over all profiles of all rounds); ``"baseline_mean"`` (mean 0..depth_cm mass
            of the ``baseline_round`` profiles); ``None`` means ``"lightest"``.
        baseline_round: round name used by ``"baseline_mean"``.
        interpolation: ESM spline, see :func:`mrv.samples.esm.esm_stock`.

    Raises:
        StockError: missing columns (all listed), invalid values, bad layer geometry (all bad
            profiles listed), or ESM problems (reference mass beyond a profile, ...).
    """
    if method not in ("fixed", "esm"):
        raise StockError(f"Unknown method {method!r}; use 'fixed' or 'esm'.")
    if not depth_cm > 0:
        raise StockError(f"depth_cm must be > 0, got {depth_cm!r}.")
    has_bd = "bulk_density_g_cm3" in df.columns
    has_core = "soil_mass_g" in df.columns and "core_area_cm2" in df.columns
    required = list(BASE_COLUMNS)
    if not has_bd and not has_core:
        missing_alt = [c for c in ("soil_mass_g", "core_area_cm2") if c not in df.columns]
        raise StockError(
            "The profile table needs either bulk_density_g_cm3 or soil_mass_g + core_area_cm2; "
            f"missing: bulk_density_g_cm3 (or {', '.join(missing_alt)})"
            + (
                f"; also missing: {', '.join(c for c in required if c not in df.columns)}"
                if any(c not in df.columns for c in required)
                else ""
            )
            + ". Add the columns."
        )
    check_columns(df, required, what="The profile table")
    if df.empty:
        raise StockError("The profile table has no rows; provide at least one layer.")
    if df["profile_id"].isna().any() or df["round"].isna().any():
        raise StockError("profile_id or round is empty in some rows; fill them in.")
    check_values(df, ["top_cm", "bottom_cm", "soc_g_kg"], what="The profile table")

    geometry_depth = depth_cm if method == "fixed" else None
    problems = find_layer_problems(df, group_cols=("profile_id", "round"), depth_cm=geometry_depth)
    if problems:
        what = f"a 0-{depth_cm:g} cm stock" if method == "fixed" else "an ESM stock"
        raise StockError(format_layer_problems(problems, what=what))

    work = df.copy()
    work["_mass_mg_ha"] = _layer_masses(work)
    if method == "fixed":
        work = work[work["top_cm"] < depth_cm]

    keys: list[tuple[object, object]] = []
    profiles: list[CumulativeProfile] = []
    for (pid, rnd), grp in work.groupby(["profile_id", "round"], sort=False):
        keys.append((pid, rnd))
        profiles.append(
            cumulative_profile(
                grp["top_cm"].to_numpy(),
                grp["bottom_cm"].to_numpy(),
                grp["_mass_mg_ha"].to_numpy(),
                grp["soc_g_kg"].to_numpy(),
                profile_id=f"{pid} (round {rnd})",
            )
        )

    rows: list[dict[str, object]] = []
    if method == "fixed":
        for (pid, rnd), prof in zip(keys, profiles, strict=True):
            rows.append(
                {
                    "profile_id": pid,
                    "round": rnd,
                    "soc_stock_t_ha": soc_at_depth_t_ha(prof, depth_cm),
                    "soil_mass_mg_ha": mass_at_depth_mg_ha(prof, depth_cm),
                    "equivalent_depth_cm": float(depth_cm),
                }
            )
        return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))

    ref = _resolve_reference(keys, profiles, reference_mass_mg_ha, baseline_round, depth_cm)
    errors: list[str] = []
    for (pid, rnd), prof in zip(keys, profiles, strict=True):
        try:
            res = esm_stock(prof, ref, interpolation=interpolation)
        except StockError as exc:
            errors.append(str(exc))
            continue
        rows.append(
            {
                "profile_id": pid,
                "round": rnd,
                "soc_stock_t_ha": res.soc_stock_t_ha,
                "soil_mass_mg_ha": res.reference_mass_mg_ha,
                "equivalent_depth_cm": res.equivalent_depth_cm,
            }
        )
    if errors:
        raise StockError(f"ESM stocks failed for {len(errors)} profile(s):\n  - " + "\n  - ".join(errors))
    return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))


def _resolve_reference(
    keys: list[tuple[object, object]],
    profiles: list[CumulativeProfile],
    reference: float | str | None,
    baseline_round: str | None,
    depth_cm: float,
) -> float:
    if reference is None:
        reference = "lightest"
    if isinstance(reference, str):
        if reference == "lightest":
            return reference_mass_mg_ha(profiles, rule="lightest", depth_cm=depth_cm)
        if reference == "baseline_mean":
            if baseline_round is None:
                raise StockError(
                    "reference mass 'baseline_mean' needs baseline_round (the name of the "
                    "baseline sampling round in the 'round' column)."
                )
            base = [p for (_, rnd), p in zip(keys, profiles, strict=True) if str(rnd) == str(baseline_round)]
            if not base:
                rounds = sorted({str(r) for _, r in keys})
                raise StockError(
                    f"baseline_round {baseline_round!r} has no profiles; rounds present: {', '.join(rounds)}."
                )
            return reference_mass_mg_ha(base, rule="baseline_mean", depth_cm=depth_cm)
        raise StockError(
            f"Unknown reference mass {reference!r}; give a number of Mg/ha, 'lightest' or 'baseline_mean'."
        )
    value = float(reference)
    if not (np.isfinite(value) and value > 0):
        raise StockError(f"reference mass must be a positive number of Mg/ha, got {reference!r}.")
    return value
