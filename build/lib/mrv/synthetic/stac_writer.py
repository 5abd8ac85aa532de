"""Write synthetic acquisitions as Cloud-Optimized GeoTIFFs and a static STAC catalog.

Layout (self-contained, relative hrefs)::

    stac/collection.json                         # id "sentinel-2-l2a"
    stac/items/<item_id>/<item_id>.json          # one item per acquisition
    stac/items/<item_id>/{B02,B03,B04,B08,B11,B12,SCL}.tif

Items mimic Earth Search v1 ``sentinel-2-l2a`` items (asset keys, ``eo:bands``,
``raster:bands``, asset-level ``proj:shape``/``proj:transform``, ``s2:*`` and ``mgrs:*``
properties). ``raster:bands`` scale/offset follow the processing baseline: 0.0001/-0.1 for
baselines >= 04.00, 0.0001/0 below, and omitted entirely for items whose baseline equals
``spec.no_scale_offset_baseline`` (Planetary Computer convention).
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import rasterio
from affine import Affine
from numpy.typing import NDArray
from pyproj import Transformer
from pystac.layout import TemplateLayoutStrategy
from shapely.geometry import Polygon, mapping

from mrv.synthetic.reflectance import BANDS, Acquisition, encode_dn
from mrv.synthetic.spec import SceneSpec, baseline_has_offset

log = logging.getLogger(__name__)

COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
STAC_EXTENSIONS: list[str] = [
    "https://stac-extensions.github.io/grid/v1.1.0/schema.json",
    "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json",
    "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "https://stac-extensions.github.io/sentinel-2/v1.0.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
]
_MGRS_ROW_LETTERS = "ABCDEFGHJKLMNPQRSTUV"
_MGRS_COL_SETS = ("ABCDEFGH", "JKLMNPQR", "STUVWXYZ")
_LAT_BANDS = "CDEFGHJKLMNPQRSTUVWX"


def write_cog(
    path: Path,
    data: NDArray[np.generic],
    *,
    transform: Affine,
    crs: str,
    nodata: float | None = 0,
    resampling: str = "average",
) -> None:
    """Write one band as a COG (deflate, predictor 2, 256 px blocks, auto overviews)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows, cols = data.shape
    with rasterio.open(
        path,
        "w",
        driver="COG",
        width=cols,
        height=rows,
        count=1,
        dtype=str(data.dtype),
        crs=crs,
        transform=transform,
        nodata=nodata,
        compress="deflate",
        predictor=2,
        blocksize=256,
        overviews="AUTO",
        overview_resampling=resampling,
    ) as dst:
        dst.write(data, 1)


