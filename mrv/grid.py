"""The project grid: one explicit CRS, bounds and pixel size shared by every raster of a run."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from affine import Affine
from pyproj import CRS, Transformer

from mrv.errors import ConfigError

__all__ = [
    "Grid",
    "Tile",
    "tiles",
]

if TYPE_CHECKING:
    from odc.geo.geobox import GeoBox


@dataclass(frozen=True)
class Grid:
    """A north-up raster grid.

    ``bounds`` are ``(left, bottom, right, top)`` in metres of ``crs``; they are multiples of
    ``resolution_m`` so that grids built from different inputs align pixel for pixel.
    """

    crs: str
    bounds: tuple[float, float, float, float]
    resolution_m: float

    def __post_init__(self) -> None:
        if not CRS.from_user_input(self.crs).is_projected:
            raise ConfigError(f"Grid CRS {self.crs} is geographic; use a projected CRS in metres (e.g. UTM).")

    @classmethod
    def covering(
        cls, bounds: tuple[float, float, float, float], *, crs: str, resolution_m: float, buffer_m: float = 0.0
    ) -> Grid:
        """The smallest aligned grid covering ``bounds`` (in ``crs``) plus ``buffer_m`` on every side."""
        r = resolution_m
        left = math.floor((bounds[0] - buffer_m) / r) * r
        bottom = math.floor((bounds[1] - buffer_m) / r) * r
        right = math.ceil((bounds[2] + buffer_m) / r) * r
        top = math.ceil((bounds[3] + buffer_m) / r) * r
        return cls(crs=crs, bounds=(left, bottom, right, top), resolution_m=r)

    @property
    def width(self) -> int:
        return round((self.bounds[2] - self.bounds[0]) / self.resolution_m)

    @property
    def height(self) -> int:
        return round((self.bounds[3] - self.bounds[1]) / self.resolution_m)

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def transform(self) -> Affine:
        return Affine(self.resolution_m, 0.0, self.bounds[0], 0.0, -self.resolution_m, self.bounds[3])

    @property
    def pixel_area_ha(self) -> float:
        return self.resolution_m**2 / 10_000.0

    def window(self, row_off: int, col_off: int, height: int, width: int) -> Grid:
        """The sub-grid of ``height`` x ``width`` pixels starting at pixel ``(row_off, col_off)``; same CRS and pixels."""
        if not (0 <= row_off < row_off + height <= self.height and 0 <= col_off < col_off + width <= self.width):
            raise ValueError(f"window {(row_off, col_off, height, width)} is not inside the {self.shape} grid")
        r = self.resolution_m
        left, top = self.bounds[0] + col_off * r, self.bounds[3] - row_off * r
        return Grid(crs=self.crs, bounds=(left, top - height * r, left + width * r, top), resolution_m=r)

    def geobox(self) -> GeoBox:
        from odc.geo.geobox import GeoBox

        return GeoBox((self.height, self.width), self.transform, self.crs)

    def bbox_wgs84(self) -> tuple[float, float, float, float]:
        """Bounds in EPSG:4326 lon/lat (densified edges), as STAC searches expect."""
        tr = Transformer.from_crs(self.crs, "EPSG:4326", always_xy=True)
        west, south, east, north = tr.transform_bounds(*self.bounds, densify_pts=21)
        return (west, south, east, north)

    def x_coords(self) -> list[float]:
        r = self.resolution_m
        return [self.bounds[0] + (i + 0.5) * r for i in range(self.width)]

    def y_coords(self) -> list[float]:
        r = self.resolution_m
        return [self.bounds[3] - (j + 0.5) * r for j in range(self.height)]


@dataclass(frozen=True)
class Tile:
    """One tile of a grid: pixel offsets and size in the parent grid, and its name (``r000c001``)."""

    row: int
    col: int
    row_off: int
    col_off: int
    height: int
    width: int

    @property
    def name(self) -> str:
        return f"r{self.row:03d}c{self.col:03d}"

    def grid(self, parent: Grid) -> Grid:
        return parent.window(self.row_off, self.col_off, self.height, self.width)


def tiles(grid: Grid, tile_px: int) -> tuple[Tile, ...]:
    """Row-major tiles of at most ``tile_px`` x ``tile_px`` pixels covering ``grid`` without overlap.

    Tiles share the parent's pixel lattice, so per-pixel results computed tile by tile and
    mosaicked equal those of the whole grid.
    """
    if tile_px < 1:
        raise ValueError(f"tile_px must be positive, got {tile_px}")
    h, w = grid.shape
    return tuple(
        Tile(row=i, col=j, row_off=r, col_off=c, height=min(tile_px, h - r), width=min(tile_px, w - c))
        for i, r in enumerate(range(0, h, tile_px))
        for j, c in enumerate(range(0, w, tile_px))
    )
