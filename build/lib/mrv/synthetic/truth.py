"""Hidden truth of a synthetic region: latent soil fields, field polygons and true SOC stocks.

Everything here is pure and in memory. :func:`make_truth` is the entry point; it returns a
:class:`RegionTruth` holding the field layout and, for every monitoring round, the two-layer
soil profile (0-15 and 15-30 cm) and the true 0-30 cm SOC stock (t C/ha) on the 10 m grid.

Model summary (all seeded, see :class:`~mrv.synthetic.spec.SceneSpec`):

* latent Gaussian random fields (FFT-filtered white noise, Gaussian covariance) with a broad
  (``soc_range_m``) and a detailed (``detail_range_m``) component;
* clay content (%) that is positively correlated with SOC and also darkens reflectance
  (soil moisture), a partial confounder for remote-sensing models;
* topsoil SOC (g/kg), log-normal, mean ~18 g/kg, plus a per-field management legacy;
* bulk density (g/cm3) decreasing with log SOC; coarse fragments (vol %) 0-15;
* subsoil (15-30 cm) SOC = 0.6-0.85 x topsoil, bulk density slightly higher;
* a 30-50 cm layer below (SOC 0.4-0.7 x subsoil, bulk density a little higher), round-invariant;
* later rounds: the stock changes by the field's practice-specific rate (t C/ha/yr) times the
  elapsed years (times ``spec.change_scale``), plus small-scale spatial noise (sd 0.3 t C/ha, ~60 m
  range), applied by scaling SOC in both 0-30 cm layers of the same soil material;
* with ``spec.bd_change_sd_g_cm3 > 0`` each field's 0-30 cm material is compacted (or loosened)
  between rounds: its bulk density is multiplied by ``k = 1 + dBD / 1.36`` (dBD ~ N(0, sd) per field,
  reached linearly over the monitoring period) and its thickness divided by ``k`` (mass conserved),
  so a fixed 0-30 cm depth takes in (or loses) 30-50 cm material. The carbon of the baseline soil
  mass then changes only by the designed rate, which equivalent soil mass recovers and a fixed depth
  does not (Wendt & Hauser 2013, Eur. J. Soil Sci. 64:58-65; von Haden et al. 2020, Glob. Change
  Biol. 26:3759-3770).

Depth coordinates of a round: :meth:`SoilState.layer` integrates the round's material profile
(0-30 cm material shrunk or stretched by ``k``, then the 30-50 cm material, extended downwards)
over any depth increment, which is what a lab measures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import rasterio.features
from numpy.typing import NDArray
from shapely.geometry import Polygon

from mrv.synthetic.spec import SceneSpec, years_between

FloatArray = NDArray[np.float64]

PRACTICES: tuple[str, ...] = ("cover_crops", "reduced_tillage", "conventional")
TOP_CM: tuple[float, float] = (0.0, 15.0)
SUB_CM: tuple[float, float] = (15.0, 30.0)

#: Practice-specific 0-30 cm stock change rates (t C/ha/yr): (low, high) of a uniform draw.
CHANGE_RATES_T_HA_YR: dict[str, tuple[float, float]] = {
    "cover_crops": (0.4, 0.8),
    "reduced_tillage": (0.1, 0.4),
    "conventional": (-0.2, 0.2),
}

_NAME_POOL: tuple[str, ...] = (
    "Lange Breite",
    "Kirchenacker",
    "Mühlfeld",
    "Hintaus",
    "Weingartl",
    "Haidäcker",
    "Obere Point",
    "Sandgrube",
    "Kreuzfeld",
    "Bründlacker",
    "Hohe Wand",
    "Teichwiese",
    "Lehmgrube",
    "Am Kogel",
    "Steinriegel",
    "Neurisse",
)


def soc_stock_t_ha(
    soc_g_kg: FloatArray | float,
    bulk_density_g_cm3: FloatArray | float,
    thickness_cm: float,
    coarse_fragments_vol_pct: FloatArray | float,
) -> FloatArray | float:
    """SOC stock of one soil layer in t C/ha.

    ``stock = SOC (g/kg) x BD (g/cm3) x thickness (cm) x (1 - CF vol %/100) / 10``

    Layer form of the SOC stock equation, IPCC (2006) Guidelines for National Greenhouse Gas
    Inventories, Vol. 4 (AFOLU), Ch. 2, and Poeplau et al. (2017) SOIL 3:61-66 for the
    coarse-fragment correction. The factor 1/10 converts g C per kg soil x g/cm3 x cm into
    t C/ha (1 g/kg x 1 g/cm3 x 1 cm = 1e-3 g C/cm2 = 0.1 t C/ha).
    """
    return (
        np.asarray(soc_g_kg)
        * np.asarray(bulk_density_g_cm3)
        * thickness_cm
        * (1.0 - np.asarray(coarse_fragments_vol_pct) / 100.0)
        / 10.0
    )


def gaussian_random_field(shape: tuple[int, int], range_px: float, rng: np.random.Generator) -> FloatArray:
    """Stationary Gaussian random field with zero mean and unit variance.

    White noise is convolved (via FFT, on a grid padded by 2x the range to suppress the
    periodic wrap) with a Gaussian kernel of standard deviation ``range_px / 2``, which gives a
    Gaussian covariance whose practical range is about ``range_px`` pixels (Lantuéjoul 2002,
    *Geostatistical Simulation*, ch. 7: simulation by convolution of white noise). The kernel
    is normalised to unit energy so the field's theoretical variance is exactly 1, i.e. a scene
    much smaller than the range is (correctly) nearly uniform rather than rescaled.
    """
    rows, cols = shape
    sigma = max(range_px / 2.0, 0.5)
    pad = int(math.ceil(2.0 * range_px)) + 1
    pr, pc = rows + 2 * pad, cols + 2 * pad
    noise = rng.standard_normal((pr, pc))
    fy = np.fft.fftfreq(pr)[:, None]
    fx = np.fft.rfftfreq(pc)[None, :]
    # Fourier transform of a unit-energy Gaussian kernel with std sigma (pixels).
    gain = np.exp(-2.0 * (math.pi * sigma) ** 2 * (fx**2 + fy**2))
    kernel_energy = float(np.sqrt(np.sum(np.fft.irfft2(gain, s=(pr, pc)) ** 2)))
    field = np.fft.irfft2(np.fft.rfft2(noise) * gain, s=(pr, pc)) / max(kernel_energy, 1e-12)
    out: FloatArray = field[pad : pad + rows, pad : pad + cols]
    return out


@dataclass(frozen=True, eq=False)
class FieldLayout:
    """Cropped fields of the region (projected CRS of the spec) and their raster mask.

    ``field_index`` is an int32 raster on the 10 m grid: 0 outside fields (roads, hedges,
    grassland, woodland), ``i + 1`` inside field ``i``. The per-field tuples share one order.
    """

    polygons: tuple[Polygon, ...]
    field_ids: tuple[str, ...]
    farm_ids: tuple[str, ...]
    names: tuple[str, ...]
    practices: tuple[str, ...]
    field_index: NDArray[np.int32]

    @property
    def n(self) -> int:
        """Number of fields."""
        return len(self.field_ids)


@dataclass(frozen=True, eq=False)
class SoilState:
    """Soil profile and true stock for one monitoring round (10 m grid arrays).

    ``soc_*``/``bd_*`` describe the soil *materials* (0-15, 15-30 and 30-50 cm of the baseline round);
    ``compaction`` is the factor ``k`` by which the 0-30 cm material's bulk density was multiplied
    (and its thickness divided) since the baseline (1 = unchanged). ``stock_0_30cm_t_ha`` is the
    fixed-depth 0-30 cm stock of this round; ``stock_baseline_mass_t_ha`` the carbon of the baseline
    round's 0-30 cm soil mass (what an equivalent-soil-mass comparison measures).
    """

    soc_top_g_kg: FloatArray
    soc_sub_g_kg: FloatArray
    bd_top_g_cm3: FloatArray
    bd_sub_g_cm3: FloatArray
    cf_vol_pct: FloatArray
    stock_0_30cm_t_ha: FloatArray
    soc_deep_g_kg: FloatArray | None = None
    bd_deep_g_cm3: FloatArray | None = None
    compaction: FloatArray | None = None
    stock_baseline_mass_t_ha: FloatArray | None = None

    def _segments(self, at: Any) -> list[tuple[Any, Any, Any, Any]]:
        """(top_cm, bottom_cm, soc g/kg, bd g/cm3) of the material segments in this round's depths."""
        k = 1.0 if self.compaction is None else self.compaction[at]
        deep_soc = (self.soc_sub_g_kg if self.soc_deep_g_kg is None else self.soc_deep_g_kg)[at]
        deep_bd = (self.bd_sub_g_cm3 if self.bd_deep_g_cm3 is None else self.bd_deep_g_cm3)[at]
        t1, t2 = TOP_CM[1] / k, SUB_CM[1] / k
        return [
            (0.0, t1, self.soc_top_g_kg[at], self.bd_top_g_cm3[at] * k),
            (t1, t2, self.soc_sub_g_kg[at], self.bd_sub_g_cm3[at] * k),
            (t2, np.inf, deep_soc, deep_bd),
        ]

    def layer(self, top_cm: float, bottom_cm: float, at: Any = ...) -> tuple[Any, Any]:
        """(SOC g/kg, bulk density g/cm3) a lab measures in the increment ``top_cm``-``bottom_cm`` of
        this round at ``self.<array>[at]`` (default: every pixel): fine-earth-mass-weighted SOC and
        the increment's mean bulk density."""
        mass: Any = 0.0
        carbon: Any = 0.0
        for lo, hi, soc, bd in self._segments(at):
            overlap = np.clip(np.minimum(bottom_cm, hi) - np.maximum(top_cm, lo), 0.0, None)
            mass = mass + overlap * bd
            carbon = carbon + overlap * bd * soc
        return carbon / mass, mass / (bottom_cm - top_cm)


