"""``mrv.synthetic.replicate``: a 2 x 2 replica of a 64 x 64 px generated region, checked against the base.

Truth is the base region on disk: every replica pixel must be the base pixel at the copy's offset, every field
the base field shifted by the copy's offset, and the pipeline's own imagery step must read the replica like
a generated region (a grid of the base grid plus one base width and height, and the composite at every
interior pixel of every copy equal to the one the base itself gives at the same place in the base).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
import yaml
from pystac.validation import JsonSchemaSTACValidator
from shapely import affinity

from mrv.config import load_config
from mrv.errors import ConfigError
from mrv.fields import read_fields
from mrv.pipeline import imagery
from mrv.pipeline.layout import RunLayout
from mrv.raster import read_raster
from mrv.synthetic import RegionPaths, SceneSpec, build_region
from mrv.synthetic.replicate import ReplicaSpec, copy_suffix, replicate_region

REPO = Path(__file__).resolve().parents[1]
BASE = SceneSpec(seed=11, width_px=64, height_px=64, n_fields=4, n_lab_sites=30, n_crowd=10)
COPIES = ReplicaSpec(copies_x=2, copies_y=2, write_truth=True, strip_rows=256)


@pytest.fixture(scope="module")
def regions(tmp_path_factory: pytest.TempPathFactory) -> tuple[RegionPaths, RegionPaths]:
    root = tmp_path_factory.mktemp("replicate")
    base = build_region(root / "base", BASE)
    return base, replicate_region(base.root, BASE, root / "replica", COPIES)


def _items(collection: Path) -> dict[str, pystac.Item]:
    coll = pystac.Collection.from_file(str(collection))
    return {it.id: it for it in coll.get_items(recursive=True)}


def _blocks(arr: np.ndarray, h: int, w: int) -> dict[tuple[int, int], np.ndarray]:
    """The replica cut into its copies: block (r, c) is rows r*h.., cols c*w.. ."""
    return {(r, c): arr[r * h : (r + 1) * h, c * w : (c + 1) * w] for r in range(2) for c in range(2)}


def test_replica_pixels_equal_base_at_offsets(regions: tuple[RegionPaths, RegionPaths]) -> None:
    base, rep = regions
    base_items, rep_items = _items(base.collection), _items(rep.collection)
    assert sorted(rep_items) == sorted(base_items)
    assert len(base_items) == 8
    for iid, item in base_items.items():
        for key, asset in item.assets.items():
            with (
                rasterio.open(asset.get_absolute_href()) as b,
                rasterio.open(rep_items[iid].assets[key].get_absolute_href()) as r,
            ):
                src, out = b.read(1), r.read(1)
                assert (r.height, r.width) == (2 * b.height, 2 * b.width)
                assert r.transform == b.transform
                assert r.crs == b.crs
                assert r.nodata == b.nodata
                assert r.dtypes == b.dtypes
                assert r.descriptions == b.descriptions
                assert r.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
                assert r.compression is not None
                assert r.compression.value.lower() == "deflate"
            for (row, col), block in _blocks(out, b.height, b.width).items():
                np.testing.assert_array_equal(block, src, err_msg=f"{iid} {key} copy ({row}, {col})")
    for name, path in base.truth.items():
        with rasterio.open(path) as b, rasterio.open(rep.truth[name]) as r:
            src, out = b.read(1), r.read(1)
        for block in _blocks(out, *src.shape).values():
            np.testing.assert_array_equal(block, src)


def test_items_validate_and_carry_the_replica_geometry(regions: tuple[RegionPaths, RegionPaths]) -> None:
    base, rep = regions
    validator = JsonSchemaSTACValidator()  # core item schema, from pystac's bundled copy (no network)
    base_items = _items(base.collection)
    for iid, item in _items(rep.collection).items():
        d = item.to_dict(include_self_link=False, transform_hrefs=False)
        validator.validate_core(d, pystac.STACObjectType.ITEM, d["stac_version"], href=item.get_self_href())
        b = base_items[iid]
        # the footprint: the base's upper-left corner, twice as wide and high (UTM -> lon/lat is near-affine)
        assert item.bbox is not None
        assert b.bbox is not None
        assert item.bbox[0] == pytest.approx(b.bbox[0], abs=1e-3)
        assert item.bbox[3] == pytest.approx(b.bbox[3], abs=1e-3)
        assert item.bbox[2] - item.bbox[0] == pytest.approx(2 * (b.bbox[2] - b.bbox[0]), rel=1e-2)
        assert item.bbox[3] - item.bbox[1] == pytest.approx(2 * (b.bbox[3] - b.bbox[1]), rel=1e-2)
        for key, asset in item.assets.items():
            ba = b.assets[key]
            h, w = ba.extra_fields["proj:shape"]
            assert asset.extra_fields["proj:shape"] == [2 * h, 2 * w]
            assert asset.extra_fields["proj:transform"] == ba.extra_fields["proj:transform"]
            with rasterio.open(asset.get_absolute_href()) as r:
                assert [r.height, r.width] == asset.extra_fields["proj:shape"]
            same = {k: v for k, v in asset.extra_fields.items() if not k.startswith("proj:")}
            assert same == {k: v for k, v in ba.extra_fields.items() if not k.startswith("proj:")}
        kept = {k: v for k, v in item.properties.items() if k != "proj:centroid"}
        assert kept == {k: v for k, v in b.properties.items() if k != "proj:centroid"}
        assert item.properties["proj:centroid"]["lon"] > b.properties["proj:centroid"]["lon"]
        assert item.properties["proj:centroid"]["lat"] < b.properties["proj:centroid"]["lat"]


def test_fields_are_unique_and_offset(regions: tuple[RegionPaths, RegionPaths]) -> None:
    base, rep = regions
    base_fields = {f.field_id: f for f in read_fields(base.fields, crs=BASE.crs)}
    rep_fields = read_fields(rep.fields, crs=BASE.crs)
    ids = [f.field_id for f in rep_fields]
    assert len(ids) == len(set(ids)) == 4 * len(base_fields)
    by_id = {f.field_id: f for f in rep_fields}
    step = BASE.width_px * BASE.resolution_m
    for fid, f in base_fields.items():
        for row in range(2):
            for col in range(2):
                got = by_id[fid + copy_suffix(row, col)]
                want = affinity.translate(f.geometry, xoff=col * step, yoff=-row * step)
                assert got.geometry.hausdorff_distance(want) < 0.05  # lon/lat rounded to 1e-7 deg (~1 cm)
                assert got.area_ha == pytest.approx(f.area_ha, rel=1e-4)  # the same ~1 cm on ~800 m of edge
    assert rep.lab_samples["2021"].read_bytes() == base.lab_samples["2021"].read_bytes()


def _config(root: Path, region: RegionPaths, name: str) -> Path:
    raw = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    raw.update(name=name, output_dir=str(root / name))
    raw["region"]["fields"] = str(region.fields)
    raw["imagery"]["catalog"] = str(region.collection)
    raw["rounds"] = raw["rounds"][:1]
    raw["rounds"][0]["samples"] = [{"path": str(region.lab_samples["2021"]), "source": "lab", "format": "lab_wide"}]
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_imagery_step_reads_the_replica(regions: tuple[RegionPaths, RegionPaths], tmp_path: Path) -> None:
    stacks = {}
    for name, region in zip(("base", "replica"), regions, strict=True):
        cfg = load_config(_config(tmp_path, region, name))
        stacks[name] = read_raster(imagery.run_round(cfg, cfg.rounds[0], RunLayout(cfg.output_dir.resolve())))
    (b, bgrid, bnames), (r, rgrid, rnames) = stacks["base"], stacks["replica"]
    assert rnames == bnames
    step = BASE.width_px * BASE.resolution_m
    # the grid covers the fields: the base's grid plus one base width east and one base height south. A field
    # vertex on the 10 m lattice may land up to ~1 cm either side of it after the lon/lat round trip (GeoJSON
    # at 1e-7 deg), so each edge may move by one pixel, outwards only, and never past the imagery.
    res = BASE.resolution_m
    want = (bgrid.bounds[0], bgrid.bounds[1] - step, bgrid.bounds[2] + step, bgrid.bounds[3])
    outward = (-1, -1, 1, 1)
    for got, exp, sign in zip(rgrid.bounds, want, outward, strict=True):
        assert (got - exp) * sign in (0.0, res)
    left, bottom, right, top = BASE.bounds
    assert rgrid.bounds[0] >= left
    assert rgrid.bounds[3] <= top
    assert rgrid.bounds[2] <= left + 2 * step
    assert rgrid.bounds[1] >= top - 2 * step
    # per-pixel composite: copy (r, c) of the replica equals the base, away from the 20 m resampling seams
    h, w = b.shape[1:]
    inner = (slice(None), slice(2, h - 2), slice(2, w - 2))
    assert np.isfinite(b[inner]).mean() > 0.25  # bare-soil composite values to compare, not only NaN
    for row in range(2):
        for col in range(2):
            r0 = round((rgrid.bounds[3] - (bgrid.bounds[3] - row * step)) / res)
            c0 = round((bgrid.bounds[0] + col * step - rgrid.bounds[0]) / res)
            block = r[:, r0 : r0 + h, c0 : c0 + w]
            np.testing.assert_allclose(block[inner], b[inner], rtol=1e-5, atol=1e-6, equal_nan=True)


def test_replica_refuses_bad_copies_and_a_missing_base(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must be >= 1"):
        ReplicaSpec(copies_x=0, copies_y=2)
    with pytest.raises(ConfigError, match="build_region"):
        replicate_region(tmp_path / "nothing", BASE, tmp_path / "out", ReplicaSpec(2, 2))


def test_replica_json_records_the_base(regions: tuple[RegionPaths, RegionPaths]) -> None:
    base, rep = regions
    meta = json.loads((rep.root / "replica.json").read_text())
    assert meta["replica"]["copies_x"] == 2
    assert meta["base_spec"]["width_px"] == BASE.width_px
    assert Path(meta["base"]) == base.root.resolve()
