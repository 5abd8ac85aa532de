"""Band lookup and radiometric scaling against a real Earth Search item and other provider conventions."""

from __future__ import annotations

import copy

import pystac
import pytest

from mrv.errors import ImageryError
from mrv.imagery.bands import resolve_assets
from mrv.imagery.radiometry import band_scaling, baseline_at_least


def to_reflectance(dn: float, item: pystac.Item, key: str) -> float:
    s = band_scaling(item, key)
    return dn * s.scale + s.offset


def test_earth_search_assets_by_common_name(earth_search_item: pystac.Item) -> None:
    keys = resolve_assets(earth_search_item, ["red", "nir", "swir16", "scl"])
    assert keys == {"red": "red", "nir": "nir", "swir16": "swir16", "scl": "scl"}


def test_planetary_computer_style_keys_found_by_eo_bands(earth_search_item: pystac.Item) -> None:
    item = copy.deepcopy(earth_search_item)
    item.assets = {
        ("B04" if k == "red" else "SCL" if k == "scl" else k.upper()): a for k, a in earth_search_item.assets.items()
    }
    assert resolve_assets(item, ["red", "scl"]) == {"red": "B04", "scl": "SCL"}


def test_missing_band_is_a_clear_error(earth_search_item: pystac.Item) -> None:
    item = copy.deepcopy(earth_search_item)
    del item.assets["red"]
    assert resolve_assets(item, ["red"]) == {"red": "red-jp2"}  # the JPEG2000 twin, when there is no COG
    del item.assets["red-jp2"]
    with pytest.raises(ImageryError, match="no asset for band 'red'"):
        resolve_assets(item, ["red"])


def test_earth_search_v1_offset_is_not_applied_twice(earth_search_item: pystac.Item) -> None:
    # Baseline 05.11 with earthsearch:boa_offset_applied: the COG's DN 2500 already had the 1000 removed,
    # so it is 0.25 although raster:bands still says offset -0.1 (Element84/earth-search#9, #71).
    assert earth_search_item.properties["earthsearch:boa_offset_applied"] is True
    assert earth_search_item.assets["red"].extra_fields["raster:bands"][0]["offset"] == -0.1
    assert to_reflectance(2500, earth_search_item, "red") == pytest.approx(0.25)
    assert band_scaling(earth_search_item, "red").rule == "earthsearch:boa_offset_applied"
    flagged_false = copy.deepcopy(earth_search_item)
    flagged_false.properties["earthsearch:boa_offset_applied"] = False  # raw DNs claimed: raster:bands holds
    assert to_reflectance(2500, flagged_false, "red") == pytest.approx(0.15)
    assert band_scaling(flagged_false, "red").rule == "raster:bands"


def _strip_scaling(item: pystac.Item, baseline: str) -> pystac.Item:
    out = copy.deepcopy(item)
    out.properties["s2:processing_baseline"] = baseline
    del out.properties["earthsearch:boa_offset_applied"]
    for asset in out.assets.values():
        for rb in asset.extra_fields.get("raster:bands", []):
            rb.pop("scale", None)
            rb.pop("offset", None)
    return out


@pytest.mark.parametrize(("baseline", "expected"), [("03.01", 0.25), ("02.14", 0.25), ("04.00", 0.15), ("05.10", 0.15)])
def test_baseline_rule_when_provider_publishes_no_scaling(
    earth_search_item: pystac.Item, baseline: str, expected: float
) -> None:
    item = _strip_scaling(earth_search_item, baseline)
    assert to_reflectance(2500, item, "red") == pytest.approx(expected)
    assert band_scaling(item, "red").rule == "processing-baseline"


def test_missing_baseline_and_scaling_is_refused(earth_search_item: pystac.Item) -> None:
    item = _strip_scaling(earth_search_item, "05.00")
    del item.properties["s2:processing_baseline"]
    with pytest.raises(ImageryError, match="radiometric offset is unknown"):
        band_scaling(item, "red")


def test_baseline_comparison_is_numeric() -> None:
    assert baseline_at_least("05.11", "04.00")
    assert baseline_at_least("04.00", "04.00")
    assert not baseline_at_least("03.01", "04.00")
    assert not baseline_at_least(None, "04.00")
