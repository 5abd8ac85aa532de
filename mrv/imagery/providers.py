"""Provider profiles: where a STAC API lives and what its Sentinel-2 L2A items look like.

Profiles are small YAML files of kind ``providers`` (shipped in ``mrv/profiles/providers/``; looked up by
:func:`mrv.resources.find_profile`), one per provider and collection family.
They are configuration only; nothing here contacts a provider.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mrv.errors import ConfigError
from mrv.resources import PACKAGE_PROFILES, find_profile

__all__ = ["ProviderProfile", "load_profile"]

#: The provider profiles shipped with the package.
PROFILE_DIR = PACKAGE_PROFILES / "providers"

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
        raise ConfigError(
            f"Provider profile {source} lacks '{key}'. Add it (see mrv/profiles/providers/earth_search.yaml)."
        )
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


def load_profile(name_or_path: str | Path, *, config_path: Path | None = None) -> ProviderProfile:
    """A profile by name (``earth_search``) or by path to a YAML file (see :func:`mrv.resources.find_profile`)."""
    path = find_profile("providers", name_or_path, config_path=config_path)
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
