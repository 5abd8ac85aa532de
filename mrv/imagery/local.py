"""A static STAC catalog on disk (the offline default): search by bbox, dates and cloud cover."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import pystac
from shapely.geometry import box, shape

from mrv.errors import ConfigError, ImageryError, NoImageryFound
from mrv.grid import Grid
from mrv.imagery.load import load_reflectance
from mrv.imagery.source import LoadedScenes, SearchRequest

__all__ = ["LocalCatalogSource"]


def _item_date(item: pystac.Item) -> dt.date:
    when = item.datetime or pystac.utils.str_to_datetime(item.properties["start_datetime"])
    return when.date()


class LocalCatalogSource:
    """Items of a self-contained STAC catalog or collection read with pystac."""

    name = "local"

    def __init__(self, catalog: Path, *, max_items: int = 2000) -> None:
        if max_items < 1:
            raise ConfigError(f"max_items must be at least 1, got {max_items}; set imagery.max_items to 1 or more.")
        self.catalog = Path(catalog)
        self.max_items = int(max_items)

    def _all_items(self) -> list[pystac.Item]:
        try:
            root = pystac.read_file(str(self.catalog))
        except (OSError, pystac.STACError, ValueError) as exc:
            raise ImageryError(
                f"Cannot read the local STAC catalog {self.catalog}: {exc}. Point imagery.catalog at a collection.json."
            ) from exc
        if not isinstance(root, pystac.Catalog):
            raise ImageryError(f"{self.catalog} is a STAC {type(root).__name__}, not a catalog or collection.")
        items = list(root.get_items(recursive=True))
        for item in items:
            item.make_asset_hrefs_absolute()
        return items

    def search(self, request: SearchRequest) -> list[pystac.Item]:
        aoi = box(*request.bbox_wgs84)
        found = []
        for item in self._all_items():
            if item.collection_id not in (None, request.collection):
                continue
            if not request.start <= _item_date(item) <= request.end:
                continue
            if float(item.properties.get("eo:cloud_cover", 0.0)) > request.max_cloud_pct:
                continue
            if item.geometry is None or not shape(item.geometry).intersects(aoi):
                continue
            found.append(item)
        if not found:
            raise NoImageryFound(
                f"No {request.collection} items in {self.catalog} intersect bbox {request.bbox_wgs84} between "
                f"{request.start} and {request.end} with cloud cover <= {request.max_cloud_pct}%. "
                "Widen the dates, raise imagery.max_cloud_pct or check the region."
            )
        if len(found) > self.max_items:
            raise ImageryError(
                f"The search of {request.collection} in {self.catalog} over bbox {request.bbox_wgs84} from "
                f"{request.start} to {request.end} matches {len(found)} items, more than max_items={self.max_items}. "
                "Narrow the dates or the AOI (or lower imagery.max_cloud_pct), or raise imagery.max_items if that "
                "many scenes are really wanted."
            )
        return sorted(found, key=lambda it: (it.datetime, it.id))

    def load(
        self,
        items: Sequence[pystac.Item],
        bands: Sequence[str],
        grid: Grid,
        *,
        chunk_px: int,
        check_grid: Grid | None = None,
    ) -> LoadedScenes:
        return load_reflectance(items, bands, grid, chunk_px=chunk_px, check_grid=check_grid)
