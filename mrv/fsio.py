"""The one place files are written atomically and hashed.

Every artefact of a run is written through :func:`atomic_write` (or one of its wrappers): the bytes
go to a temporary file in the target's directory, are fsynced, and replace the target with
``os.replace``, so a crash (even ``kill -9``) leaves either the old file or the new one, never half
of one. :func:`sha256_file` is the one file hash (manifests, step keys, model cards, bundles).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_path",
    "atomic_write",
    "fsync_dir",
    "fsync_file",
    "sha256_bytes",
    "sha256_file",
    "write_bytes",
    "write_json",
    "write_text",
]

_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path | str) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_file(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path | str) -> None:
    with contextlib.suppress(OSError):  # directories cannot be fsynced on every platform
        fsync_file(path)


@contextlib.contextmanager
def atomic_path(target: Path | str, *, suffix: str | None = None) -> Iterator[Path]:
    """A temporary path beside ``target`` for a writer that wants a file name (GDAL, pickle, matplotlib).

    On success the file is fsynced and moved onto ``target``; on failure it is removed and ``target``
    is left as it was. ``suffix`` keeps the extension drivers look at (default: the target's).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # A unique name the writer creates itself, so the file gets the usual permissions (umask), not mkstemp's 0600.
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}{suffix if suffix is not None else target.suffix}")
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def atomic_write(target: Path | str, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(fh)`` on a binary temporary file beside ``target``, then replace ``target`` with it."""
    target = Path(target)
    with atomic_path(target) as tmp, open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
    return target


def write_bytes(target: Path | str, data: bytes) -> Path:
    return atomic_write(target, lambda fh: fh.write(data))


def write_text(target: Path | str, text: str) -> Path:
    return write_bytes(target, text.encode("utf-8"))


def write_json(target: Path | str, data: Any, *, indent: int | None = 2, allow_nan: bool = False) -> Path:
    """Pretty UTF-8 JSON (non-ASCII kept) ending in a newline; paths and dates as strings.

    NaN is refused unless ``allow_nan`` (JSON has no NaN; replace it with null before writing).
    """
    text = json.dumps(data, indent=indent, ensure_ascii=False, allow_nan=allow_nan, default=str)
    return write_text(target, text + "\n")
