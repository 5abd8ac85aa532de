"""Exact-area field totals: pixel-fraction weights, one area for the headline and the totals (VM0042 v2.2 Eq. 70
weights strata by their area)."""

from __future__ import annotations

import numpy as np
import pytest
from shapely import affinity
from shapely.geometry import Polygon, box

from mrv.accounting.aggregate import RoundMaps, simulate_zone_means, zone_summary
from mrv.fields import Field, field_coverage, field_index_raster
from mrv.grid import Grid


def _grid(width: int = 40, height: int = 30, res: float = 10.0) -> Grid:
    return Grid.covering((1000.0, 2000.0, 1000.0 + width * res, 2000.0 + height * res), crs="EPSG:32633",
                         resolution_m=res, buffer_m=0)  # fmt: skip


def test_square_on_pixel_corners_hand_example() -> None:
    g = _grid()
    t = g.transform
    x0, y0 = t.c, t.f
    # a 20 m x 20 m square offset by half a pixel: 4 quarter pixels, 4 half pixels (x2 each side), 1 full
    sq = box(x0 + 15, y0 - 35, x0 + 35, y0 - 15)
    cov = field_coverage((Field("a", {}, sq),), g)
    fr = sorted(np.round(cov.fraction, 9).tolist())
    assert fr == [0.25, 0.25, 0.25, 0.25, 0.5, 0.5, 0.5, 0.5, 1.0]
    assert cov.area_ha(g.pixel_area_ha)[0] * 10_000 == pytest.approx(sq.area)


@pytest.mark.parametrize("seed", range(6))
def test_fractions_sum_to_polygon_areas(seed: int) -> None:
    rng = np.random.default_rng(seed)
    g = _grid(60, 50)
    t = g.transform
    fields = []
    for i in range(4):
        cx, cy = t.c + rng.uniform(100, 500), t.f - rng.uniform(100, 400)
        w, h = rng.uniform(30, 150), rng.uniform(30, 150)
        poly = affinity.rotate(box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), rng.uniform(0, 90))
        if i == 0:  # a field with a hole
            poly = Polygon(poly.exterior, [box(cx - w / 8, cy - h / 8, cx + w / 8, cy + h / 8).exterior.coords])
        fields.append(Field(f"f{i}", {}, poly))
    cov = field_coverage(tuple(fields), g)
    assert np.all((cov.fraction > 0) & (cov.fraction <= 1 + 1e-12))
    areas = cov.area_ha(g.pixel_area_ha)
    np.testing.assert_allclose(areas, [f.area_ha for f in fields], rtol=1e-9)


def test_field_totals_use_the_polygon_area_and_exact_means() -> None:
    g = _grid(40, 30)
    t = g.transform
    tri = Polygon([(t.c + 12, t.f - 13), (t.c + 287, t.f - 41), (t.c + 133, t.f - 271)])
    fields = (Field("tri", {}, tri), Field("sq", {}, box(t.c + 303, t.f - 207, t.c + 377, t.f - 88)))
    xs = t.c + (np.arange(g.width) + 0.5) * 10
    mean = np.tile(40 + 0.05 * (xs - t.c), (g.height, 1))  # linear in x: the exact field mean is the centroid's
    maps = [RoundMaps("r", mean, np.full(g.shape, 2.0))]
    zones = field_index_raster(fields, g)
    sim = simulate_zone_means(maps, zones, 2, pixel_m=10.0, range_m=50.0, round_correlation=0.0, n_sim=20, seed=0)
    for i, f in enumerate(fields):
        s = zone_summary(sim, i, confidence=0.9)
        assert s["total_area_ha"] == pytest.approx(f.area_ha, rel=1e-9)
        assert s["mapped_area_ha"] == pytest.approx(f.area_ha, rel=1e-9)
        exact = 40 + 0.05 * (f.geometry.centroid.x - t.c)  # a linear field averages to its value at the centroid
        est = s["soc_stock_t_ha"]["mean"]  # type: ignore[index]
        # pixel values are the field at pixel centres: within a pixel's variation of the exact integral
        assert est == pytest.approx(exact, abs=0.05 * 10 / 2)
        assert s["soc_total_t"]["mean"] == pytest.approx(est * f.area_ha)  # type: ignore[index]
    proj = zone_summary(sim, 2, confidence=0.9)
    assert proj["total_area_ha"] == pytest.approx(sum(f.area_ha for f in fields), rel=1e-9)
    # pixel centres alone miss the headline area (the 1,301.3 vs 1,296.3 ha of the demo)
    centre_area = float((np.asarray(zones) >= 0).sum()) * g.pixel_area_ha
    assert abs(centre_area - proj["total_area_ha"]) > 1e-3  # type: ignore[operator]