@dataclass(frozen=True, eq=False)
class RegionTruth:
    """The hidden truth of a synthetic region.

    ``clay_pct`` is the (time-invariant) clay content that also drives soil moisture and hence
    reflectance. ``states`` maps round name -> :class:`SoilState`. ``change_rate_t_ha_yr``
    holds each field's true 0-30 cm stock change rate (t C/ha/yr), in field order.
    """

    spec: SceneSpec
    fields: FieldLayout
    clay_pct: FloatArray
    states: dict[str, SoilState]
    change_rate_t_ha_yr: tuple[float, ...]

    def field_mean_stock(self, round_name: str, *, basis: str = "fixed_depth") -> tuple[float, ...]:
        """True mean stock (t C/ha) over each field's pixels, in field order: ``fixed_depth`` (0-30 cm)
        or ``baseline_mass`` (the carbon of the baseline round's 0-30 cm soil mass, the ESM basis)."""
        state = self.states[round_name]
        stock = state.stock_0_30cm_t_ha if basis == "fixed_depth" else state.stock_baseline_mass_t_ha
        assert stock is not None
        idx = self.fields.field_index
        return tuple(float(stock[idx == i + 1].mean()) for i in range(self.fields.n))


def _grid_shape(n_cells: float, width: float, height: float) -> tuple[int, int]:
    nx = max(1, round(math.sqrt(n_cells * width / height)))
    ny = max(1, math.ceil(n_cells / nx))
    return nx, ny


