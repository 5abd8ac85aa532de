"""Provider profiles: where a STAC API lives and what its Sentinel-2 L2A items look like.

Profiles are small YAML files in ``configs/providers/`` (one per provider and collection family).
They are configuration only; nothing here contacts a provider.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mrv.errors import ConfigError

#: ``configs/providers`` of the source tree this package was loaded from.
PROFILE_DIR = Path(__file__).resolve().parents[2] / "configs" / "providers"

SIGNING_SCHEMES = ("none", "planetary_computer")
AUTH_SCHEMES = ("none", "s3_credentials", "token")
BAND_NAMINGS = ("common", "band_id", "band_id_resolution")


@dataclass(frozen=True)
class ProviderProfile:
    """What the pipeline needs to know about one provider's STAC API."""

    name: str
    url: str
    collections: tuple[str, ...]
    default_collection: str
    band_naming: str
    """Informational: asset keys are resolved by ``eo:bands`` in :mod:`mrv.imagery.bands`."""
    raster_offsets_published: bool
    signing: str = "none"
    """``none`` or ``planetary_computer`` (asset hrefs need a SAS token)."""
    auth: str = "none"
    title: str = ""
    notes: str = ""

    @property
    def requires_signing(self) -> bool:
        return self.signing != "none"


def _field(raw: dict[str, Any], key: str, kind: type, source: Path, default: Any = None) -> Any:
    if key not in raw:
        if default is not None:
            return default
        raise ConfigError(f"Provider profile {source} lacks '{key}'. Add it (see configs/providers/earth_search.yaml).")
    value = raw[key]
    if not isinstance(value, kind):
        raise ConfigError(
            f"Provider profile {source}: '{key}' must be a {kind.__name__}, got {type(value).__name__} ({value!r})."
        )
    return value


def _choice(value: str, allowed: tuple[str, ...], key: str, source: Path) -> str:
    if value not in allowed:
        raise ConfigError(f"Provider profile {source}: '{key}' is {value!r}; use one of {', '.join(allowed)}.")
    return value


def available_profiles(directory: Path | None = None) -> list[str]:
    """Names of the profiles shipped in ``directory`` (default ``configs/providers``)."""
    return sorted(p.stem for p in (directory or PROFILE_DIR).glob("*.yaml"))


def load_profile(name_or_path: str | Path, *, directory: Path | None = None) -> ProviderProfile:
    """A profile by name (``earth_search``) or by path to a YAML file."""
    candidate = Path(name_or_path)
    is_file = candidate.suffix in (".yaml", ".yml")
    path = candidate if is_file else (directory or PROFILE_DIR) / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(available_profiles(directory)) or "none"
        raise ConfigError(f"No provider profile {path}. Known profiles: {known}; or give the path of a YAML profile.")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"Provider profile {path} is not valid YAML: {exc}. Fix the syntax.") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"Provider profile {path} must be a YAML mapping of keys to values.")
    url = _field(raw, "url", str, path)
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"Provider profile {path}: url {url!r} must start with http:// or https://.")
    collections = _field(raw, "collections", list, path)
    if not collections or not all(isinstance(c, str) and c for c in collections):
        raise ConfigError(f"Provider profile {path}: 'collections' must be a non-empty list of collection ids.")
    default = _field(raw, "default_collection", str, path, default=collections[0])
    if default not in collections:
        raise ConfigError(
            f"Provider profile {path}: default_collection {default!r} is not in collections {collections}."
        )
    return ProviderProfile(
        name=_field(raw, "name", str, path, default=path.stem),
        url=url.rstrip("/"),
        collections=tuple(collections),
        default_collection=default,
        band_naming=_choice(_field(raw, "band_naming", str, path), BAND_NAMINGS, "band_naming", path),
        raster_offsets_published=_field(raw, "raster_offsets_published", bool, path),
        signing=_choice(_field(raw, "signing", str, path, default="none"), SIGNING_SCHEMES, "signing", path),
        auth=_choice(_field(raw, "auth", str, path, default="none"), AUTH_SCHEMES, "auth", path),
        title=_field(raw, "title", str, path, default=""),
        notes=_field(raw, "notes", str, path, default="").strip(),
    )
