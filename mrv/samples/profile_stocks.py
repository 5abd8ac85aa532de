"""Table-level SOC stock computation behind ``mrv samples stocks`` (no argparse here).

Input table: one row per layer with ``profile_id, round, top_cm, bottom_cm, soc_g_kg`` and
either ``bulk_density_g_cm3`` (optionally ``coarse_fragments_vol_pct``) or ``soil_mass_g`` +
``core_area_cm2`` (oven-dry fine-earth core mass and total cored area). A (soil) profile is one
``(profile_id, round)`` pair: the same sampling point re-sampled in another round is a
different profile.

Rows read by :func:`read_profile_csv` are indexed by their file line (the header is line 1), so
every message names file lines. :func:`profile_stocks_report` computes the usable profiles and
reports each bad one with its reason (``mrv samples stocks``: one bad profile does not stop the
others); :func:`compute_profile_stocks` raises on the first problem instead.
:func:`stocks_input_from_records` maps stored sample records to this input table
(``mrv samples export``).

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
    CumulativeMassCurve,
    Interpolation,
    cumulative_mass_curve,
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

__all__ = [
    "compute_profile_stocks",
    "format_profile_problems",
    "profile_stocks_report",
    "read_profile_csv",
    "stocks_command",
    "stocks_input_from_records",
    "stored_to_stocks_input",
]

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
    out.index = pd.RangeIndex(2, len(out) + 2, name="line")
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
        where = "file lines" if df.index.name == "line" else "rows"
        raise StockError(
            f"{len(missing)} layer(s) have neither bulk_density_g_cm3 nor soil_mass_g + "
            f"core_area_cm2 ({where} {rows}); fill in one of them for every layer."
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
    profiles: list[CumulativeMassCurve] = []
    for (pid, rnd), grp in work.groupby(["profile_id", "round"], sort=False):
        keys.append((pid, rnd))
        profiles.append(
            cumulative_mass_curve(
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
    profiles: list[CumulativeMassCurve],
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


def profile_stocks_report(
    df: pd.DataFrame,
    *,
    method: Literal["fixed", "esm"],
    depth_cm: float = 30.0,
    reference_mass_mg_ha: float | Literal["lightest", "baseline_mean"] | None = None,
    baseline_round: str | None = None,
    interpolation: Interpolation = "natural_cubic",
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Stocks of every usable profile and ``{"profile_id (round r)": reason}`` for the others.

    A profile is left out, with its reason, when a layer has a missing or negative value (its file
    lines named), its layers are not contiguous from 0 cm (or too shallow for a fixed depth), a
    layer has no mass, or its ESM stock fails. Problems of the whole table (missing columns, no
    rows, an unknown method) still raise :class:`StockError`.
    """
    if method not in ("fixed", "esm"):
        raise StockError(f"Unknown method {method!r}; use 'fixed' or 'esm'.")
    check_columns(df, list(BASE_COLUMNS), what="The profile table")
    if df.empty:
        raise StockError("The profile table has no rows; provide at least one layer.")
    has_bd = "bulk_density_g_cm3" in df.columns
    has_core = "soil_mass_g" in df.columns and "core_area_cm2" in df.columns
    if not has_bd and not has_core:
        compute_profile_stocks(df, method=method, depth_cm=depth_cm)  # raises the column message
    where = "file line" if df.index.name == "line" else "row"
    problems: dict[str, str] = {}
    keys = df["profile_id"].astype(str) + " (round " + df["round"].astype(str) + ")"
    for label, grp in df.groupby(keys, sort=False):
        reason = _profile_problem(grp, where, method, depth_cm)
        if reason:
            problems[str(label)] = reason
    good = df[~keys.isin(list(problems))]
    if good.empty:
        return pd.DataFrame(columns=list(OUTPUT_COLUMNS)), problems
    if method == "fixed":
        return compute_profile_stocks(good, method="fixed", depth_cm=depth_cm), problems
    # ESM: one profile at a time against the reference mass of all usable profiles.
    work = good.copy()
    work["_mass_mg_ha"] = _layer_masses(work)
    gkeys: list[tuple[object, object]] = []
    profiles: list[CumulativeMassCurve] = []
    for (pid, rnd), grp in work.groupby(["profile_id", "round"], sort=False):
        gkeys.append((pid, rnd))
        profiles.append(cumulative_mass_curve(grp["top_cm"].to_numpy(), grp["bottom_cm"].to_numpy(),
                                           grp["_mass_mg_ha"].to_numpy(), grp["soc_g_kg"].to_numpy(),
                                           profile_id=f"{pid} (round {rnd})"))  # fmt: skip
    ref = _resolve_reference(gkeys, profiles, reference_mass_mg_ha, baseline_round, depth_cm)
    rows: list[dict[str, object]] = []
    for (pid, rnd), prof in zip(gkeys, profiles, strict=True):
        try:
            res = esm_stock(prof, ref, interpolation=interpolation)
        except StockError as exc:
            problems[f"{pid} (round {rnd})"] = str(exc)
            continue
        rows.append({"profile_id": pid, "round": rnd, "soc_stock_t_ha": res.soc_stock_t_ha,
                     "soil_mass_mg_ha": res.reference_mass_mg_ha, "equivalent_depth_cm": res.equivalent_depth_cm})  # fmt: skip
    return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS)), problems


