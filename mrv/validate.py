"""Check a run config before any work starts: ``mrv validate CONFIG`` (and the first thing ``mrv run`` does).

:func:`mrv.config.load_config` already refuses malformed values (unknown keys, bad dates, a CRS
that is not projected in metres, unknown provider, sample-format or methodology profiles). This
module checks what needs the file system or the environment:

* the field polygons, the local STAC catalog, the DEM and every sample file exist, are regular files
  and can be read; the field polygons parse;
* each sample file's header has the columns its format profile requires;
* rounds are in chronological order;
* the run's size (pixels x covariates x 4 bytes x rounds) is below ``imagery.max_run_gb``;
* credentials exist for the imagery source (their values are never printed);
* the output directory can be created and written.

Every problem found is listed in one :class:`~mrv.errors.ConfigError`, each line naming the key or file.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mrv.config import RunConfig, load_config
from mrv.errors import ConfigError, MRVError
from mrv.samples.formats import SampleFormat
from mrv.samples.reading import irregular_kind

__all__ = [
    "EXTRA_COVARIATES",
    "TERRAIN_COVARIATES",
    "validate_config",
    "validate_path",
    "Validation",
]

#: Bands of the bare-soil composite beyond the reflectance bands (indices, counts) and terrain layers.
EXTRA_COVARIATES = 4
TERRAIN_COVARIATES = 3


@dataclass(frozen=True)
class Validation:
    """What :func:`validate_config` checked, for the CLI's one-line summary."""

    config: RunConfig
    pixels: int
    estimated_gb: float
    sample_files: int


def _readable_file(path: Path | None, key: str, problems: list[str]) -> bool:
    if path is None:
        return False
    try:
        st = os.stat(path)
    except OSError as exc:
        problems.append(f"{key}: {path} {'does not exist' if not path.exists() else f'cannot be read ({exc.strerror})'}.")
        return False
    kind = irregular_kind(st.st_mode)
    if kind is not None:
        problems.append(f"{key}: {path} is {kind}, not a regular file; give the file itself.")
        return False
    if not os.access(path, os.R_OK):
        problems.append(f"{key}: {path} cannot be read (permission denied).")
        return False
    return True


def _check_sample_header(path: Path, fmt: SampleFormat, key: str, problems: list[str]) -> None:
    """The header line of ``path`` has every column ``fmt`` requires (read from the first 64 KiB only)."""
    from mrv.samples.ingest import decode, header_problems, read_table

    with open(path, "rb") as fh:
        head = fh.read(65_536)
    try:
        text = decode(head.split(b"\n", 1)[0] + b"\n", path.name, fallback=fmt.encoding or "latin-1")
        header, _, _ = read_table(text, path.name, delimiter=fmt.delimiter, decimal=fmt.decimal)
    except MRVError as exc:
        problems.append(f"{key}: {exc}")
        return
    missing = header_problems(header, fmt)
    if missing:
        problems.append(
            f"{key}: {path.name} lacks column(s) {', '.join(missing)} required by sample format '{fmt.name}' "
            f"(its header has {header}). Rename the columns in the file or in the format profile, or choose the matching format."
        )


def _check_credentials(cfg: RunConfig, problems: list[str]) -> None:
    if cfg.imagery.source != "sentinelhub":
        return
    have_env = bool(os.environ.get("SH_CLIENT_ID")) and bool(os.environ.get("SH_CLIENT_SECRET"))
    if have_env:
        return
    try:
        from sentinelhub import SHConfig

        profile = SHConfig.load() if os.path.exists(SHConfig.get_config_location()) else None
    except Exception:  # an unreadable sentinelhub config counts as none
        profile = None
    if profile is not None and profile.sh_client_id and profile.sh_client_secret:
        return
    problems.append(
        "imagery.source: sentinelhub needs OAuth client credentials: set SH_CLIENT_ID and SH_CLIENT_SECRET in the "
        "environment (or store them in a sentinelhub config profile: `sentinelhub.config --sh_client_id ...`)."
    )


