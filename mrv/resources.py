"""Where named profiles (sample formats, methodologies, imagery providers) are looked up: one place.

A profile is a small YAML file named ``<name>.yaml`` in a directory of its kind (``providers``,
``methodologies``, ``sample_formats``). A name is searched, in this order:

1. next to the run config: ``<config dir>/<kind>/`` (a project's own or edited profiles);
2. the user directory: ``$MRV_PROFILE_DIR/<kind>/``, else ``$XDG_CONFIG_HOME/mrv/<kind>/``
   (default ``~/.config/mrv/<kind>/``);
3. the profiles shipped inside the package (``mrv/profiles/<kind>/``, package data of the wheel).

A value that names an existing file (``my_format.yaml``, absolute or relative to the run config) is
used as it is. The run config resolves every profile once, when it is loaded, and keeps its parsed
content, so profiles are part of the step cache keys and an installed package behaves like the checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

from mrv.errors import ConfigError

__all__ = [
    "available_profiles",
    "find_profile",
    "KINDS",
    "PACKAGE_PROFILES",
    "profile_dirs",
    "user_profile_dir",
]

PACKAGE_PROFILES = Path(__file__).resolve().parent / "profiles"
KINDS = ("providers", "methodologies", "sample_formats")


def user_profile_dir() -> Path:
    """The user's profile directory (``$MRV_PROFILE_DIR``, else ``$XDG_CONFIG_HOME/mrv``)."""
    explicit = os.environ.get("MRV_PROFILE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "mrv"


def profile_dirs(kind: str, *, config_path: Path | None = None) -> tuple[Path, ...]:
    """Existing directories searched for profiles of ``kind``, most specific first."""
    if kind not in KINDS:
        raise ValueError(f"unknown profile kind {kind!r}; expected one of {KINDS}")
    dirs: list[Path] = []
    if config_path is not None:
        dirs.append(Path(config_path).resolve().parent / kind)
    dirs += [user_profile_dir() / kind, PACKAGE_PROFILES / kind]
    unique: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [u.resolve() for u in unique]:
            unique.append(d)
    return tuple(unique)


def available_profiles(kind: str, *, config_path: Path | None = None) -> list[str]:
    """Names of every profile of ``kind`` that :func:`find_profile` can resolve."""
    return sorted({p.stem for d in profile_dirs(kind, config_path=config_path) for p in d.glob("*.yaml")})


def find_profile(kind: str, name_or_path: str | Path, *, config_path: Path | None = None) -> Path:
    """The YAML file of profile ``name_or_path`` of ``kind``; :class:`ConfigError` naming the choices if none.

    A value ending in ``.yaml``/``.yml`` or containing a path separator is a file path (relative to the
    run config's directory when one is given); anything else is a profile name.
    """
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or "/" in text or os.sep in text:
        path = Path(text).expanduser()
        if not path.is_absolute() and config_path is not None:
            path = Path(config_path).resolve().parent / path
        if not path.is_file():
            raise ConfigError(f"{kind.replace('_', ' ')} profile file {path} does not exist. Check the path.")
        return path
    for d in profile_dirs(kind, config_path=config_path):
        candidate = d / f"{text}.yaml"
        if candidate.is_file():
            return candidate
    choices = ", ".join(available_profiles(kind, config_path=config_path)) or "none found"
    raise ConfigError(
        f"Unknown {kind.replace('_', ' ').rstrip('s')} profile '{text}'. Available: {choices}. "
        f"Or give a path to a profile YAML, or add {text}.yaml to {user_profile_dir() / kind}."
    )