def _profile_problem(grp: pd.DataFrame, where: str, method: str, depth_cm: float) -> str:
    if grp["profile_id"].isna().any() or grp["round"].isna().any():
        return "profile_id or round is empty"
    for col in ("top_cm", "bottom_cm", "soc_g_kg"):
        values = pd.to_numeric(grp[col], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values) | (values < 0)
        if bad.any():
            lines = ", ".join(str(grp.index[i]) for i in np.flatnonzero(bad)[:10])
            return f"{col} is missing, non-numeric or negative on {where}(s) {lines}"
    problems = find_layer_problems(grp, group_cols=("profile_id", "round"), depth_cm=depth_cm if method == "fixed" else None)
    if problems:
        return "; ".join(next(iter(problems.values())))
    try:
        _layer_masses(grp)
    except StockError as exc:
        return str(exc)
    return ""


def format_profile_problems(problems: dict[str, str]) -> str:
    """One line per left-out profile (user text escaped for terminals)."""
    from mrv.textsafe import for_terminal

    return "".join(f"  - {for_terminal(label)}: {for_terminal(reason)}\n" for label, reason in problems.items())


#: Columns :func:`stocks_input_from_records` writes, in order (the input format of ``mrv samples stocks``).
EXPORT_COLUMNS = (
    "profile_id", "round", "top_cm", "bottom_cm", "soc_g_kg", "bulk_density_g_cm3", "coarse_fragments_vol_pct",
    "soc_sd_g_kg", "sample_id", "source", "sampling_date", "x", "y", "crs",
)  # fmt: skip


def stocks_input_from_records(records: pd.DataFrame, *, round_of: str = "year") -> pd.DataFrame:
    """Stored sample records (canonical columns of :mod:`mrv.samples.ingest`) -> the stocks input table.

    ``profile_id`` is the site id, ``round`` the sampling year (``round_of="year"``) or the sampling
    date (``"date"``), so one site re-sampled later is a second profile. Layers are sorted by depth;
    missing bulk density or coarse fragments stay empty (``mrv samples stocks`` then reports those
    profiles instead of inventing values). Pure: no I/O; write the result with
    :func:`mrv.textsafe.write_csv`.
    """
    if round_of not in ("year", "date"):
        raise StockError(f"round_of must be 'year' or 'date', got {round_of!r}.")
    missing = [c for c in ("site_id", "sampling_date", "top_cm", "bottom_cm", "soc_g_kg") if c not in records.columns]
    if missing:
        raise StockError(f"The stored records lack column(s) {missing}; export them from the sample store.")
    rec = records.copy()
    date = rec["sampling_date"].astype(str)
    out = pd.DataFrame(
        {
            "profile_id": rec["site_id"].astype(str),
            "round": date.str[:4] if round_of == "year" else date,
            **{c: pd.to_numeric(rec[c], errors="coerce") if c in rec.columns else np.nan
               for c in ("top_cm", "bottom_cm", "soc_g_kg", "bulk_density_g_cm3", "coarse_fragments_vol_pct", "soc_sd_g_kg")},
            **{c: rec[c] if c in rec.columns else "" for c in ("sample_id", "source", "x", "y", "crs")},
            "sampling_date": date,
        }
    )
    if "agency" in rec.columns:  # site ids are an agency's own: keep two agencies' "P1" apart
        out["profile_id"] = rec["agency"].astype(str).to_numpy() + "/" + out["profile_id"]
    extra = [c for c in ("agency", "submission_id", "qa_flag", "ingest_flag") if c in rec.columns]
    for c in extra:
        out[c] = rec[c].to_numpy()
    out = out.sort_values(["profile_id", "round", "top_cm", "bottom_cm"], kind="stable").reset_index(drop=True)
    return out[[*EXPORT_COLUMNS, *extra]]


def stored_to_stocks_input(stored: pd.DataFrame, *, round_by: str = "year") -> pd.DataFrame:
    """:func:`stocks_input_from_records` under the name ``mrv samples export`` looks up."""
    if stored.empty:
        return pd.DataFrame(columns=list(EXPORT_COLUMNS))
    return stocks_input_from_records(stored, round_of=round_by)


def stocks_command(
    path: str | PathLike[str],
    output: str | PathLike[str],
    *,
    method: Literal["fixed", "esm"],
    depth_cm: float = 30.0,
    reference_mass_mg_ha: float | Literal["lightest", "baseline_mean"] | None = None,
) -> tuple[int, str]:
    """``mrv samples stocks``: read, compute the usable profiles, write them; (count, text for the terminal).

    Bad profiles are listed in the text (and left out of the output), the others are computed.
    """
    from mrv.textsafe import for_terminal, write_csv

    table = read_profile_csv(path)
    stocks, problems = profile_stocks_report(table, method=method, depth_cm=depth_cm,
                                             reference_mass_mg_ha=reference_mass_mg_ha)  # fmt: skip
    write_csv(stocks, output)
    text = f"{len(stocks)} profile stocks written to {for_terminal(output)}\n"
    if problems:
        text += f"{len(problems)} profile(s) left out:\n" + format_profile_problems(problems)
    return len(stocks), text
