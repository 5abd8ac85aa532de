"""Build a complete synthetic monitoring region on disk (the I/O edge of mrv.synthetic).

Output layout under ``out_dir``::

    fields.geojson                           # RFC 7946, EPSG:4326
    stac/collection.json, stac/items/...     # Sentinel-2 L2A COGs + STAC (see stac_writer)
    samples/lab_<round>.csv                  # every round
    samples/crowd_<round>.csv                # first round only
    truth/soc_stock_0_30cm_<round>.tif       # float32 t C/ha on the 10 m grid
    truth/fields_truth.csv                   # field_id, round, true mean stock (0-30 cm; baseline soil mass)
    truth/crowd_defects_<round>.json         # ids of the planted crowd defects
    spec.json                                # the SceneSpec used (provenance)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
from pyproj import Transformer
from shapely.geometry import Polygon, mapping
from shapely.geometry.polygon import orient

from mrv.errors import ConfigError
from mrv.synthetic.reflectance import make_acquisitions
from mrv.synthetic.samples_writer import make_crowd_samples, make_lab_samples, write_csv
from mrv.synthetic.spec import SceneSpec
from mrv.synthetic.stac_writer import write_stac
from mrv.synthetic.truth import RegionTruth, make_truth

log = logging.getLogger(__name__)

_DEFAULT_SPEC = SceneSpec()
_MANAGED = ("stac", "samples", "truth", "fields.geojson", "spec.json")


@dataclass(frozen=True)
class RegionPaths:
    """Where :func:`build_region` put each product (all absolute-or-as-given paths)."""

    root: Path
    collection: Path
    fields: Path
    lab_samples: dict[str, Path]
    crowd_samples: dict[str, Path]
    truth: dict[str, Path]


def region_paths(root: Path, spec: SceneSpec) -> RegionPaths:
    """The paths :func:`build_region` writes for ``spec`` under ``root`` (nothing is written)."""
    names = [r.name for r in spec.rounds]
    return RegionPaths(
        root=root,
        collection=root / "stac" / "collection.json",
        fields=root / "fields.geojson",
        lab_samples={n: root / "samples" / f"lab_{n}.csv" for n in names},
        crowd_samples={names[0]: root / "samples" / f"crowd_{names[0]}.csv"},
        truth={n: root / "truth" / f"soc_stock_0_30cm_{n}.tif" for n in names},
    )


def fields_geojson(truth: RegionTruth) -> dict[str, object]:
    """Field polygons as an RFC 7946 FeatureCollection (EPSG:4326 lon/lat, CCW rings).

    Properties: ``field_id``, ``farm_id``, ``name``, ``practice``, ``area_ha`` (computed in the
    projected CRS of the spec).
    """
    spec = truth.spec
    to_ll = Transformer.from_crs(spec.crs, "EPSG:4326", always_xy=True)
    fl = truth.fields
    features = []
    for i, poly in enumerate(fl.polygons):
        xs, ys = zip(*poly.exterior.coords, strict=True)
        lon, lat = to_ll.transform(list(xs), list(ys))
        ring = [(round(a, 7), round(b, 7)) for a, b in zip(lon, lat, strict=True)]
        geom = orient(Polygon(ring), sign=1.0)
        features.append(
            {
                "type": "Feature",
                "id": fl.field_ids[i],
                "geometry": mapping(geom),
                "properties": {
                    "field_id": fl.field_ids[i],
                    "farm_id": fl.farm_ids[i],
                    "name": fl.names[i],
                    "practice": fl.practices[i],
                    "area_ha": round(poly.area / 10000.0, 3),
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


def _write_truth_raster(path: Path, arr: np.ndarray, spec: SceneSpec) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=spec.width_px,
        height=spec.height_px,
        count=1,
        dtype="float32",
        crs=spec.crs,
        transform=spec.transform,
        nodata=None,
        compress="deflate",
        predictor=3,
        tiled=True,
        blockxsize=256,
        blockysize=256,
    ) as dst:
        dst.write(arr.astype(np.float32), 1)
        dst.set_band_description(1, "soc_stock_0_30cm_t_ha")
        dst.update_tags(1, units="t C/ha", depth="0-30 cm", source="mrv.synthetic truth")


def prepare_output_dir(out_dir: Path, overwrite: bool, managed: tuple[str, ...] = _MANAGED) -> None:
    """Create ``out_dir``; a non-empty one only with ``overwrite``, which removes the ``managed`` entries first."""
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise ConfigError(
                f"Output directory {out_dir} is not empty; choose an empty directory or pass "
                "overwrite=True to replace a previously generated region."
            )
        for name in managed:
            p = out_dir / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def build_region(
    out_dir: Path,
    spec: SceneSpec = _DEFAULT_SPEC,
    *,
    overwrite: bool = False,
) -> RegionPaths:
    """Generate the synthetic region described by ``spec`` into ``out_dir``.

    Raises :class:`~mrv.errors.ConfigError` if ``out_dir`` is not empty and ``overwrite`` is
    false. With ``overwrite=True`` only the generator's own products are replaced.
    """
    out_dir = Path(out_dir)
    prepare_output_dir(out_dir, overwrite)
    paths = region_paths(out_dir, spec)
    truth = make_truth(spec)
    acquisitions = make_acquisitions(spec, truth)

    paths.fields.write_text(json.dumps(fields_geojson(truth), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    rows = []
    for rnd in spec.rounds:
        _write_truth_raster(paths.truth[rnd.name], truth.states[rnd.name].stock_0_30cm_t_ha, spec)
        means = truth.field_mean_stock(rnd.name)
        mass_means = truth.field_mean_stock(rnd.name, basis="baseline_mass")
        counts = np.bincount(truth.fields.field_index.ravel(), minlength=truth.fields.n + 1)
        for i, fid in enumerate(truth.fields.field_ids):
            rows.append(
                {
                    "field_id": fid,
                    "round": rnd.name,
                    "practice": truth.fields.practices[i],
                    "n_pixels": int(counts[i + 1]),
                    "mean_soc_stock_t_ha": round(means[i], 4),
                    "mean_soc_stock_baseline_mass_t_ha": round(mass_means[i], 4),
                }
            )
        write_csv(paths.lab_samples[rnd.name], make_lab_samples(truth, rnd.name))
    write_csv(out_dir / "truth" / "fields_truth.csv", pd.DataFrame(rows))
    for name, path in paths.crowd_samples.items():
        crowd, defects = make_crowd_samples(truth, name)
        write_csv(path, crowd)
        (out_dir / "truth" / f"crowd_defects_{name}.json").write_text(
            json.dumps(dataclasses.asdict(defects), indent=1) + "\n", encoding="utf-8"
        )
    write_stac(out_dir / "stac", spec, acquisitions)
    (out_dir / "spec.json").write_text(json.dumps(dataclasses.asdict(spec), indent=1) + "\n", encoding="utf-8")
    log.info("built synthetic region %s (%d acquisitions)", out_dir, len(acquisitions))
    return paths