def make_fields(spec: SceneSpec) -> FieldLayout:
    """Lay out ~``n_fields`` quadrilateral fields on a jittered grid of landscape cells.

    The region is split into a grid of about ``n_fields / crop_fraction`` cells whose interior
    nodes are jittered by up to 18 % of a cell; ``n_fields`` randomly chosen cells become
    fields, shrunk by ``road_half_width_m`` to leave road/hedge gaps. The remaining cells are
    permanent grassland or woodland. Field ids run F001... in row-major order from the
    north-west; F001's name contains a non-ASCII character and F002's contains ``&`` and ``<``.
    """
    rng = spec.rng("fields")
    minx, miny, maxx, maxy = spec.bounds
    w, h = maxx - minx, maxy - miny
    nx, ny = _grid_shape(spec.n_fields / spec.crop_fraction, w, h)
    while nx * ny < spec.n_fields:
        ny += 1
    cw, ch = w / nx, h / ny
    xs = minx + np.arange(nx + 1)[None, :] * cw + np.zeros((ny + 1, 1))
    ys = maxy - np.arange(ny + 1)[:, None] * ch + np.zeros((1, nx + 1))
    jx = rng.uniform(-0.18, 0.18, xs.shape) * cw
    jy = rng.uniform(-0.18, 0.18, ys.shape) * ch
    jx[:, 0] = jx[:, -1] = 0.0
    jy[0, :] = jy[-1, :] = 0.0
    xs, ys = xs + jx, ys + jy
    chosen = np.sort(rng.choice(nx * ny, size=spec.n_fields, replace=False))
    polys: list[Polygon] = []
    for cell in chosen:
        r, c = divmod(int(cell), nx)
        quad = Polygon(
            [
                (xs[r, c], ys[r, c]),
                (xs[r + 1, c], ys[r + 1, c]),
                (xs[r + 1, c + 1], ys[r + 1, c + 1]),
                (xs[r, c + 1], ys[r, c + 1]),
            ]
        )
        shrunk = quad.buffer(-spec.road_half_width_m, join_style="mitre")
        polys.append(Polygon(shrunk.exterior.coords) if not shrunk.is_empty else quad)
    n = len(polys)
    field_ids = tuple(f"F{i + 1:03d}" for i in range(n))
    n_farms = max(1, round(n / 6))
    farm_ids = tuple(f"FARM{int(k) + 1:02d}" for k in rng.integers(0, n_farms, size=n))
    pool = list(_NAME_POOL)
    names = []
    for i in range(n):
        if i == 0:
            names.append("Großer Hofäcker")
        elif i == 1:
            names.append("Huber & Söhne <Nord>")
        else:
            names.append(f"{pool[(i - 2) % len(pool)]} {(i - 2) // len(pool) + 1}")
    practices = [PRACTICES[int(k)] for k in rng.choice(3, size=n, p=[0.3, 0.3, 0.4])]
    if n >= 3:  # every practice present
        order = rng.permutation(n)[:3]
        for p, i in zip(PRACTICES, order, strict=True):
            practices[int(i)] = p
    index = rasterio.features.rasterize(
        [(poly, i + 1) for i, poly in enumerate(polys)],
        out_shape=spec.shape,
        transform=spec.transform,
        fill=0,
        dtype="int32",
    )
    return FieldLayout(
        polygons=tuple(polys),
        field_ids=field_ids,
        farm_ids=farm_ids,
        names=tuple(names),
        practices=tuple(practices),
        field_index=index.astype(np.int32),
    )


