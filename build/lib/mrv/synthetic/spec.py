"""The frozen specification of a synthetic monitoring region.

A :class:`SceneSpec` fully determines a synthetic region: the same spec (including its
``seed``) always produces the same arrays, CSV bytes and rasters. Every knob has a default;
the defaults describe a 5 km x 5 km arable area in Lower Austria (UTM 33N) monitored in two
rounds (2021 and 2024) with four Sentinel-2 L2A acquisitions each.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from datetime import date

import numpy as np
from affine import Affine

from mrv.errors import ConfigError

_BASELINE_RE = re.compile(r"^\d\d\.\d\d$")

#: Processing baselines at or above this value carry the +1000 DN BOA offset (ESA, "Sentinel-2
#: L2A products: processing baseline 04.00", S2-PDGS-MPC-L2A-PBN, January 2022).
OFFSET_BASELINE = "04.00"


@dataclass(frozen=True)
class RoundSpec:
    """One monitoring round: its Sentinel-2 acquisitions and its soil-sampling date.

    ``acquisition_dates`` are ISO dates (``YYYY-MM-DD``); ``processing_baselines`` gives the
    Sentinel-2 processing baseline (``NN.NN``) of each acquisition, in the same order.
    """

    name: str
    acquisition_dates: tuple[str, ...]
    sampling_date: str
    processing_baselines: tuple[str, ...]


DEFAULT_ROUNDS: tuple[RoundSpec, ...] = (
    RoundSpec(
        name="2021",
        acquisition_dates=("2021-04-12", "2021-06-08", "2021-08-17", "2021-10-03"),
        sampling_date="2021-09-14",
        processing_baselines=("03.00", "05.00", "03.01", "05.00"),
    ),
    RoundSpec(
        name="2024",
        acquisition_dates=("2024-04-18", "2024-06-02", "2024-08-21", "2024-10-09"),
        sampling_date="2024-09-17",
        # "04.00" marks the single item written with the Planetary Computer convention
        # (raster:bands without scale/offset), see SceneSpec.no_scale_offset_baseline.
        processing_baselines=("05.10", "03.01", "04.00", "05.11"),
    ),
)


@dataclass(frozen=True)
class SceneSpec:
    """Everything that determines a synthetic region (grid, soils, fields, scenes, samples).

    Grid: ``width_px`` x ``height_px`` pixels of ``resolution_m`` metres in EPSG:``crs_epsg``,
    north-up, upper-left corner at (``origin_x``, ``origin_y``). Width and height must be
    even because the 20 m bands (swir16, swir22, scl) have half the pixels per side.

    Extra knobs (all defaulted):

    * ``crop_fraction``: share of the landscape cells that are cropped fields; the rest is
      permanent grassland/woodland, vegetated on every date.
    * ``soc_range_m`` / ``detail_range_m``: correlation ranges (m) of the broad and the
      detailed component of the latent soil fields.
    * ``cloud_fractions``: target cloud(+shadow+cirrus) fraction of each acquisition,
      applied cyclically by acquisition index inside every round (first mostly clear,
      second fairly cloudy by default).
    * ``cirrus_probability``: chance that an acquisition carries a thin-cirrus patch (only
      acquisitions whose cloud fraction target is >= 0.05, so clear dates stay clear).
    * ``sensor_noise``: standard deviation of additive sensor noise (reflectance units).
    * ``no_scale_offset_baseline``: items with exactly this processing baseline get
      ``raster:bands`` without ``scale``/``offset`` (Planetary Computer convention);
      consumers must fall back to the baseline rule.
    * ``remeasured_share``: share of the first round's lab sites sampled again, at the recorded
      position (re-located with ``relocation_sd_m`` of GPS error per axis), in every later round;
      the rest of a later round's sites are new. Re-measured (paired) sites are the design-based
      evidence of change (VM0042 v2.2 Sect. 8.6.2: "the same set of sample points are visited at
      both time points").
    * ``change_scale``: multiplies the practice change rates and the change noise (0 = no true change).
    * ``bd_change_sd_g_cm3``: SD of the per-field bulk-density change of the 0-30 cm material between
      the first and last round (compaction > 0, loosening < 0); 0 keeps bulk density fixed.
    * ``lab_layers_cm``: depth increments (cm) each lab site is analysed in, e.g.
      ``((0, 15), (15, 30), (30, 50))`` for equivalent-soil-mass work.
    """

    seed: int = 42
    width_px: int = 500
    height_px: int = 500
    resolution_m: float = 10.0
    crs_epsg: int = 32633
    origin_x: float = 580000.0
    origin_y: float = 5360000.0
    n_fields: int = 36
    n_lab_sites: int = 180
    n_crowd: int = 80
    rounds: tuple[RoundSpec, ...] = DEFAULT_ROUNDS
    crop_fraction: float = 0.6
    road_half_width_m: float = 10.0
    soc_range_m: float = 1200.0
    detail_range_m: float = 250.0
    cloud_fractions: tuple[float, ...] = (0.03, 0.45, 0.12, 0.07)
    cirrus_probability: float = 0.35
    sensor_noise: float = 0.004
    no_scale_offset_baseline: str = "04.00"
    remeasured_share: float = 1.0
    relocation_sd_m: float = 1.0
    change_scale: float = 1.0
    bd_change_sd_g_cm3: float = 0.0
    lab_layers_cm: tuple[tuple[float, float], ...] = ((0.0, 15.0), (15.0, 30.0))

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def transform(self) -> Affine:
        """Affine transform of the 10 m grid (north-up, upper-left origin)."""
        r = self.resolution_m
        return Affine(r, 0.0, self.origin_x, 0.0, -r, self.origin_y)

    @property
    def transform_20m(self) -> Affine:
        """Affine transform of the half-resolution grid of the 20 m bands."""
        r = 2.0 * self.resolution_m
        return Affine(r, 0.0, self.origin_x, 0.0, -r, self.origin_y)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the 10 m grid."""
        return (self.height_px, self.width_px)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) of the grid in the projected CRS (metres)."""
        return (
            self.origin_x,
            self.origin_y - self.height_px * self.resolution_m,
            self.origin_x + self.width_px * self.resolution_m,
            self.origin_y,
        )

    @property
    def crs(self) -> str:
        """The grid CRS as an ``EPSG:<code>`` string."""
        return f"EPSG:{self.crs_epsg}"

    def rng(self, stream: str) -> np.random.Generator:
        """Independent, reproducible random stream for one named part of the generator.

        Streams are keyed by ``(seed, crc32(stream))`` so adding a new stream never changes
        the numbers drawn by existing ones.
        """
        return np.random.default_rng([self.seed, zlib.crc32(stream.encode("utf-8"))])


def baseline_has_offset(baseline: str) -> bool:
    """True if DN of this processing baseline carry the +1000 BOA offset (>= 04.00)."""
    return baseline >= OFFSET_BASELINE


def years_between(start_iso: str, end_iso: str) -> float:
    """Elapsed years between two ISO dates (days / 365.25)."""
    return (date.fromisoformat(end_iso) - date.fromisoformat(start_iso)).days / 365.25


def _fail(msg: str) -> None:
    raise ConfigError(msg)


def _validate(spec: SceneSpec) -> None:
    if spec.width_px < 16 or spec.height_px < 16:
        _fail(
            f"SceneSpec grid {spec.width_px}x{spec.height_px} px is too small; "
            "use width_px and height_px of at least 16."
        )
    if spec.width_px % 2 or spec.height_px % 2:
        _fail(
            f"SceneSpec width_px={spec.width_px} and height_px={spec.height_px} must both be "
            "even so the 20 m bands have exactly half the pixels per side; use even sizes."
        )
    if not spec.resolution_m > 0:
        _fail(f"SceneSpec resolution_m={spec.resolution_m} must be > 0 (metres).")
    if spec.n_fields < 1:
        _fail(f"SceneSpec n_fields={spec.n_fields} must be >= 1.")
    if spec.n_lab_sites < 3 * spec.n_fields:
        _fail(
            f"SceneSpec n_lab_sites={spec.n_lab_sites} is fewer than 3 sites per field "
            f"(n_fields={spec.n_fields}); raise n_lab_sites to at least {3 * spec.n_fields}."
        )
    if spec.n_crowd < 10:
        _fail(f"SceneSpec n_crowd={spec.n_crowd} must be >= 10 to plant the crowd defects.")
    if not 0.05 <= spec.crop_fraction <= 1.0:
        _fail(f"SceneSpec crop_fraction={spec.crop_fraction} must lie in [0.05, 1].")
    if not spec.cloud_fractions or any(not 0.0 <= f <= 0.8 for f in spec.cloud_fractions):
        _fail(f"SceneSpec cloud_fractions={spec.cloud_fractions} must be a non-empty tuple of values in [0, 0.8].")
    if not 0.0 <= spec.remeasured_share <= 1.0:
        _fail(f"SceneSpec remeasured_share={spec.remeasured_share} must lie in [0, 1].")
    if spec.change_scale < 0 or spec.bd_change_sd_g_cm3 < 0 or spec.relocation_sd_m < 0:
        _fail("SceneSpec change_scale, bd_change_sd_g_cm3 and relocation_sd_m must be >= 0.")
    lay = [tuple(float(v) for v in p) for p in spec.lab_layers_cm]
    if not lay or lay[0][0] != 0.0 or any(b <= a for a, b in lay) or any(lay[i][1] != lay[i + 1][0] for i in range(len(lay) - 1)):
        _fail(f"SceneSpec lab_layers_cm={spec.lab_layers_cm} must be contiguous increments from 0 cm, e.g. ((0, 15), (15, 30)).")
    if not spec.rounds:
        _fail("SceneSpec rounds is empty; give at least one RoundSpec.")
    names = [r.name for r in spec.rounds]
    if len(set(names)) != len(names):
        _fail(f"SceneSpec round names {names} are not unique; give each round its own name.")
    for r in spec.rounds:
        _validate_round(r)
    _fail_if_not_ordered(spec.rounds)
    try:
        from pyproj import CRS

        crs = CRS.from_epsg(spec.crs_epsg)
    except Exception as exc:  # pyproj raises its own CRSError
        raise ConfigError(
            f"SceneSpec crs_epsg={spec.crs_epsg} is not a known EPSG code ({exc}); "
            "use a projected metre CRS such as 32633."
        ) from exc
    if not crs.is_projected:
        _fail(
            f"SceneSpec crs_epsg={spec.crs_epsg} is not a projected CRS; use a projected "
            "metre CRS such as 32633 (UTM 33N)."
        )


def _validate_round(r: RoundSpec) -> None:
    if len(r.acquisition_dates) < 2:
        _fail(
            f"Round {r.name!r} has {len(r.acquisition_dates)} acquisition(s); at least two are "
            "needed so every field can be bare and cloud-free twice."
        )
    if len(r.processing_baselines) != len(r.acquisition_dates):
        _fail(
            f"Round {r.name!r} has {len(r.acquisition_dates)} acquisition dates but "
            f"{len(r.processing_baselines)} processing baselines; give one baseline per date."
        )
    for b in r.processing_baselines:
        if not _BASELINE_RE.match(b):
            _fail(f"Round {r.name!r} processing baseline {b!r} is not of the form 'NN.NN'.")
    for d in (*r.acquisition_dates, r.sampling_date):
        try:
            date.fromisoformat(d)
        except ValueError:
            _fail(f"Round {r.name!r} date {d!r} is not an ISO date; write it as YYYY-MM-DD.")
    if list(r.acquisition_dates) != sorted(set(r.acquisition_dates)):
        _fail(f"Round {r.name!r} acquisition dates must be unique and in ascending order.")


def _fail_if_not_ordered(rounds: tuple[RoundSpec, ...]) -> None:
    samp = [r.sampling_date for r in rounds]
    if samp != sorted(samp):
        _fail(f"Round sampling dates {samp} must be in chronological order; reorder rounds.")
