"""The per-scene data check: scenes mislabelled in both directions are caught, truthful ones left alone.

Generated truth on many seeds for the pure rules (:func:`judge`), and the real Earth Search v1 item with its
flag lying both ways (earth-search#66) loaded from tiny local COGs.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from test_imagery_providers import BANDS, _items, _scl20, _truth, localise

from mrv.imagery.load import load_reflectance
from mrv.imagery.scene_check import CheckConfig, SceneStats, Verdict, judge, scene_stats

#: Reflectance ranges (uniform) of the two clear land classes (typical Sentinel-2 L2A values of green
#: vegetation and arable soil, e.g. the bare-soil spectra of Castaldi et al. 2019).
VEGETATION = {
    "blue": (0.01, 0.05),
    "green": (0.03, 0.09),
    "red": (0.02, 0.07),
    "nir": (0.25, 0.45),
    "swir16": (0.15, 0.25),
    "swir22": (0.07, 0.15),
}
SOIL = {
    "blue": (0.04, 0.10),
    "green": (0.06, 0.13),
    "red": (0.08, 0.18),
    "nir": (0.15, 0.28),
    "swir16": (0.20, 0.35),
    "swir22": (0.15, 0.30),
}
SHAPE = (64, 64)


def _scene(
    rng: np.random.Generator, soil_share: float, *, brighten: float = 0.0
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """True reflectance and SCL of one date: vegetation (4) and soil (5), a cloud (9), sensor noise."""
    soil = rng.random(SHAPE) < soil_share
    scl = np.where(soil, 5, 4).astype("uint8")
    r0, c0 = rng.integers(0, 48, size=2)
    scl[r0 : r0 + 12, c0 : c0 + 12] = 9
    refl = {}
    for band in BANDS:
        veg = rng.uniform(*VEGETATION[band], size=SHAPE)
        bare = rng.uniform(*SOIL[band], size=SHAPE) + brighten
        refl[band] = np.where(soil, bare, veg) + rng.normal(0.0, 0.005, size=SHAPE)
        refl[band][scl == 9] = 0.6
    return refl, scl


def _shifted(refl: dict[str, np.ndarray], by: float) -> dict[str, np.ndarray]:
    return {b: v + by for b, v in refl.items()}


def _stats(item_id: str, scene: tuple[dict[str, np.ndarray], np.ndarray]) -> SceneStats:
    return scene_stats(item_id, scene[0], scene[1])


@pytest.mark.parametrize("seed", range(40))
def test_mislabelled_scenes_are_corrected_in_both_directions_and_truthful_ones_kept(seed: int) -> None:
    rng = np.random.default_rng(seed)
    dates = [_scene(rng, soil_share=rng.uniform(0.05, 0.9)) for _ in range(5)]
    scenes = {
        "ok-1": dates[0],
        "ok-2": dates[1],
        "ok-3": dates[2],
        "twice": (_shifted(dates[3][0], -0.1), dates[3][1]),  # offset subtracted although the data lack it
        "never": (_shifted(dates[4][0], +0.1), dates[4][1]),  # offset in the data, not subtracted
    }
    verdicts = {v.item_id: v for v in judge([_stats(k, s) for k, s in scenes.items()])}
    for ok in ("ok-1", "ok-2", "ok-3"):
        assert verdicts[ok] == Verdict(ok, "keep"), verdicts[ok]
    assert verdicts["twice"].action == "correct"
    assert verdicts["twice"].offset_shift == pytest.approx(0.1)
    assert "subtracted twice" in verdicts["twice"].reason
    assert verdicts["never"].action == "correct"
    assert verdicts["never"].offset_shift == pytest.approx(-0.1)
    assert "as if the 1000 DN BOA offset were still in the data" in verdicts["never"].reason


@pytest.mark.parametrize("seed", range(20))
def test_a_truly_bright_bare_soil_scene_is_never_shifted(seed: int) -> None:
    """Bright dry soil everywhere looks "too bright", but it is not brighter than a crop in every band."""
    rng = np.random.default_rng(1000 + seed)
    bright = _scene(rng, soil_share=1.0, brighten=0.08)
    crops = [_scene(rng, soil_share=0.05) for _ in range(3)]
    stats = [_stats("bright", bright), *(_stats(f"crop-{i}", c) for i, c in enumerate(crops))]
    verdicts = {v.item_id: v for v in judge(stats)}
    assert verdicts["bright"].action == "keep"
    assert all(verdicts[f"crop-{i}"] == Verdict(f"crop-{i}", "keep") for i in range(3))


def test_too_bright_without_a_darker_neighbour_is_kept_and_flagged() -> None:
    rng = np.random.default_rng(5)
    refl, scl = _scene(rng, soil_share=0.5)
    (verdict,) = judge([scene_stats("alone", _shifted(refl, 0.1), scl)])
    assert verdict.action == "keep"
    assert verdict.offset_shift == 0.0
    assert "no other date of the same area is darker in every band" in verdict.reason


def test_negative_reflectance_the_offset_does_not_explain_is_dropped() -> None:
    rng = np.random.default_rng(6)
    refl, scl = _scene(rng, soil_share=0.5)
    (verdict,) = judge([scene_stats("broken", _shifted(refl, -0.25), scl)])
    assert verdict.action == "drop"
    assert "stay negative with the BOA offset added back" in verdict.reason


def test_scenes_with_too_few_clear_pixels_are_not_judged() -> None:
    rng = np.random.default_rng(7)
    refl, scl = _scene(rng, soil_share=0.5)
    scl[:] = 9
    scl[0, :10] = 4
    (verdict,) = judge([scene_stats("cloudy", _shifted(refl, -0.1), scl)], CheckConfig(min_clear_pixels=50))
    assert verdict.action == "keep"
    assert verdict.reason == ""


# ---------------------------------------------------------------------------------------------
# The real Earth Search v1 item, its flag lying in both directions, through load_reflectance
# ---------------------------------------------------------------------------------------------


def _variant(base: dict, item_id: str, day: int, flag: bool, offset: float | None = None) -> dict:
    d = copy.deepcopy(base)
    d["id"] = item_id
    d["properties"]["datetime"] = f"2025-07-{day:02d}T13:19:22Z"
    d["properties"]["earthsearch:boa_offset_applied"] = flag
    if offset is not None:
        for asset in d["assets"].values():
            for rb in asset.get("raster:bands", []):
                if "offset" in rb:
                    rb["offset"] = offset
    return d


def test_earth_search_flag_lying_both_ways_is_corrected_and_a_broken_scene_dropped(tmp_path: Path) -> None:
    base = next(i for i in _items("earth_search_v1") if i["id"] == "S2B_20EPT_20250731_0_L2A")
    specs = [
        # (id, flag in the metadata, how the test writes the DNs, raster:bands offset)
        ("truthful", True, "offset_removed", None),
        ("flag-false-but-shifted", False, "offset_removed", None),  # earth-search#66: 0.1 too dark if trusted
        ("flag-true-but-raw", True, "raw_with_offset", None),  # 0.1 too bright if trusted
        ("broken-offset", False, "raw_with_offset", -0.3),  # 0.2 too dark: no offset error explains it
    ]
    items, grid = [], None
    for day, (item_id, flag, encoding, offset) in enumerate(specs, start=1):
        item, grid = localise(_variant(base, item_id, day, flag, offset), tmp_path / item_id, encoding, seed=11)
        items.append(item)
    assert grid is not None
    loaded = load_reflectance(items, BANDS, grid, chunk_px=16)
    assert loaded.items == ("truthful", "flag-false-but-shifted", "flag-true-but-raw")
    assert [i for i, _ in loaded.dropped] == ["broken-offset"]
    assert loaded.dropped[0][1].startswith("data check: ")
    corrected = dict(loaded.corrected)
    assert set(corrected) == {"flag-false-but-shifted", "flag-true-but-raw"}
    assert "corrected by +0.1" in corrected["flag-false-but-shifted"]
    assert "corrected by -0.1" in corrected["flag-true-but-raw"]
    ds = loaded.reflectance.compute()
    clear = np.isin(np.repeat(np.repeat(_scl20(), 2, axis=0), 2, axis=1), (4, 5))
    for band in BANDS:
        truth = _truth(band, 11 + BANDS.index(band))[clear]
        for t in range(3):  # every kept scene at the true reflectance
            np.testing.assert_allclose(ds[band].values[t][clear], truth, atol=2e-6, err_msg=f"{band} {t}")
    assert "data-check" in ds["red"].attrs["scaling_rule"]
