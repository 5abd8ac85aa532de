"""Soil organic carbon (SOC) stock arithmetic for fixed-depth layers.

Everything here is a pure function. Units are in the names: SOC concentration in g C per kg
of fine earth (``soc_g_kg``), fine-earth bulk density in g/cm3, layer thickness in cm, coarse
fragments as a volume fraction (0..1) or, in tables, a volume percentage, stocks in t C/ha and
fine-earth soil mass in Mg/ha.

Unit derivation used throughout (1 ha = 1e8 cm2, 1 Mg = 1e6 g)::

    fine-earth mass  [Mg/ha] = BD [g/cm3] * thickness [cm] * (1 - CF) * 1e8 / 1e6
                             = BD * thickness * (1 - CF) * 100
    SOC stock        [t C/ha] = mass [Mg/ha] * SOC [g/kg] / 1000
                             = SOC * BD * thickness * (1 - CF) / 10
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd

from mrv.errors import StockError

__all__ = [
    "DEPTH_TOLERANCE_CM",
    "VAN_BEMMELEN_FACTOR",
    "VAN_BEMMELEN_FACTOR_SD",
    "FloatArray",
    "bulk_density_ptf",
    "check_columns",
    "check_values",
    "find_layer_problems",
    "fixed_depth_stock",
    "format_layer_problems",
    "soc_stock_sd_t_ha",
    "soc_stock_t_ha",
    "som_to_soc",
]

FloatArray = npt.NDArray[np.float64]

#: Tolerance (cm) when checking that one layer's bottom equals the next layer's top.
DEPTH_TOLERANCE_CM = 1e-6

#: Conventional "van Bemmelen" carbon fraction of soil organic matter (58 % C).
VAN_BEMMELEN_FACTOR = 0.58

#: Standard deviation carried for the SOM -> SOC carbon fraction (see :func:`som_to_soc`).
VAN_BEMMELEN_FACTOR_SD = 0.08

#: Residual standard deviation carried for the bulk-density pedotransfer function, g/cm3
#: (see :func:`bulk_density_ptf` for where this number comes from).
BULK_DENSITY_PTF_SD_G_CM3 = 0.22

# Hollis, Hannam & Bellamy (2012), cultivated topsoils (OC in %, sand and clay in %).
_HOLLIS_A = 0.80806
_HOLLIS_B = 0.823844
_HOLLIS_K = 0.27993
_HOLLIS_SAND = 0.0014065
_HOLLIS_CLAY = 0.0010299
# Adams (1973) mixing model constants (g/cm3): organic matter and mineral bulk density.
_ADAMS_OM_BD = 0.244
_ADAMS_MINERAL_BD = 1.64
#: Project guard: above this SOC (g/kg) the PTF returns NaN (it is for mineral soils only).
BULK_DENSITY_PTF_MAX_SOC_G_KG = 120.0


# ---------------------------------------------------------------------------------------------
# input checking helpers
# ---------------------------------------------------------------------------------------------


def _as_float_array(name: str, value: npt.ArrayLike) -> FloatArray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise StockError(
            f"{name} must be numeric but could not be converted to numbers ({exc}); "
            "check the input for text or malformed values."
        ) from exc
    return arr


def _non_negative(name: str, value: npt.ArrayLike) -> FloatArray:
    arr = _as_float_array(name, value)
    if np.isnan(arr).any():
        raise StockError(
            f"{name} contains {int(np.isnan(arr).sum())} missing (NaN) value(s); "
            "fill them in (measured or estimated) or drop those layers before computing stocks."
        )
    if np.isinf(arr).any():
        raise StockError(f"{name} contains infinite values; fix the input data.")
    if (arr < 0).any():
        raise StockError(
            f"{name} contains negative value(s) (minimum {float(arr.min())!r}); "
            "it must be >= 0. Check units and sign of the input."
        )
    return arr


def _fraction(name: str, value: npt.ArrayLike) -> FloatArray:
    arr = _non_negative(name, value)
    if (arr >= 1).any():
        raise StockError(
            f"{name} must lie in [0, 1) (a volume fraction) but has maximum {float(arr.max())!r}; "
            "if you have a percentage, divide it by 100."
        )
    return arr


def _broadcast(*arrays: FloatArray) -> list[FloatArray]:
    try:
        return [np.asarray(a, dtype=np.float64) for a in np.broadcast_arrays(*arrays)]
    except ValueError as exc:
        raise StockError(
            "Inputs have incompatible shapes and cannot be combined element-wise "
            f"({exc}); pass scalars or arrays of the same length."
        ) from exc


# ---------------------------------------------------------------------------------------------
# layer stock and its uncertainty
# ---------------------------------------------------------------------------------------------


def soc_stock_t_ha(
    soc_g_kg: npt.ArrayLike,
    bulk_density_g_cm3: npt.ArrayLike,
    thickness_cm: npt.ArrayLike,
    coarse_fragments_vol_frac: npt.ArrayLike = 0.0,
) -> FloatArray:
    """SOC stock of soil layers (t C/ha), numpy-vectorised.

    ``stock = SOC * BD * thickness * (1 - CF) / 10``

    This is the layer form of the mineral-soil stock calculation in IPCC (2006) Guidelines for
    National Greenhouse Gas Inventories, Vol. 4 (AFOLU), Ch. 2, Sect. 2.3.3 (soil carbon):
    concentration x bulk density x depth x (1 - coarse fragments), here with SOC in g/kg,
    BD in g/cm3 and thickness in cm, which gives the factor 1/10 (see the module docstring).

    ``bulk_density_g_cm3`` must be the *fine-earth* bulk density, i.e. oven-dry mass of the
    < 2 mm fraction divided by the volume that fraction occupies (core volume minus the volume
    of coarse fragments). Poeplau, Vos & Don (2017, SOIL 3:61-66) show that multiplying a
    whole-soil BD, or a fine-earth mass per *total* volume, by ``(1 - CF)`` mis-states stocks;
    if your BD is already fine-earth mass per total core volume, pass ``CF = 0``.

    Args:
        soc_g_kg: SOC concentration of the fine earth, g C/kg.
        bulk_density_g_cm3: fine-earth bulk density, g/cm3.
        thickness_cm: layer thickness, cm.
        coarse_fragments_vol_frac: coarse fragment (> 2 mm) volume fraction in [0, 1).

    Returns:
        Stock in t C/ha, broadcast over the inputs (0-d array for scalar inputs).

    Raises:
        StockError: on NaN/negative inputs, CF outside [0, 1) or incompatible shapes.
    """
    soc = _non_negative("soc_g_kg", soc_g_kg)
    bd = _non_negative("bulk_density_g_cm3", bulk_density_g_cm3)
    thick = _non_negative("thickness_cm", thickness_cm)
    cf = _fraction("coarse_fragments_vol_frac", coarse_fragments_vol_frac)
    soc, bd, thick, cf = _broadcast(soc, bd, thick, cf)
    return np.asarray(soc * bd * thick * (1.0 - cf) / 10.0, dtype=np.float64)


def soc_stock_sd_t_ha(
    soc_g_kg: npt.ArrayLike,
    bulk_density_g_cm3: npt.ArrayLike,
    thickness_cm: npt.ArrayLike,
    coarse_fragments_vol_frac: npt.ArrayLike = 0.0,
    *,
    soc_sd_g_kg: npt.ArrayLike = 0.0,
    bulk_density_sd_g_cm3: npt.ArrayLike = 0.0,
    coarse_fragments_sd_vol_frac: npt.ArrayLike = 0.0,
) -> FloatArray:
    """Standard deviation of a layer SOC stock (t C/ha) by first-order (delta-method) propagation.

    With ``S = k * C * B * (1 - F)`` and ``k = thickness / 10`` (thickness treated as exact) and
    independent errors in C (SOC), B (BD) and F (CF), the law of propagation of uncertainty for
    uncorrelated inputs (JCGM 100:2008 "GUM", Eq. 10) gives::

        sd_S**2 = (k B (1-F) sd_C)**2 + (k C (1-F) sd_B)**2 + (k C B sd_F)**2

    This is a first-order (linear) approximation; it is accurate when the relative SDs are
    small (roughly < 20 %) and ignores any correlation between SOC and BD.

    Args:
        soc_g_kg, bulk_density_g_cm3, thickness_cm, coarse_fragments_vol_frac: as in
            :func:`soc_stock_t_ha`.
        soc_sd_g_kg: SD of the SOC concentration, g/kg.
        bulk_density_sd_g_cm3: SD of the fine-earth bulk density, g/cm3.
        coarse_fragments_sd_vol_frac: SD of the coarse-fragment volume fraction.

    Returns:
        Stock SD in t C/ha, broadcast over the inputs.
    """
    soc = _non_negative("soc_g_kg", soc_g_kg)
    bd = _non_negative("bulk_density_g_cm3", bulk_density_g_cm3)
    thick = _non_negative("thickness_cm", thickness_cm)
    cf = _fraction("coarse_fragments_vol_frac", coarse_fragments_vol_frac)
    sd_c = _non_negative("soc_sd_g_kg", soc_sd_g_kg)
    sd_b = _non_negative("bulk_density_sd_g_cm3", bulk_density_sd_g_cm3)
    sd_f = _non_negative("coarse_fragments_sd_vol_frac", coarse_fragments_sd_vol_frac)
    soc, bd, thick, cf, sd_c, sd_b, sd_f = _broadcast(soc, bd, thick, cf, sd_c, sd_b, sd_f)
    k = thick / 10.0
    var = (k * bd * (1.0 - cf) * sd_c) ** 2 + (k * soc * (1.0 - cf) * sd_b) ** 2 + (k * soc * bd * sd_f) ** 2
    return np.asarray(np.sqrt(var), dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# gap filling: bulk density and SOC from SOM
# ---------------------------------------------------------------------------------------------


def bulk_density_ptf(
    soc_g_kg: npt.ArrayLike,
    *,
    sand_pct: npt.ArrayLike | None = None,
    clay_pct: npt.ArrayLike | None = None,
    residual_sd_g_cm3: float = BULK_DENSITY_PTF_SD_G_CM3,
) -> tuple[FloatArray, FloatArray]:
    """Estimate the fine-earth bulk density of a mineral (arable) topsoil that was not measured.

    With texture (``sand_pct`` and ``clay_pct`` both given) the cultivated-topsoil equation of
    Hollis, J.M., Hannam, J. & Bellamy, P.H. (2012) "Empirically-derived pedotransfer
    functions for predicting bulk density in European soils", Eur. J. Soil Sci. 63:96-109,
    doi:10.1111/j.1365-2389.2011.01412.x, is used::

        BD [g/cm3] = 0.80806 + 0.823844 * exp(-0.27993 * OC) + 0.0014065 * sand - 0.0010299 * clay

    with OC the organic carbon content in % by mass (``OC = soc_g_kg / 10``) and sand and clay
    in % of the mineral fine earth. (The paper fits separate equations for non-cultivated
    topsoils, subsoils and organic horizons; only the cultivated-topsoil one is implemented.)

    Without texture, the organic/mineral mixing model of Adams, W.A. (1973) "The effect of
    organic matter on the bulk and true densities of some uncultivated podzolic soils",
    J. Soil Sci. 24:10-17, is used, with organic-matter bulk density 0.244 g/cm3 and mineral
    bulk density 1.64 g/cm3 (the constants used with it by Post & Kwon 2000, Glob. Change
    Biol. 6:317-327)::

        BD [g/cm3] = 100 / (OM / 0.244 + (100 - OM) / 1.64),   OM [%] = SOC [%] / 0.58

    (SOM from SOC with the van Bemmelen factor, see :func:`som_to_soc`).

    Uncertainty: the returned SD is ``residual_sd_g_cm3`` for every sample (homoscedastic).
    The default, 0.22 g/cm3, is the independent-validation RMSE of earlier published
    European PTFs against LUCAS 2018 topsoil (0-20 cm) bulk densities (Chen et al. 2024,
    Earth Syst. Sci. Data 16:2367-2383, abstract). The residual SDs of the original Hollis
    and Adams fits were not available when this was written; pass them via
    ``residual_sd_g_cm3`` if you have them.

    Domain: samples with SOC above 120 g/kg (a project guard: both equations are for mineral
    soils; Hollis et al. use a different equation for organic horizons) get ``NaN`` as the
    estimate, so they cannot silently enter a stock - measure their bulk density instead.

    Args:
        soc_g_kg: SOC concentration, g/kg.
        sand_pct: sand content, % (0..100); optional, together with ``clay_pct``.
        clay_pct: clay content, % (0..100); ``sand_pct + clay_pct`` must not exceed 100.
        residual_sd_g_cm3: SD carried as the prediction uncertainty, g/cm3.

    Returns:
        ``(bd_g_cm3, sd_g_cm3)`` arrays broadcast over the inputs.
    """
    soc = _non_negative("soc_g_kg", soc_g_kg)
    sd = float(_non_negative("residual_sd_g_cm3", residual_sd_g_cm3))
    if (sand_pct is None) != (clay_pct is None):
        raise StockError(
            "bulk_density_ptf needs both sand_pct and clay_pct (Hollis et al. 2012) or neither "
            "(Adams 1973, SOC only); pass the missing one."
        )
    oc_pct = soc / 10.0
    if sand_pct is not None and clay_pct is not None:
        sand = _non_negative("sand_pct", sand_pct)
        clay = _non_negative("clay_pct", clay_pct)
        oc_pct, sand, clay = _broadcast(oc_pct, sand, clay)
        if (sand + clay > 100.0 + 1e-9).any():
            raise StockError(
                "sand_pct + clay_pct exceeds 100 % for at least one sample; "
                "texture must be given as percentages of the mineral fine earth."
            )
        bd = _HOLLIS_A + _HOLLIS_B * np.exp(-_HOLLIS_K * oc_pct) + _HOLLIS_SAND * sand - _HOLLIS_CLAY * clay
    else:
        om_pct = oc_pct / VAN_BEMMELEN_FACTOR
        bd = 100.0 / (om_pct / _ADAMS_OM_BD + (100.0 - om_pct) / _ADAMS_MINERAL_BD)
    bd = np.where(oc_pct * 10.0 > BULK_DENSITY_PTF_MAX_SOC_G_KG, np.nan, bd)
    return np.asarray(bd, dtype=np.float64), np.full(np.shape(bd), sd, dtype=np.float64)


def som_to_soc(
    som_g_kg: npt.ArrayLike,
    *,
    factor: float = VAN_BEMMELEN_FACTOR,
    factor_sd: float = VAN_BEMMELEN_FACTOR_SD,
) -> tuple[FloatArray, FloatArray]:
    """Convert soil organic matter (e.g. loss on ignition) to SOC, with an uncertainty.

    ``SOC [g/kg] = factor * SOM [g/kg]`` with the conventional van Bemmelen factor 0.58
    (SOM assumed 58 % C, i.e. SOM = 1.724 * SOC).

    Uncertainty: Pribyl (2010, "A critical review of the conventional SOC to SOM conversion
    factor", Geoderma 156:75-83, abstract) found the 1.724 factor too low for most soils: the
    median SOM/SOC factor was 1.9 in empirical studies and 2.0 from theory (C fraction 0.53 and
    0.50), with a theoretical range of 1.4-2.5 (C fraction 0.40-0.71). We keep 0.58 as the
    central value (convention of most protocols) and carry ``factor_sd = 0.08`` so that
    Pribyl's recommended 0.50 lies one SD below it and his theoretical range is about
    +/- 2 SD. The SD returned is ``factor_sd * SOM``; it covers only the conversion, not the
    analytical error of the SOM/LOI measurement.

    Returns:
        ``(soc_g_kg, sd_g_kg)`` arrays.
    """
    som = _non_negative("som_g_kg", som_g_kg)
    f = float(_fraction("factor", factor))
    if f == 0.0:
        raise StockError("factor must be > 0 (a carbon fraction such as 0.58).")
    f_sd = float(_non_negative("factor_sd", factor_sd))
    return np.asarray(som * f, dtype=np.float64), np.asarray(som * f_sd, dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# profile tables
# ---------------------------------------------------------------------------------------------


def _format_depth(x: float) -> str:
    return f"{x:g}"


def find_layer_problems(
    layers: pd.DataFrame,
    *,
    group_cols: Sequence[str] = ("profile_id",),
    depth_cm: float | None = None,
) -> dict[str, list[str]]:
    """Check layer geometry per profile; return ``{profile label: [problem, ...]}`` (empty if OK).

    Layers of a profile (grouped by ``group_cols``) must start at 0 cm, have
    ``bottom_cm > top_cm`` and be contiguous (no gaps, no overlaps). With ``depth_cm`` given,
    only layers whose top lies above ``depth_cm`` are checked (sampling gaps deeper down do
    not matter) and the profile must reach ``depth_cm``; with ``None`` all layers are checked.
    """
    problems: dict[str, list[str]] = {}
    for key, grp in layers.groupby(list(group_cols), sort=False, dropna=False):
        key_t: tuple[Hashable, ...] = key if isinstance(key, tuple) else (key,)
        label = " / ".join(f"{c}={v}" for c, v in zip(group_cols, key_t, strict=True))
        if len(group_cols) == 1:
            label = str(key_t[0])
        issues: list[str] = []
        g = grp.sort_values(["top_cm", "bottom_cm"], kind="stable")
        tops = g["top_cm"].to_numpy(dtype=np.float64)
        bottoms = g["bottom_cm"].to_numpy(dtype=np.float64)
        if depth_cm is not None:
            keep = tops < depth_cm - DEPTH_TOLERANCE_CM
            if not keep.any():
                keep = np.zeros_like(tops, dtype=bool)
                keep[:1] = True
            tops, bottoms = tops[keep], bottoms[keep]
        for t, b in zip(tops, bottoms, strict=True):
            if not b > t:
                issues.append(f"layer {_format_depth(t)}-{_format_depth(b)} cm has bottom_cm <= top_cm")
        if tops[0] < -DEPTH_TOLERANCE_CM:
            issues.append(f"has a negative top depth ({_format_depth(tops[0])} cm)")
        elif tops[0] > DEPTH_TOLERANCE_CM:
            issues.append(f"starts at {_format_depth(tops[0])} cm instead of the surface (0 cm)")
        for i in range(1, len(tops)):
            prev_b, t = bottoms[i - 1], tops[i]
            if t > prev_b + DEPTH_TOLERANCE_CM:
                issues.append(f"gap between {_format_depth(prev_b)} and {_format_depth(t)} cm")
            elif t < prev_b - DEPTH_TOLERANCE_CM:
                issues.append(
                    f"layers {_format_depth(tops[i - 1])}-{_format_depth(prev_b)} and "
                    f"{_format_depth(t)}-{_format_depth(bottoms[i])} cm overlap"
                )
        if depth_cm is not None and bottoms.max() < depth_cm - DEPTH_TOLERANCE_CM:
            issues.append(
                f"reaches only {_format_depth(float(bottoms.max()))} cm but {_format_depth(depth_cm)} cm is required"
            )
        if issues:
            problems[label] = issues
    return problems


def format_layer_problems(problems: dict[str, list[str]], *, what: str) -> str:
    """One readable message listing every bad profile and what is wrong with it."""
    lines = [f"{len(problems)} profile(s) cannot be used for {what}:"]
    for label, issues in problems.items():
        lines.append(f"  - {label}: " + "; ".join(issues))
    lines.append(
        "Fix the layer depths (layers must be contiguous from 0 cm, without gaps or overlaps, "
        "and deep enough) or remove these profiles from the input."
    )
    return "\n".join(lines)


def check_columns(df: pd.DataFrame, required: Sequence[str], *, what: str) -> None:
    """Raise StockError listing every required column missing from ``df``."""
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise StockError(
            f"{what} is missing required column(s): {', '.join(missing)}. "
            f"Present columns: {', '.join(map(str, df.columns)) or '(none)'}. "
            "Add or rename the columns."
        )


def check_values(df: pd.DataFrame, columns: Sequence[str], *, what: str) -> None:
    """Raise StockError listing rows with missing, non-finite or negative values in ``columns``."""
    issues: list[str] = []
    for col in columns:
        values = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=np.float64)
        bad_nan = np.flatnonzero(~np.isfinite(values))
        bad_neg = np.flatnonzero(values < 0)
        for kind, idx in (("missing or non-numeric", bad_nan), ("negative", bad_neg)):
            if len(idx):
                rows = ", ".join(str(df.index[i]) for i in idx[:10])
                more = f" (+{len(idx) - 10} more)" if len(idx) > 10 else ""
                where = "file line(s)" if df.index.name == "line" else "row(s)"
                issues.append(f"{col}: {kind} in {where} {rows}{more}")
    if issues:
        raise StockError(
            f"{what} has invalid values:\n  - "
            + "\n  - ".join(issues)
            + "\nFill in or correct these cells (all must be finite numbers >= 0)."
        )


_FIXED_REQUIRED = (
    "profile_id",
    "top_cm",
    "bottom_cm",
    "soc_g_kg",
    "bulk_density_g_cm3",
)
_FIXED_OPTIONAL_DEFAULTS = {
    "coarse_fragments_vol_pct": 0.0,
    "soc_sd_g_kg": 0.0,
    "bulk_density_sd_g_cm3": 0.0,
    "coarse_fragments_sd_vol_pct": 0.0,
}


def fixed_depth_stock(layers: pd.DataFrame, *, depth_cm: float = 30.0) -> pd.DataFrame:
    """SOC stock from 0 to ``depth_cm`` per profile (fixed-depth method).

    Input: one row per layer with ``profile_id, top_cm, bottom_cm, soc_g_kg,
    bulk_density_g_cm3`` and optionally ``coarse_fragments_vol_pct`` (0-100),
    ``soc_sd_g_kg``, ``bulk_density_sd_g_cm3`` and ``coarse_fragments_sd_vol_pct`` (missing optional
    cells count as 0; :func:`mrv.samples.sites.site_stocks` fills missing coarse fragments with a
    stated default and its SD before calling this).

    Each layer contributes the fraction of its thickness lying above ``depth_cm``
    (a layer 20-40 cm contributes half its stock to a 0-30 cm stock); this assumes SOC and BD
    are uniform within a layer. Layer stocks and SDs are from :func:`soc_stock_t_ha` and
    :func:`soc_stock_sd_t_ha`; the profile SD combines layer SDs assuming independent errors
    between layers (``sqrt(sum((f_i sd_i)**2))``), which understates the SD if errors are
    shared across layers (e.g. a lab calibration bias).

    Output: one row per profile (input order) with ``profile_id, soc_stock_t_ha,
    soc_stock_sd_t_ha, soil_mass_mg_ha`` (fine-earth mass of 0..depth_cm) and ``covered_cm``
    (thickness of 0..depth_cm covered by layers).

    Raises:
        StockError: for missing columns or values, and one error listing every profile that
            does not start at 0 cm, has gaps or overlaps above ``depth_cm``, or does not reach it.
    """
    if not depth_cm > 0:
        raise StockError(f"depth_cm must be > 0, got {depth_cm!r}; pass e.g. depth_cm=30.")
    check_columns(layers, _FIXED_REQUIRED, what="The layer table")
    df = layers.copy()
    for col, default in _FIXED_OPTIONAL_DEFAULTS.items():
        if col not in df.columns:
            df[col] = default
        else:
            df[col] = pd.to_numeric(df[col], errors="coerce").fillna(default)
    if df.empty:
        raise StockError("The layer table has no rows; provide at least one layer per profile.")
    check_values(
        df,
        [
            "top_cm",
            "bottom_cm",
            "soc_g_kg",
            "bulk_density_g_cm3",
            *_FIXED_OPTIONAL_DEFAULTS,
        ],
        what="The layer table",
    )
    if df["profile_id"].isna().any():
        raise StockError("profile_id is empty in some rows; give every layer a profile_id.")
    problems = find_layer_problems(df, depth_cm=depth_cm)
    if problems:
        raise StockError(format_layer_problems(problems, what=f"a 0-{depth_cm:g} cm stock"))

    top = df["top_cm"].to_numpy(dtype=np.float64)
    bottom = df["bottom_cm"].to_numpy(dtype=np.float64)
    thickness = bottom - top
    inside = np.clip(np.minimum(bottom, depth_cm) - top, 0.0, None)
    frac = inside / thickness
    cf = df["coarse_fragments_vol_pct"].to_numpy(dtype=np.float64) / 100.0
    soc = df["soc_g_kg"].to_numpy(dtype=np.float64)
    bd = df["bulk_density_g_cm3"].to_numpy(dtype=np.float64)
    stock = soc_stock_t_ha(soc, bd, thickness, cf)
    sd = soc_stock_sd_t_ha(
        soc,
        bd,
        thickness,
        cf,
        soc_sd_g_kg=df["soc_sd_g_kg"].to_numpy(dtype=np.float64),
        bulk_density_sd_g_cm3=df["bulk_density_sd_g_cm3"].to_numpy(dtype=np.float64),
        coarse_fragments_sd_vol_frac=df["coarse_fragments_sd_vol_pct"].to_numpy(dtype=np.float64) / 100.0,
    )
    mass = bd * thickness * (1.0 - cf) * 100.0

    work = pd.DataFrame(
        {
            "profile_id": df["profile_id"].to_numpy(),
            "soc_stock_t_ha": frac * stock,
            "var": (frac * sd) ** 2,
            "soil_mass_mg_ha": frac * mass,
            "covered_cm": inside,
        }
    )
    out = work.groupby("profile_id", sort=False).sum()
    out["soc_stock_sd_t_ha"] = np.sqrt(out["var"])
    out = out.reset_index()
    return out[
        [
            "profile_id",
            "soc_stock_t_ha",
            "soc_stock_sd_t_ha",
            "soil_mass_mg_ha",
            "covered_cm",
        ]
    ]
