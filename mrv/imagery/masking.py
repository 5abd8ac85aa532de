"""Scene classification (SCL) masking of Sentinel-2 L2A observations.

SCL classes (ESA Sen2Cor L2A Product Definition, Table "Scene Classification values"):
0 no data, 1 saturated/defective, 2 dark area pixels / topographic shadow, 3 cloud shadow,
4 vegetation, 5 not vegetated (bare soil), 6 water, 7 unclassified, 8 cloud medium probability,
9 cloud high probability, 10 thin cirrus, 11 snow/ice.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

__all__ = ["CLEAR_LAND_CLASSES", "clear_mask"]

#: Classes that show the land surface clearly enough to see soil or the crop on it.
CLEAR_LAND_CLASSES: tuple[int, ...] = (4, 5)


def clear_mask(scl: xr.DataArray, keep: tuple[int, ...] = CLEAR_LAND_CLASSES) -> xr.DataArray:
    """True where the SCL class is one of ``keep``."""
    return scl.isin(np.asarray(keep, dtype=scl.dtype))