def make_truth(spec: SceneSpec) -> RegionTruth:
    """Build the hidden truth (fields, soils, true stocks for every round) of ``spec``.

    Deterministic in ``spec``. Arrays are float64 on the 10 m grid, shape ``spec.shape``.
    """
    fields = make_fields(spec)
    rng = spec.rng("soil")
    shape = spec.shape
    broad = spec.soc_range_m / spec.resolution_m
    detail = spec.detail_range_m / spec.resolution_m

    def grf(range_px: float) -> FloatArray:
        return gaussian_random_field(shape, range_px, rng)

    clay_z = 0.8 * grf(broad) + 0.6 * grf(detail)
    own_z = 0.75 * grf(broad) + 0.66 * grf(detail)
    bd_z, cf_z, ratio_z = grf(detail), grf(broad), grf(detail)

    idx = fields.field_index
    legacy = np.zeros(fields.n + 1)
    legacy[1:] = rng.normal(0.0, 0.35, fields.n) + np.array(
        [0.15 if p == "cover_crops" else 0.0 for p in fields.practices]
    )
    rho = 0.45
    soc_z = rho * clay_z + math.sqrt(1 - rho**2) * own_z + legacy[idx]
    sd_log = 0.33
    soc_top = np.clip(18.0 * np.exp(sd_log * soc_z - sd_log**2 / 2), 6.0, 45.0)
    clay = np.clip(22.0 + 6.0 * clay_z, 8.0, 45.0)
    bd_top = np.clip(1.36 - 0.22 * np.log(soc_top / 18.0) + 0.035 * bd_z, 1.12, 1.58)
    bd_sub = np.clip(bd_top + 0.07 + 0.02 * ratio_z, 1.15, 1.65)
    ratio = np.clip(0.72 + 0.05 * ratio_z, 0.6, 0.85)
    cf = np.clip(5.0 + 3.5 * cf_z, 0.0, 15.0)

    rates = []
    for p in fields.practices:
        lo, hi = CHANGE_RATES_T_HA_YR[p]
        rates.append(float(rng.uniform(lo, hi)) * spec.change_scale)
    rate_px = np.concatenate([[0.0], rates])[idx]
    in_field = idx > 0

    # 30-50 cm material and per-field bulk-density change: their own stream, so the draws above stay put.
    deep_rng = spec.rng("soil-deep")
    deep_z = gaussian_random_field(shape, detail, deep_rng)
    soc_deep = soc_top * ratio * np.clip(0.55 + 0.05 * deep_z, 0.4, 0.7)
    bd_deep = np.clip(bd_sub + 0.04, 1.15, 1.70)
    dbd_field = np.concatenate([[0.0], deep_rng.normal(0.0, 1.0, fields.n) * spec.bd_change_sd_g_cm3])
    k_full = 1.0 + dbd_field[idx] / 1.36

    states: dict[str, SoilState] = {}
    first = spec.rounds[0]
    total_years = max(years_between(first.sampling_date, spec.rounds[-1].sampling_date), 1e-9)
    for rnd in spec.rounds:
        years = years_between(first.sampling_date, rnd.sampling_date)
        base_top, base_sub = soc_top, soc_top * ratio
        stock0 = _stock(base_top, base_sub, bd_top, bd_sub, cf)
        if years > 0:
            # small-scale (~60 m) noise, sd 0.3 t C/ha: averages out over a field
            noise = 0.3 * spec.change_scale * grf(60.0 / spec.resolution_m)
            delta = np.where(in_field, rate_px * years + noise, 0.0)
            factor = 1.0 + delta / stock0
            base_top, base_sub = base_top * factor, base_sub * factor
        k = 1.0 + (k_full - 1.0) * (years / total_years)
        state = SoilState(
            soc_top_g_kg=base_top,
            soc_sub_g_kg=base_sub,
            bd_top_g_cm3=bd_top,
            bd_sub_g_cm3=bd_sub,
            cf_vol_pct=cf,
            stock_0_30cm_t_ha=_stock(base_top, base_sub, bd_top, bd_sub, cf),
            soc_deep_g_kg=soc_deep,
            bd_deep_g_cm3=bd_deep,
            compaction=k,
            stock_baseline_mass_t_ha=_stock(base_top, base_sub, bd_top, bd_sub, cf),
        )
        if spec.bd_change_sd_g_cm3 > 0:
            soc, bd = state.layer(0.0, SUB_CM[1])
            fixed = np.asarray(soc_stock_t_ha(soc, bd, SUB_CM[1], cf), dtype=np.float64)
            state = replace(state, stock_0_30cm_t_ha=fixed)
        states[rnd.name] = state
    return RegionTruth(
        spec=spec,
        fields=fields,
        clay_pct=clay,
        states=states,
        change_rate_t_ha_yr=tuple(rates),
    )


def _stock(
    soc_top: FloatArray,
    soc_sub: FloatArray,
    bd_top: FloatArray,
    bd_sub: FloatArray,
    cf: FloatArray,
) -> FloatArray:
    top = soc_stock_t_ha(soc_top, bd_top, TOP_CM[1] - TOP_CM[0], cf)
    sub = soc_stock_t_ha(soc_sub, bd_sub, SUB_CM[1] - SUB_CM[0], cf)
    return np.asarray(top, dtype=np.float64) + np.asarray(sub, dtype=np.float64)
