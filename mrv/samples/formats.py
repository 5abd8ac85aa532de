"""Column-mapping profiles that describe how one agency's sample file is laid out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

from mrv.errors import ConfigError

#: Canonical column roles a profile may map. Required ones are checked in :func:`load_format`.
ROLES = (
    "sample_id", "site_id", "field_id", "submitter", "x", "y", "lon", "lat", "epsg", "sampling_date",
    "top", "bottom", "soc", "bulk_density", "coarse_fragments", "method",
)  # fmt: skip
REQUIRED = ("sample_id", "sampling_date", "top", "bottom", "soc")

#: SOC concentration units and the factor to g/kg.
SOC_UNITS = {"g_kg": 1.0, "percent": 10.0, "mass_percent": 10.0}


@dataclass(frozen=True)
class SampleFormat:
    name: str
    columns: dict[str, str]
    """Canonical role -> column name in the file."""
    soc_unit: Literal["g_kg", "percent", "mass_percent"]
    depth_unit: Literal["cm", "m"]
    epsg: int | None = None
    """CRS of the coordinates when the file has no ``epsg`` column."""
    description: str = ""

    @property
    def depth_factor_cm(self) -> float:
        return 100.0 if self.depth_unit == "m" else 1.0


def load_format(name_or_path: str | Path, *, search_dirs: tuple[Path, ...]) -> SampleFormat:
    """Load a profile by name (``<dir>/<name>.yaml`` in ``search_dirs``) or by path."""
    candidates = [Path(name_or_path)] + [d / f"{name_or_path}.yaml" for d in search_dirs]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise ConfigError(
            f"Sample format '{name_or_path}' not found (looked in {[str(d) for d in search_dirs]}). "
            "Give the name of a profile in configs/sample_formats/ or a path to a profile YAML."
        )
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = set(raw) - {"name", "description", "columns", "soc_unit", "depth_unit", "epsg"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}.")
    cols = raw.get("columns") or {}
    bad_roles = set(cols) - set(ROLES)
    if bad_roles:
        raise ConfigError(f"{path}: unknown column role(s) {sorted(bad_roles)}; allowed: {list(ROLES)}.")
    missing = [r for r in REQUIRED if r not in cols]
    has_xy = {"x", "y"} <= set(cols) or {"lon", "lat"} <= set(cols)
    if missing or not has_xy:
        raise ConfigError(f"{path}: columns must map {list(REQUIRED)} and x/y or lon/lat; missing {missing}.")
    if "epsg" not in cols and raw.get("epsg") is None:
        raise ConfigError(f"{path}: say which CRS the coordinates are in: an 'epsg' column or a fixed 'epsg:' value.")
    soc_unit = raw.get("soc_unit", "g_kg")
    if soc_unit not in SOC_UNITS:
        raise ConfigError(f"{path}: soc_unit must be one of {sorted(SOC_UNITS)}, got {soc_unit!r}.")
    depth_unit = raw.get("depth_unit", "cm")
    if depth_unit not in ("cm", "m"):
        raise ConfigError(f"{path}: depth_unit must be 'cm' or 'm', got {depth_unit!r}.")
    return SampleFormat(
        name=str(raw.get("name", path.stem)),
        columns={str(k): str(v) for k, v in cols.items()},
        soc_unit=soc_unit,
        depth_unit=depth_unit,
        epsg=int(raw["epsg"]) if raw.get("epsg") is not None else None,
        description=str(raw.get("description", "")),
    )