def _check_output_dir(out: Path, problems: list[str]) -> None:
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        if not probe.is_dir():
            raise NotADirectoryError(20, f"{probe} is a file, not a directory")
        if out.exists():
            with tempfile.NamedTemporaryFile(dir=out, prefix=".mrv-write-check-"):
                pass
        elif not os.access(probe, os.W_OK):
            raise PermissionError(13, "permission denied")
    except OSError as exc:
        problems.append(
            f"output_dir: {out} cannot be written ({exc.strerror or exc}). Give another directory with -o/--output."
        )


def validate_config(cfg: RunConfig) -> Validation:
    """Check ``cfg`` against the file system and environment; :class:`ConfigError` listing every problem."""
    from mrv.fields import fields_bounds, read_fields
    from mrv.grid import Grid

    problems: list[str] = []
    pixels = 0
    estimated_gb = 0.0
    if _readable_file(cfg.region.fields, "region.fields", problems):
        try:
            fields = read_fields(cfg.region.fields, crs=cfg.region.crs)
            grid = Grid.covering(
                fields_bounds(fields), crs=cfg.region.crs, resolution_m=cfg.region.resolution_m,
                buffer_m=cfg.region.buffer_m,
            )  # fmt: skip
            pixels = grid.width * grid.height
        except MRVError as exc:
            problems.append(f"region.fields: {exc}")
    if cfg.imagery.source == "local":
        _readable_file(cfg.imagery.catalog, "imagery.catalog", problems)
    if cfg.imagery.dem is not None and cfg.imagery.dem.path is not None:
        _readable_file(cfg.imagery.dem.path, "imagery.dem.path", problems)
    try:  # the model step registers the fitted model there (mrv.modeling.registry); imports no model code
        from mrv.modeling.registry import check_registry_writable

        check_registry_writable(cfg.model.registry_dir)
    except MRVError as exc:
        problems.append(f"model.registry_dir: {exc}")
    n_files = 0
    for i, rnd in enumerate(cfg.rounds):
        for j, sf in enumerate(rnd.samples):
            key = f"rounds[{i}].samples[{j}].path"
            n_files += 1
            if _readable_file(sf.path, key, problems) and sf.format_profile is not None:
                _check_sample_header(sf.path, sf.format_profile, key, problems)
    for prev, nxt in zip(cfg.rounds, cfg.rounds[1:], strict=False):
        if nxt.start < prev.start:
            problems.append(
                f"rounds: round {nxt.name!r} starts {nxt.start}, before the round before it ({prev.name!r}, "
                f"{prev.start}); list rounds in chronological order (change is reported from the first to the last)."
            )
    if pixels:
        covariates = len(cfg.imagery.bands) + EXTRA_COVARIATES + (TERRAIN_COVARIATES if cfg.imagery.dem else 0)
        estimated_gb = pixels * covariates * 4 * len(cfg.rounds) / 1e9
        if estimated_gb > cfg.imagery.max_run_gb:
            problems.append(
                f"region.resolution_m: {cfg.region.resolution_m:g} m gives {pixels:,} pixels, about {estimated_gb:,.1f} GB "
                f"of covariates ({covariates} layers x 4 bytes x {len(cfg.rounds)} rounds), over imagery.max_run_gb "
                f"= {cfg.imagery.max_run_gb:g}. Use a coarser resolution, split the region, or raise imagery.max_run_gb."
            )
    _check_credentials(cfg, problems)
    _check_output_dir(cfg.output_dir, problems)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"{cfg.source_path.name}: {len(problems)} problem(s) to fix before the run can start:\n{lines}")
    return Validation(config=cfg, pixels=pixels, estimated_gb=estimated_gb, sample_files=n_files)


def validate_path(path: str | Path, *, output_dir: str | Path | None = None) -> Validation:
    """Load ``path`` and :func:`validate_config` it."""
    return validate_config(load_config(path, output_dir=output_dir))
