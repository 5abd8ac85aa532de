"""Where named profiles (sample formats, methodologies, providers) are looked up.

A name is searched next to the run config first (``<config dir>/<kind>/``), then in
``./configs/<kind>/`` of the working directory, then in the ``configs/`` shipped beside the package.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def profile_dirs(kind: str, *, config_path: Path | None = None) -> tuple[Path, ...]:
    dirs = []
    if config_path is not None:
        dirs.append(Path(config_path).parent / kind)
    dirs += [Path.cwd() / "configs" / kind, PACKAGE_CONFIGS / kind]
    unique: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [u.resolve() for u in unique]:
            unique.append(d)
    return tuple(unique)
