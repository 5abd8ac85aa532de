"""Size guards checked before any imagery is searched or loaded."""

from __future__ import annotations

from mrv.errors import ConfigError
from mrv.grid import Grid

__all__ = ["aoi_area_km2", "check_aoi_size"]


def aoi_area_km2(grid: Grid) -> float:
    """Area of the project grid in km²."""
    return grid.width * grid.height * grid.resolution_m**2 / 1e6


def check_aoi_size(grid: Grid, *, max_km2: float, fields: str = "region.fields") -> None:
    """Refuse a project grid larger than ``max_km2`` (one run loads the whole grid per round)."""
    area = aoi_area_km2(grid)
    if area > max_km2:
        w_km = grid.width * grid.resolution_m / 1000
        h_km = grid.height * grid.resolution_m / 1000
        raise ConfigError(
            f"The area of interest (the grid around {fields}, bounds {grid.bounds} in {grid.crs}) is "
            f"{w_km:,.1f} x {h_km:,.1f} km = {area:,.0f} km², above imagery.max_aoi_km2 = {max_km2:,.0f} km². "
            "Tile the region into several runs with fewer fields each, shrink region.buffer_m, or raise "
            "imagery.max_aoi_km2 if the machine has the memory for it."
        )
