"""Synthetic Sentinel-2 L2A surface reflectance and scene classification (SCL).

Pure, in memory. :func:`make_acquisitions` turns a :class:`~mrv.synthetic.truth.RegionTruth`
into one :class:`Acquisition` per (round, date): surface reflectance (0..1) for blue, green,
red, nir (10 m) and swir16, swir22 (20 m), plus SCL at 10 m and 20 m.

Reflectance model per pixel and date:

* bare soil: ``R_b = R0_b * exp(-k_b * SOC) * exp(-m_b * w) * t_b * B_d * r_fd`` -- exponential
  darkening with topsoil SOC (g/kg), strongest in the visible and SWIR (Bartholomeus et al.
  2008, Geoderma 145:28-36; Stevens et al. 2008, Geoderma 144:395-404), exponential darkening
  with soil moisture ``w`` (Lobell & Asner 2002, SSSAJ 66:722-727) where ``w`` rises with clay
  content (persistent) and has a per-date smooth component, a clay absorption term ``t_b`` at
  2.2 um (swir22), a per-date brightness ``B_d`` and a per-field, per-date residue/tillage
  factor ``r_fd``;
* vegetation: linear mixture ``fc * V_b * vigour + (1 - fc) * soil`` with fractional cover fc
  0.8-0.97, giving NDVI > 0.5 (SCL 4); pixels between fields (roads, hedges, grassland,
  woodland) are vegetated on every date;
* clouds: smooth blobs thresholded from a random field on the 20 m grid (SCL 9 core, 8 edge),
  blended towards a bright cloud spectrum; cloud shadow (SCL 3) is the cloud mask displaced
  north-west (morning sun from the south-east), reflectance x 0.35; thin cirrus (SCL 10) adds
  a small bright offset;
* additive Gaussian sensor noise (``spec.sensor_noise``), clipped to 0..1.

Guarantee (by construction): every field pixel is bare and free of cloud, shadow and cirrus on
at least two acquisitions of every round. Each field is bare on >= 2 dates other than the
round's cloudiest date; cloud/cirrus blobs on those dates that break the guarantee are removed
whole (so clouds keep their blob shape and the cloudiest date keeps its cover).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from mrv.synthetic.spec import RoundSpec, SceneSpec, baseline_has_offset
from mrv.synthetic.truth import FloatArray, RegionTruth, gaussian_random_field

F32 = NDArray[np.float32]
U8 = NDArray[np.uint8]

# SCL classes (ESA Sen2Cor L2A scene classification).
SCL_NODATA, SCL_SHADOW, SCL_VEGETATION, SCL_BARE = 0, 3, 4, 5
SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_CIRRUS = 8, 9, 10
OBSTRUCTED_SCL: tuple[int, ...] = (SCL_SHADOW, SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_CIRRUS)
# 2x2 -> 20 m aggregation keeps the highest-priority class present (clouds first).
_SCL_PRIORITY: tuple[int, ...] = (
    SCL_NODATA,
    SCL_VEGETATION,
    SCL_BARE,
    SCL_SHADOW,
    SCL_CIRRUS,
    SCL_CLOUD_MEDIUM,
    SCL_CLOUD_HIGH,
)


@dataclass(frozen=True)
class BandInfo:
    """One Sentinel-2 band as written to STAC (Earth Search v1 asset key and metadata)."""

    key: str
    name: str
    title: str
    center_wavelength: float
    full_width_half_max: float
    resolution_factor: int  # 1 -> 10 m, 2 -> 20 m
    soil_r0: float  # bare-soil reflectance at SOC = 0, dry
    soc_k: float  # SOC darkening coefficient (1 / (g/kg))
    moisture_m: float  # moisture darkening coefficient
    vegetation: float  # green-vegetation reflectance
    cloud: float  # thick-cloud reflectance


BANDS: tuple[BandInfo, ...] = (
    BandInfo("blue", "B02", "Blue - 10m", 0.49, 0.098, 1, 0.110, 0.018, 1.6, 0.035, 0.46),
    BandInfo("green", "B03", "Green - 10m", 0.56, 0.045, 1, 0.165, 0.018, 1.6, 0.070, 0.45),
    BandInfo("red", "B04", "Red - 10m", 0.665, 0.038, 1, 0.225, 0.017, 1.6, 0.035, 0.46),
    BandInfo("nir", "B08", "NIR 1 - 10m", 0.842, 0.145, 1, 0.300, 0.011, 1.3, 0.380, 0.50),
    BandInfo("swir16", "B11", "SWIR 1.6\u03bcm - 20m", 1.61, 0.143, 2, 0.420, 0.013, 2.6, 0.200, 0.38),
    BandInfo("swir22", "B12", "SWIR 2.2\u03bcm - 20m", 2.19, 0.242, 2, 0.360, 0.014, 3.0, 0.090, 0.30),
)
BAND_KEYS: tuple[str, ...] = tuple(b.key for b in BANDS)


@dataclass(frozen=True, eq=False)
class Acquisition:
    """One synthetic Sentinel-2 L2A acquisition over the region.

    ``reflectance`` maps band key -> float32 surface reflectance (0..1), at 10 m for blue,
    green, red, nir and at 20 m (half the pixels per side) for swir16 and swir22.
    ``scl`` is the 20 m SCL (uint8), ``scl_10m`` the 10 m SCL it was aggregated from.
    ``bare_fields[i]`` says whether field ``i`` is bare soil on this date.
    """

    round_name: str
    date: str
    index_in_round: int
    processing_baseline: str
    platform: str
    reflectance: dict[str, F32]
    scl: U8
    scl_10m: U8
    bare_fields: tuple[bool, ...]

    @property
    def cloud_cover_pct(self) -> float:
        """Share (%) of 20 m pixels classed cloud, cloud shadow or cirrus (SCL 3, 8, 9, 10)."""
        return float(np.isin(self.scl, OBSTRUCTED_SCL).mean() * 100.0)

    def scl_pct(self, *classes: int) -> float:
        """Share (%) of 20 m pixels in the given SCL classes."""
        return float(np.isin(self.scl, classes).mean() * 100.0)


def encode_dn(reflectance: NDArray[np.floating], baseline: str) -> NDArray[np.uint16]:
    """Encode surface reflectance as Sentinel-2 L2A digital numbers (uint16, 0 = nodata).

    ``DN = round(reflectance * 10000) + (1000 if baseline >= "04.00" else 0)``, clipped to
    1..65535 (ESA, Sentinel-2 L2A product format, processing baseline 04.00 note
    S2-PDGS-MPC-L2A-PBN: BOA_ADD_OFFSET = -1000, QUANTIFICATION_VALUE = 10000).
    """
    offset = 1000.0 if baseline_has_offset(baseline) else 0.0
    dn = np.rint(np.asarray(reflectance, dtype=np.float64) * 10000.0) + offset
    return np.clip(dn, 1, 65535).astype(np.uint16)


def decode_dn(dn: NDArray[np.integer], baseline: str) -> FloatArray:
    """Invert :func:`encode_dn` by the baseline rule (``(DN - offset) / 10000``), NaN for 0."""
    offset = 1000.0 if baseline_has_offset(baseline) else 0.0
    out = (np.asarray(dn, dtype=np.float64) - offset) / 10000.0
    out[np.asarray(dn) == 0] = np.nan
    return out


def downsample_mean(a: NDArray[np.floating]) -> F32:
    """2x2 block mean (10 m -> 20 m)."""
    r, c = a.shape
    out: F32 = a.reshape(r // 2, 2, c // 2, 2).mean(axis=(1, 3)).astype(np.float32)
    return out


def downsample_scl(scl: U8) -> U8:
    """2x2 SCL aggregation keeping the highest-priority class (cloud > cirrus > shadow > bare
    > vegetation), so a 20 m pixel is never clearer than any of its 10 m pixels."""
    rank = np.zeros(256, dtype=np.uint8)
    for i, cls in enumerate(_SCL_PRIORITY):
        rank[cls] = i
    r, c = scl.shape
    best = rank[scl].reshape(r // 2, 2, c // 2, 2).max(axis=(1, 3))
    out: U8 = np.asarray(_SCL_PRIORITY, dtype=np.uint8)[best]
    return out


def _upsample(a: NDArray[Any]) -> NDArray[Any]:
    return np.repeat(np.repeat(a, 2, axis=0), 2, axis=1)


@dataclass(eq=False)
class _CloudLayer:
    """Labelled cloud/shadow/cirrus blobs of one date on the 20 m grid."""

    cloud_lab: NDArray[np.int32]
    core: NDArray[np.bool_]
    shadow_lab: NDArray[np.int32]
    cirrus_lab: NDArray[np.int32]
    dropped: set[int]

    def active(self, lab: NDArray[np.int32]) -> NDArray[np.bool_]:
        keep = lab > 0
        if self.dropped:
            keep &= ~np.isin(lab, list(self.dropped))
        return keep

    def obstructed(self) -> NDArray[np.bool_]:
        return self.active(self.cloud_lab) | self.active(self.shadow_lab) | self.active(self.cirrus_lab)


def _make_clouds(spec: SceneSpec, target: float, rng: np.random.Generator) -> _CloudLayer:
    shape20 = (spec.height_px // 2, spec.width_px // 2)
    res20 = 2.0 * spec.resolution_m
    empty = np.zeros(shape20, dtype=np.int32)
    cloud_lab, core = empty.copy(), np.zeros(shape20, dtype=bool)
    shadow_lab, cirrus_lab = empty.copy(), empty.copy()
    if target > 0:
        z = 0.8 * gaussian_random_field(shape20, 900.0 / res20, rng) + 0.6 * (
            gaussian_random_field(shape20, 250.0 / res20, rng)
        )
        # Shadow displaced to the north-west, ~300-600 m, capped to 15 % of the scene.
        dist = rng.uniform(300.0, 600.0) / res20
        d = min(dist, max(1.0, 0.15 * min(shape20)))
        az = math.radians(rng.uniform(130.0, 160.0))  # sun azimuth (from north, clockwise)
        shift = (
            int(round(d * math.cos(az))),  # sun to the south -> shadow shifted north (up)
            int(round(-d * math.sin(az))),  # sun to the east -> shadow shifted west (left)
        )
        # Bisect the cloud threshold so that cloud + shadow covers ~target of the scene.
        lo, hi = 0.0, target
        for _ in range(14):
            q = (lo + hi) / 2
            cloud = z > np.quantile(z, 1.0 - q)
            moved = ndimage.shift(cloud, shift, order=0, mode="constant", cval=False)
            if (cloud | moved).mean() > target:
                hi = q
            else:
                lo = q
        cloud = z > np.quantile(z, 1.0 - lo)
        core = z > np.quantile(z, 1.0 - 0.55 * lo)
        labels, _ = ndimage.label(cloud)
        cloud_lab = labels.astype(np.int32)
        shifted = ndimage.shift(cloud_lab, shift, order=0, mode="constant", cval=0)
        shadow_lab = np.where(cloud_lab == 0, shifted, 0).astype(np.int32)
    if rng.random() < spec.cirrus_probability and target >= 0.05:
        zc = gaussian_random_field(shape20, 1500.0 / res20, rng)
        cir = (zc > np.quantile(zc, 1.0 - rng.uniform(0.02, 0.06))) & (cloud_lab == 0)
        cir &= shadow_lab == 0
        labels, _ = ndimage.label(cir)
        base = int(cloud_lab.max())
        cirrus_lab = np.where(labels > 0, labels + base, 0).astype(np.int32)
    return _CloudLayer(cloud_lab, core, shadow_lab, cirrus_lab, set())


def _bare_schedule(n_fields: int, n_dates: int, protected: int | None, rng: np.random.Generator) -> NDArray[np.bool_]:
    """(n_dates, n_fields) bool: field bare on date. >= 2 bare non-protected dates per field."""
    others = [d for d in range(n_dates) if d != protected]
    bare = np.zeros((n_dates, n_fields), dtype=bool)
    for f in range(n_fields):
        k = int(rng.integers(2, len(others) + 1)) if len(others) > 2 else len(others)
        for d in rng.choice(others, size=k, replace=False):
            bare[int(d), f] = True
        if protected is not None and rng.random() < 0.5:
            bare[protected, f] = True
    return bare


def _repair(
    layers: list[_CloudLayer],
    bare_px: NDArray[np.bool_],
    in_field: NDArray[np.bool_],
    order: list[int],
) -> None:
    """Drop whole blobs on non-protected dates until every field pixel has >= 2 clear bare
    dates. ``bare_px`` is (n_dates, rows, cols) at 10 m; ``order`` lists droppable dates."""
    while True:
        obstructed = np.stack([_upsample(layer.obstructed()) for layer in layers])
        ok = (bare_px & ~obstructed).sum(axis=0)
        fail = in_field & (ok < 2)
        if not fail.any():
            return
        changed = False
        for d in order:
            hit = fail & bare_px[d] & obstructed[d]
            if not hit.any():
                continue
            hit20 = hit.reshape(hit.shape[0] // 2, 2, hit.shape[1] // 2, 2).any(axis=(1, 3))
            layer = layers[d]
            for lab in (layer.cloud_lab, layer.shadow_lab, layer.cirrus_lab):
                ids = np.unique(lab[hit20 & layer.active(lab)])
                layer.dropped.update(int(i) for i in ids if i > 0)
            changed = True
            break
        if not changed:  # impossible by construction; guard against an endless loop
            raise RuntimeError("cloud repair made no progress; this is a generator bug")


def make_acquisitions(spec: SceneSpec, truth: RegionTruth) -> tuple[Acquisition, ...]:
    """Simulate every acquisition of every round of ``spec`` over ``truth``.

    Deterministic in ``spec``. Returns acquisitions in round order, then date order.
    """
    out: list[Acquisition] = []
    for rnd in spec.rounds:
        out.extend(_make_round(spec, truth, rnd))
    return tuple(out)


def _make_round(spec: SceneSpec, truth: RegionTruth, rnd: RoundSpec) -> list[Acquisition]:
    rng = spec.rng(f"scenes/{rnd.name}")
    n_dates = len(rnd.acquisition_dates)
    targets = [spec.cloud_fractions[i % len(spec.cloud_fractions)] for i in range(n_dates)]
    protected: int | None = int(np.argmax(targets)) if n_dates >= 3 else None
    if protected is not None and targets[protected] <= 0:
        protected = None
    fields = truth.fields
    idx = fields.field_index
    in_field = idx > 0
    bare = _bare_schedule(fields.n, n_dates, protected, rng)
    bare_lookup = np.concatenate([np.zeros((n_dates, 1), dtype=bool), bare], axis=1)
    bare_px = bare_lookup[:, idx]  # (n_dates, rows, cols)

    layers = [_make_clouds(spec, t, rng) for t in targets]
    droppable = sorted((d for d in range(n_dates) if d != protected), key=lambda d: targets[d])
    _repair(layers, bare_px, in_field, droppable)

    state = truth.states[rnd.name]
    clay = truth.clay_pct
    shape = spec.shape
    res = spec.resolution_m
    # Persistent, SOC-independent soil albedo (parent material, iron oxides, stoniness): the
    # part of the soil signal that a model cannot explain. Drawn from a round-independent stream.
    albedo_rng = spec.rng("soil-albedo")
    albedo = 0.10 * (
        0.6 * gaussian_random_field(shape, spec.detail_range_m / res, albedo_rng)
        + 0.8 * gaussian_random_field(shape, spec.soc_range_m / res, albedo_rng)
    )
    redness = 0.03 * gaussian_random_field(shape, spec.detail_range_m / res, albedo_rng)
    grass_fc = np.clip(0.93 + 0.04 * gaussian_random_field(shape, 100.0 / res, rng), 0.82, 1.0)
    acqs = []
    for d, date in enumerate(rnd.acquisition_dates):
        layer = layers[d]
        brightness = rng.uniform(0.92, 1.08)
        wet = rng.uniform(-0.03, 0.06)
        moisture = np.clip(
            0.12
            + wet
            + 0.035 * (clay - 22.0) / 6.0
            + 0.035 * gaussian_random_field(shape, spec.soc_range_m / res, rng),
            0.02,
            0.4,
        )
        residue = np.concatenate([[1.0], rng.uniform(0.93, 1.07, fields.n)])[idx]
        fc_field = np.concatenate([[0.0], rng.uniform(0.80, 0.97, fields.n)])[idx]
        vigour = np.concatenate([[rng.uniform(0.9, 1.05)], rng.uniform(0.85, 1.1, fields.n)])
        veg_here = ~bare_px[d]
        fc = np.where(in_field, fc_field, grass_fc)
        cloud10 = _upsample(layer.active(layer.cloud_lab))
        core10 = _upsample(layer.core) & cloud10
        shadow10 = _upsample(layer.active(layer.shadow_lab))
        cirrus10 = _upsample(layer.active(layer.cirrus_lab))
        alpha = np.where(core10, 0.9, 0.55)

        refl: dict[str, F32] = {}
        for band in BANDS:
            soil = (
                band.soil_r0
                * np.exp(-band.soc_k * state.soc_top_g_kg)
                * np.exp(-band.moisture_m * moisture)
                * brightness
                * residue
                * np.exp(albedo * band.soc_k / 0.015 + (redness if band.key == "red" else 0.0))
            )
            if band.key == "swir22":  # clay-lattice OH absorption near 2.2 um
                soil = soil * (1.0 - 0.006 * (clay - 22.0))
            veg = band.vegetation * vigour[idx]
            r = np.where(veg_here, fc * veg + (1.0 - fc) * soil, soil)
            r = np.where(shadow10, 0.35 * r + 0.005, r)
            r = np.where(cirrus10, r + (0.05 if band.resolution_factor == 1 else 0.03), r)
            r = np.where(cloud10, (1.0 - alpha) * r + alpha * band.cloud * brightness, r)
            if band.resolution_factor == 2:
                r = downsample_mean(r)
            r = r + rng.normal(0.0, spec.sensor_noise, r.shape)
            refl[band.key] = np.clip(r, 0.0, 1.0).astype(np.float32)

        scl10 = np.where(bare_px[d], SCL_BARE, SCL_VEGETATION).astype(np.uint8)
        scl10[shadow10] = SCL_SHADOW
        scl10[cirrus10] = SCL_CIRRUS
        scl10[cloud10] = SCL_CLOUD_MEDIUM
        scl10[core10] = SCL_CLOUD_HIGH
        acqs.append(
            Acquisition(
                round_name=rnd.name,
                date=date,
                index_in_round=d,
                processing_baseline=rnd.processing_baselines[d],
                platform=str(rng.choice(["sentinel-2a", "sentinel-2b"])),
                reflectance=refl,
                scl=downsample_scl(scl10),
                scl_10m=scl10,
                bare_fields=tuple(bool(b) for b in bare[d]),
            )
        )
    return acqs
