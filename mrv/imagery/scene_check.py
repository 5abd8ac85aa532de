"""A per-scene check of the data itself, because radiometric metadata lies.

The failure it looks for is the one providers are known to make: the 1000 DN BOA offset of processing
baselines >= 04.00 (0.1 in reflectance) applied twice or not at all. Earth Search v1 items say
``earthsearch:boa_offset_applied`` and are right most of the time (Element84/earth-search#9, #71), but
some say ``false`` on shifted data (earth-search#66) and reprocessing has mixed both kinds within one
collection (cirrus-geo/cirrus-earth-search#21, #33).

Two physical facts decide it, over the clear land pixels of a scene (SCL 4 vegetation, 5 bare soil):

* **Too dark** (the offset subtracted twice): surface reflectance is not negative; the 1000 DN offset of
  baseline 04.00 was introduced so that the small negative values of noise over very dark surfaces are no
  longer clipped to 0 (ESA, "Sentinel-2: New processing baseline 04.00"), so L2A products have only a small
  share of negative values, over dark areas, water and shadow, not over clear land. When a large share of
  clear land pixels is negative in some band (> ``negative_share_max``) the scaling is wrong. If adding the
  0.1 back leaves almost none negative (<= ``residual_share_max``), the direction is unambiguous and the scene
  is corrected; otherwise it is dropped.
* **Too bright** (the offset not subtracted): raw DNs of a >= 04.00 baseline are at least 1000 wherever the
  surface is not negative, so after scaling almost no clear land pixel is below 0.1 in *any* band
  (share <= ``residual_share_max``), while vegetation red and blue and most soils' blue are well below 0.1
  (dark-object principle: Chavez 1988, Remote Sens. Environ. 24:459-479). A very bright area (desert, chalk)
  can look like that too, so this direction needs a neighbouring date of the same area that shows dark
  objects (share below 0.1 >= ``dark_evidence_share`` in some band) *and* is darker in every band, by at least
  ``min_band_shift`` in each band's 5th percentile: an offset error brightens all bands alike, a change of the
  surface does not (bare soil is brighter than a crop in red, darker in NIR). Then the scene is corrected by
  -0.1; without such a neighbour it is kept and flagged.

Pure functions on arrays; the pixels are sampled by :func:`mrv.imagery.load.sample_scene` (decimated reads,
via the files' overviews) or come from the Sentinel Hub response.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from mrv.imagery.masking import CLEAR_LAND_CLASSES
from mrv.imagery.radiometry import BOA_OFFSET_REFLECTANCE

__all__ = ["CheckConfig", "SceneStats", "Verdict", "judge", "scene_stats"]

BOA = -BOA_OFFSET_REFLECTANCE
"""The size of the offset error looked for: 0.1 reflectance (1000 DN / 10000)."""

Action = Literal["keep", "correct", "drop"]


@dataclass(frozen=True)
class CheckConfig:
    """Thresholds of :func:`judge` (shares are fractions of a scene's clear land pixels)."""

    negative_share_max: float = 0.20
    """More negative pixels than this in some band: the scene is too dark for its scaling."""
    residual_share_max: float = 0.02
    """A correction must leave at most this share negative (too dark), resp. below 0.1 (too bright)."""
    dark_evidence_share: float = 0.20
    """A neighbouring date with at least this share below 0.1 in some band proves the area has dark objects."""
    min_band_shift: float = 0.06
    """A too-bright scene is corrected only if a dark neighbour's 5th percentile is lower by this in every band."""
    min_clear_pixels: int = 50
    """Scenes with fewer clear land pixels in the sample are not judged (kept as they are)."""


@dataclass(frozen=True)
class SceneStats:
    """Reflectance statistics of one scene over its clear land pixels, as scaled by its metadata."""

    item_id: str
    n_clear: int
    negative_share: float
    """Largest share over the bands of pixels < 0."""
    below_minus_boa_share: float
    """Largest share over the bands of pixels < -0.1 (what stays negative after adding the offset back)."""
    below_boa_share: float
    """Largest share over the bands of pixels < 0.1 (dark objects; ~0 when the offset was not removed)."""
    darkest_band: str
    """The band with the most negative pixels (else the most pixels below 0.1)."""
    p05: tuple[tuple[str, float], ...] = ()
    """5th percentile of each band."""


@dataclass(frozen=True)
class Verdict:
    """What to do with one scene: ``offset_shift`` (reflectance) is added to every band when correcting."""

    item_id: str
    action: Action
    offset_shift: float = 0.0
    reason: str = ""


def scene_stats(
    item_id: str,
    reflectance: Mapping[str, np.ndarray],
    scl: np.ndarray,
    *,
    clear_classes: tuple[int, ...] = CLEAR_LAND_CLASSES,
) -> SceneStats:
    """Statistics of :class:`SceneStats` over pixels whose SCL is clear land and every band is finite.

    ``reflectance`` maps band names to arrays of the shape of ``scl``, already scaled by the item's metadata
    (unitless reflectance, NaN for nodata).
    """
    names = list(reflectance)
    if not names:
        raise ValueError("scene_stats needs at least one reflectance band")
    stack = np.stack([np.asarray(reflectance[n], dtype=np.float64) for n in names])
    valid = np.isin(np.asarray(scl), clear_classes) & np.isfinite(stack).all(axis=0)
    n = int(valid.sum())
    if n == 0:
        return SceneStats(item_id, 0, 0.0, 0.0, 0.0, names[0])
    values = stack[:, valid]
    p05 = tuple((name, float(v)) for name, v in zip(names, np.percentile(values, 5, axis=1), strict=True))
    neg = (values < 0).mean(axis=1)
    below_minus = (values < -BOA).mean(axis=1)
    below = (values < BOA).mean(axis=1)
    darkest = int(np.argmax(neg)) if neg.max() > 0 else int(np.argmax(below))
    return SceneStats(item_id, n, float(neg.max()), float(below_minus.max()), float(below.max()), names[darkest], p05)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _brighter_by(scene: SceneStats, other: SceneStats) -> float:
    """Smallest difference over the shared bands of the 5th percentiles (scene - other); -inf if none shared."""
    mine, theirs = dict(scene.p05), dict(other.p05)
    shared = [b for b in mine if b in theirs]
    return min((mine[b] - theirs[b] for b in shared), default=float("-inf"))


def judge(stats: Sequence[SceneStats], cfg: CheckConfig | None = None) -> list[Verdict]:
    """One :class:`Verdict` per scene, in order; see the module docstring for the rules.

    Neighbours are the other scenes of ``stats`` (one search over one area), so a scene is compared with the
    other dates of the same ground.
    """
    cfg = cfg or CheckConfig()
    judged = [s for s in stats if s.n_clear >= cfg.min_clear_pixels]
    too_dark = {s.item_id for s in judged if s.negative_share > cfg.negative_share_max}
    too_bright = {
        s.item_id for s in judged if s.item_id not in too_dark and s.below_boa_share <= cfg.residual_share_max
    }
    evidence = [
        s for s in judged if s.item_id not in too_dark | too_bright and s.below_boa_share >= cfg.dark_evidence_share
    ]
    out: list[Verdict] = []
    for s in stats:
        if s.n_clear < cfg.min_clear_pixels:
            out.append(Verdict(s.item_id, "keep"))
        elif s.item_id in too_dark:
            what = (
                f"{_pct(s.negative_share)} of {s.n_clear} sampled clear land pixels have negative reflectance "
                f"(band {s.darkest_band})"
            )
            if s.below_minus_boa_share <= cfg.residual_share_max:
                out.append(
                    Verdict(
                        s.item_id,
                        "correct",
                        BOA,
                        f"{what}: the 1000 DN BOA offset was subtracted twice (the metadata says the data still "
                        f"carry it, the data say they do not); corrected by +{BOA:g} reflectance, which leaves "
                        f"{_pct(s.below_minus_boa_share)} negative",
                    )
                )
            else:
                out.append(
                    Verdict(
                        s.item_id,
                        "drop",
                        0.0,
                        f"{what}, and {_pct(s.below_minus_boa_share)} stay negative with the BOA offset added back: "
                        "the scaling is wrong in a way the offset does not explain",
                    )
                )
        elif s.item_id in too_bright:
            what = (
                f"only {_pct(s.below_boa_share)} of {s.n_clear} sampled clear land pixels are below {BOA:g} "
                "reflectance in every band, as if the 1000 DN BOA offset were still in the data"
            )
            shifts = [(_brighter_by(s, e), e) for e in evidence]
            best = max(shifts, key=lambda se: se[0], default=None)
            if best is not None and best[0] >= cfg.min_band_shift:
                ref = best[1]
                out.append(
                    Verdict(
                        s.item_id,
                        "correct",
                        -BOA,
                        f"{what}, while {ref.item_id} of the same area has {_pct(ref.below_boa_share)} below it "
                        f"(band {ref.darkest_band}) and is darker in every band (5th percentiles lower by at least "
                        f"{best[0]:.3f}); corrected by -{BOA:g} reflectance",
                    )
                )
            else:
                out.append(
                    Verdict(
                        s.item_id,
                        "keep",
                        0.0,
                        f"{what}; kept unchanged, because no other date of the same area is darker in every band "
                        "to confirm it (a very bright surface looks the same)",
                    )
                )
        else:
            out.append(Verdict(s.item_id, "keep"))
    return out
