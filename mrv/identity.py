"""Which code made a run: the package version and the source revision, recorded in every manifest.

The revision comes from git when the package is imported from a checkout (``git rev-parse HEAD``),
otherwise from the build: ``MRV_SOURCE_REVISION`` in the environment, which the container image sets
from its ``MRV_SOURCE_REVISION`` build argument (``docker build --build-arg MRV_SOURCE_REVISION=$(git
rev-parse HEAD) .``). An installed wheel without either records ``null`` and says so.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

__all__ = [
    "DISTRIBUTION",
    "Identity",
    "identity",
    "package_version",
    "REVISION_ENV",
]

DISTRIBUTION = "soilcarbon-mrv"
REVISION_ENV = "MRV_SOURCE_REVISION"


@dataclass(frozen=True)
class Identity:
    """The code behind a run."""

    version: str
    """Version of the ``soilcarbon-mrv`` distribution (``0+unknown`` when not installed)."""
    revision: str | None
    """Source revision (a git commit id), or ``None`` when unknown."""
    revision_source: str
    """Where ``revision`` came from: ``git`` (the checkout), ``build`` (``MRV_SOURCE_REVISION``) or ``unknown``."""
    dirty: bool | None
    """True when the git checkout has uncommitted changes to tracked files; ``None`` without git."""


def package_version() -> str:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def _git(args: list[str], cwd: Path) -> str | None:
    # A minimal environment: never let the caller's environment leak into anything recorded.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False, env=env)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


@cache
def identity() -> Identity:
    """The :class:`Identity` of the code imported now (cached per process)."""
    source_root = Path(__file__).resolve().parents[1]
    top = _git(["rev-parse", "--show-toplevel"], source_root)
    if top and Path(top.strip()).resolve() == source_root.resolve():
        revision = _git(["rev-parse", "HEAD"], source_root)
        status = _git(["status", "--porcelain", "--untracked-files=no"], source_root)
        if revision:
            return Identity(package_version(), revision.strip(), "git", None if status is None else bool(status.strip()))
    built = os.environ.get(REVISION_ENV, "").strip()
    if built:
        return Identity(package_version(), built, "build", None)
    return Identity(package_version(), None, "unknown", None)