def mgrs_tile(spec: SceneSpec) -> tuple[int, str, str]:
    """(UTM zone, latitude band, 100 km grid square) of the region centre.

    Military Grid Reference System lettering (NGA, DMA TM 8358.1, ch. 3): column letters
    cycle through three 8-letter sets by zone, row letters through 20 letters with a 5-row
    offset in even zones.
    """
    minx, miny, maxx, maxy = spec.bounds
    to_ll = Transformer.from_crs(spec.crs, "EPSG:4326", always_xy=True)
    lon, lat = to_ll.transform((minx + maxx) / 2, (miny + maxy) / 2)
    zone = int(math.floor((lon + 180.0) / 6.0)) + 1
    band = _LAT_BANDS[min(max(int(math.floor((lat + 80.0) / 8.0)), 0), len(_LAT_BANDS) - 1)]
    utm = Transformer.from_crs("EPSG:4326", f"EPSG:{(32600 if lat >= 0 else 32700) + zone}", always_xy=True)
    e, n = utm.transform(lon, lat)
    col = _MGRS_COL_SETS[(zone - 1) % 3][int(e // 100000) - 1]
    row_shift = 5 if zone % 2 == 0 else 0
    row = _MGRS_ROW_LETTERS[(int(n // 100000) + row_shift) % 20]
    return zone, band, col + row


def footprint_wgs84(spec: SceneSpec) -> Polygon:
    """Region outline in EPSG:4326 (lon/lat): the four grid corners, counter-clockwise."""
    minx, miny, maxx, maxy = spec.bounds
    xs, ys = [minx, maxx, maxx, minx], [miny, miny, maxy, maxy]
    to_ll = Transformer.from_crs(spec.crs, "EPSG:4326", always_xy=True)
    lon, lat = to_ll.transform(xs, ys)
    return Polygon([(round(x, 7), round(y, 7)) for x, y in zip(lon, lat, strict=True)])


def item_id(acq: Acquisition, spec: SceneSpec) -> str:
    """Earth Search style id, e.g. ``S2B_33UWP_20210412_0_L2A``."""
    zone, band, square = mgrs_tile(spec)
    sat = "S2A" if acq.platform == "sentinel-2a" else "S2B"
    return f"{sat}_{zone}{band}{square}_{acq.date.replace('-', '')}_0_L2A"


def _raster_band(spec: SceneSpec, baseline: str, resolution: float, dtype: str, reflectance: bool) -> dict[str, Any]:
    rb: dict[str, Any] = {"nodata": 0, "data_type": dtype, "spatial_resolution": resolution}
    if reflectance and baseline != spec.no_scale_offset_baseline:
        rb["scale"] = 0.0001
        rb["offset"] = -0.1 if baseline_has_offset(baseline) else 0.0
    return rb


def _acq_datetime(acq: Acquisition) -> datetime:
    base = datetime.fromisoformat(acq.date).replace(tzinfo=UTC)
    return base + timedelta(hours=9, minutes=56, seconds=acq.index_in_round * 7 + 19)


def _make_item(acq: Acquisition, spec: SceneSpec, item_dir: Path) -> pystac.Item:
    iid = item_id(acq, spec)
    zone, lat_band, square = mgrs_tile(spec)
    geom = footprint_wgs84(spec)
    dt = _acq_datetime(acq)
    created = (dt + timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    pb = acq.processing_baseline
    stamp = dt.strftime("%Y%m%dT%H%M%S")
    props: dict[str, Any] = {
        "created": created,
        "updated": created,
        "platform": acq.platform,
        "constellation": "sentinel-2",
        "instruments": ["msi"],
        "eo:cloud_cover": round(acq.cloud_cover_pct, 4),
        "proj:epsg": spec.crs_epsg,
        "proj:code": spec.crs,
        "proj:centroid": {"lat": round(geom.centroid.y, 5), "lon": round(geom.centroid.x, 5)},
        "mgrs:utm_zone": zone,
        "mgrs:latitude_band": lat_band,
        "mgrs:grid_square": square,
        "grid:code": f"MGRS-{zone}{lat_band}{square}",
        "s2:processing_baseline": pb,
        "s2:product_type": "S2MSI2A",
        "s2:product_uri": (
            f"{iid[:3]}_MSIL2A_{stamp}_N{pb.replace('.', '')}_R079_T{zone}{lat_band}{square}_{stamp}.SAFE"
        ),
        "s2:high_proba_clouds_percentage": round(acq.scl_pct(9), 4),
        "s2:medium_proba_clouds_percentage": round(acq.scl_pct(8), 4),
        "s2:thin_cirrus_percentage": round(acq.scl_pct(10), 4),
        "s2:cloud_shadow_percentage": round(acq.scl_pct(3), 4),
        "s2:vegetation_percentage": round(acq.scl_pct(4), 4),
        "s2:not_vegetated_percentage": round(acq.scl_pct(5), 4),
        "s2:nodata_pixel_percentage": 0.0,
        "s2:sequence": "0",
    }
    item = pystac.Item(
        id=iid,
        geometry=mapping(geom),
        bbox=list(geom.bounds),
        datetime=dt,
        properties=props,
        stac_extensions=list(STAC_EXTENSIONS),
    )
    for band in BANDS:
        f = band.resolution_factor
        res = spec.resolution_m * f
        data = encode_dn(acq.reflectance[band.key], pb)
        tr = spec.transform if f == 1 else spec.transform_20m
        path = item_dir / f"{band.name}.tif"
        write_cog(path, data, transform=tr, crs=spec.crs)
        item.add_asset(
            band.key,
            pystac.Asset(
                href=f"./{path.name}",
                media_type=COG_MEDIA_TYPE,
                title=band.title,
                roles=["data", "reflectance"],
                extra_fields={
                    "eo:bands": [
                        {
                            "name": band.name,
                            "common_name": band.key,
                            "center_wavelength": band.center_wavelength,
                            "full_width_half_max": band.full_width_half_max,
                        }
                    ],
                    "gsd": _num(res),
                    "proj:shape": list(data.shape),
                    "proj:transform": [_num(v) for v in list(tr)[:6]],
                    "raster:bands": [_raster_band(spec, pb, _num(res), "uint16", True)],
                },
            ),
        )
    res20 = spec.resolution_m * 2
    scl_path = item_dir / "SCL.tif"
    write_cog(scl_path, acq.scl, transform=spec.transform_20m, crs=spec.crs, resampling="nearest")
    item.add_asset(
        "scl",
        pystac.Asset(
            href=f"./{scl_path.name}",
            media_type=COG_MEDIA_TYPE,
            title="Scene classification map (SCL)",
            roles=["data"],
            extra_fields={
                "gsd": _num(res20),
                "proj:shape": list(acq.scl.shape),
                "proj:transform": [_num(v) for v in list(spec.transform_20m)[:6]],
                "raster:bands": [_raster_band(spec, pb, _num(res20), "uint8", False)],
            },
        ),
    )
    return item


def _num(v: float) -> float | int:
    """JSON-friendly number: integral floats become ints (``10`` not ``10.0``)."""
    return int(v) if float(v).is_integer() else float(v)


def write_stac(stac_dir: Path, spec: SceneSpec, acquisitions: tuple[Acquisition, ...]) -> Path:
    """Write COGs and a self-contained STAC collection; return the collection.json path.

    Asset hrefs are written relative to their item (``./B04.tif``), links relative to the
    collection, so the catalog can be moved or committed as is.
    """
    stac_dir = Path(stac_dir).resolve()
    geom = footprint_wgs84(spec)
    times = [_acq_datetime(a) for a in acquisitions]
    collection = pystac.Collection(
        id="sentinel-2-l2a",
        title="Sentinel-2 Level-2A (synthetic)",
        description=(
            "Synthetic Sentinel-2 L2A surface reflectance over a seeded test region, written "
            "by mrv.synthetic in the layout of Earth Search v1 (not real data)."
        ),
        extent=pystac.Extent(
            pystac.SpatialExtent([list(geom.bounds)]),
            pystac.TemporalExtent([[min(times), max(times)]]),
        ),
        license="proprietary",
        stac_extensions=[],
    )
    collection.set_self_href(str(stac_dir / "collection.json"))
    layout = TemplateLayoutStrategy(item_template="items/${id}")
    for acq in acquisitions:
        iid = item_id(acq, spec)
        item_dir = stac_dir / "items" / iid
        item = _make_item(acq, spec, item_dir)
        # Must be the first self href the item gets: later changes would rewrite the
        # relative asset hrefs ("./B04.tif") against the old location.
        collection.add_item(item, strategy=layout)
        if Path(item.get_self_href() or "") != item_dir / f"{iid}.json":
            raise RuntimeError(f"unexpected STAC item location {item.get_self_href()}")
        log.debug("wrote item %s (cloud cover %.1f %%)", iid, acq.cloud_cover_pct)
    collection.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return stac_dir / "collection.json"
