"""Seeded synthetic soil-carbon monitoring regions (for tests, benchmarks and the demo).

On disk: :func:`build_region` writes Sentinel-2 L2A COGs + a static STAC catalog, field
polygons, lab and crowd sample CSVs and the hidden true SOC stock rasters.

In memory (pure, no files):

* :func:`make_truth` -> :class:`RegionTruth`: fields, clay, two-layer soil profile and true
  0-30 cm stock (t C/ha) per round, as numpy arrays on the 10 m grid;
* :func:`make_acquisitions` -> tuple of :class:`Acquisition`: surface reflectance and SCL;
* :func:`make_lab_samples` / :func:`make_crowd_samples` -> pandas DataFrames;
* :func:`soc_stock_t_ha`, :func:`encode_dn`, :func:`decode_dn`: the formulas used.
"""

from __future__ import annotations

from mrv.synthetic.build import RegionPaths, build_region, fields_geojson, region_paths
from mrv.synthetic.reflectance import (
    BAND_KEYS,
    BANDS,
    Acquisition,
    decode_dn,
    encode_dn,
    make_acquisitions,
)
from mrv.synthetic.samples_writer import (
    CROWD_COLUMNS,
    LAB_COLUMNS,
    CrowdDefects,
    make_crowd_samples,
    make_lab_samples,
)
from mrv.synthetic.spec import RoundSpec, SceneSpec
from mrv.synthetic.truth import (
    FieldLayout,
    RegionTruth,
    SoilState,
    make_fields,
    make_truth,
    soc_stock_t_ha,
)

__all__ = [
    "BAND_KEYS",
    "BANDS",
    "CROWD_COLUMNS",
    "LAB_COLUMNS",
    "Acquisition",
    "CrowdDefects",
    "FieldLayout",
    "RegionPaths",
    "RegionTruth",
    "RoundSpec",
    "SceneSpec",
    "SoilState",
    "build_region",
    "decode_dn",
    "encode_dn",
    "fields_geojson",
    "make_acquisitions",
    "make_crowd_samples",
    "make_fields",
    "make_lab_samples",
    "make_truth",
    "region_paths",
    "soc_stock_t_ha",
]
