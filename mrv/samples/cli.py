"""``mrv samples submit | list | report | flags | qa | withdraw | export``: the sample store from the command line.

:func:`add_commands` registers the commands under the ``mrv samples`` group. Expected failures
raise :class:`~mrv.errors.MRVError` subclasses; ``mrv``'s main prints them and exits 2 (a file
rejected whole, or one that could not be written for want of the write lock, is recorded in the
ledger first).

``--db`` takes a database URL, ``env:NAME`` (the URL in environment variable ``NAME``, so a
password never appears on a command line) or a file path; without it ``$MRV_SAMPLES_DB`` or
``sqlite:///out/samples.db``. URLs are printed with their password as ``***``. Every piece of
user text printed (file names, agencies, sample ids, reasons) goes through
:func:`mrv.textsafe.for_terminal`, and the CSV written by ``export`` through
:func:`mrv.textsafe.write_csv`.

``submit`` reads the project CRS and region from ``--config RUN.yaml`` (or ``--crs`` /
``--bounds``); resubmitting a file under a corrected format profile supersedes the earlier submission,
``--replaces ID`` does so for a corrected file, ``withdraw ID --reason TEXT`` withdraws one.
``list`` shows the whole history (superseded and withdrawn submissions stay in it). ``flags``
lists the samples the QA flagged (they stay in the store); ``qa`` recomputes every flag in one
transaction, e.g. after new lab data arrived. ``export`` writes stored samples in the input
format of ``mrv samples stocks``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

from mrv.errors import ConfigError, SampleError
from mrv.samples.formats import load_format
from mrv.samples.qa import SampleChecks
from mrv.samples.store import (
    DB_ENV,
    DEFAULT_URL,
    LOCK_TIMEOUT_S,
    STORED,
    SampleQuery,
    SampleStore,
    Submission,
    SubmissionReport,
    flag_counts,
    flagged_samples,
    list_submissions,
    redact_url,
    samples_frame,
    submission_report,
)
from mrv.samples.store_qa import rerun_qa
from mrv.samples.submit import SOURCES, submit_file, withdraw
from mrv.textsafe import for_terminal, write_csv

__all__ = [
    "DEFAULT_FORMAT",
    "add_commands",
    "cmd_export",
    "cmd_flags",
    "cmd_list",
    "cmd_qa",
    "cmd_report",
    "cmd_submit",
    "cmd_withdraw",
    "project_of",
    "stocks_input",
    "write_report",
    "write_summary",
]

#: Format profile used when ``--format`` is not given.
DEFAULT_FORMAT = {"lab": "lab_wide", "crowd": "crowd"}
#: Reasons listed in a submission's summary (the rest are counted as "other reasons").
_TOP_REASONS = 10


def add_commands(samples: Any) -> None:
    """Register the store commands on the ``mrv samples`` subparsers object."""
    sub = samples.add_parser("submit", help="validate an agency's sample file and store it in the sample database")
    sub.add_argument("file", type=Path)
    sub.add_argument("--agency", required=True, help="name of the submitting agency or lab")
    sub.add_argument("--source", choices=SOURCES, default="lab")
    sub.add_argument(
        "--format", default=None, help="sample format profile (default: lab_wide for lab, crowd for crowd)"
    )
    sub.add_argument(
        "--crs", default=None, help="project CRS the coordinates are stored in (default: region.crs of --config)"
    )
    sub.add_argument(
        "--bounds", default=None, help="project region XMIN,YMIN,XMAX,YMAX in the project CRS (default: of --config)"
    )
    sub.add_argument("--replaces", type=int, default=None, metavar="ID",
                     help="a stored submission of this agency that this (corrected) file replaces")  # fmt: skip
    _db_option(sub)
    _config_option(sub)
    _lock_option(sub)
    sub.set_defaults(func=cmd_submit)

    lst = samples.add_parser("list", help="the submission ledger with its history (superseded, withdrawn, failed)")
    _db_option(lst)
    lst.set_defaults(func=cmd_list)

    rep = samples.add_parser("report", help="summary, accepted and rejected rows of one submission")
    rep.add_argument("submission_id", type=int)
    _db_option(rep)
    rep.set_defaults(func=cmd_report)

    flags = samples.add_parser("flags", help="samples the QA flagged (kept in the store), of all or one submission")
    flags.add_argument("submission_id", type=int, nargs="?", default=None)
    _db_option(flags)
    flags.set_defaults(func=cmd_flags)

    qa = samples.add_parser(
        "qa", help="re-run the QA over every stored sample (e.g. after new lab data) and update the flags"
    )
    _db_option(qa)
    _config_option(qa)
    _lock_option(qa)
    qa.set_defaults(func=cmd_qa)

    wd = samples.add_parser("withdraw", help="withdraw a stored submission (kept in the ledger, samples no longer used)")
    wd.add_argument("submission_id", type=int)
    wd.add_argument("--reason", required=True, help="why it is withdrawn (kept in the ledger)")
    _db_option(wd)
    _lock_option(wd)
    wd.set_defaults(func=cmd_withdraw)

    ex = samples.add_parser("export", help="write stored samples in the input format of 'mrv samples stocks'")
    ex.add_argument("-o", "--output", type=Path, required=True, help="CSV file to write")
    ex.add_argument("--start", default=None, help="first sampling date (YYYY-MM-DD)")
    ex.add_argument("--end", default=None, help="last sampling date (YYYY-MM-DD)")
    ex.add_argument("--source", action="append", choices=SOURCES, default=None, help="only this source (repeatable)")
    ex.add_argument("--agency", action="append", default=None, help="only this agency (repeatable)")
    ex.add_argument("--round-by", choices=("year", "date"), default="year",
                    help="what makes a soil profile's round: its sampling year (default) or date")  # fmt: skip
    ex.add_argument("--no-flagged", action="store_true", help="leave out samples with a QA flag")
    _db_option(ex)
    ex.set_defaults(func=cmd_export)


def _db_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        default=None,
        help=f"sample database URL, env:NAME (URL in that environment variable) or file "
        f"(default ${DB_ENV}, else {DEFAULT_URL})",
    )


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="run config whose samples: section sets the QA thresholds (and, for submit, the project CRS and region)",
    )


def _lock_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lock-timeout", type=float, default=LOCK_TIMEOUT_S, metavar="SECONDS",
                        help=f"wait this long for other writers to finish (default {LOCK_TIMEOUT_S:g} s)")  # fmt: skip


def _checks(config: Path | None) -> SampleChecks:
    if config is None:
        return SampleChecks()
    from mrv.config import load_config

    return SampleChecks.from_config(load_config(config).samples)


def _waiting(seconds: float) -> None:
    sys.stderr.write(f"waiting for other writers to finish storing their submissions ({seconds:.0f} s)...\n")
    sys.stderr.flush()


def _open(args: argparse.Namespace, out: TextIO) -> SampleStore:
    store = SampleStore.open(args.db, lock_timeout_s=getattr(args, "lock_timeout", LOCK_TIMEOUT_S), on_wait=_waiting)
    if store.migrated_from is not None:
        shown = _shown(args, store)
        out.write(
            f"Upgraded the sample database {shown} from schema version {store.migrated_from} to "
            f"{store.schema_version()}. Run 'mrv samples qa --db {shown}' to check the samples stored before.\n"
        )
    return store


def _shown(args: argparse.Namespace, store: SampleStore) -> str:
    """The database as the user named it (password redacted), for messages."""
    given = getattr(args, "db", None)
    return for_terminal(redact_url(given) if given and not str(given).startswith("env:") else store.safe_url)


def _bounds(text: str | None) -> tuple[float, float, float, float] | None:
    if text is None:
        return None
    try:
        xmin, ymin, xmax, ymax = (float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--bounds must be four numbers XMIN,YMIN,XMAX,YMAX, got {for_terminal(text)!r}.") from None
    if not (xmin < xmax and ymin < ymax):
        raise ConfigError(f"--bounds {for_terminal(text)}: XMIN must be below XMAX and YMIN below YMAX.")
    return xmin, ymin, xmax, ymax


def project_of(config: Path) -> tuple[str, tuple[float, float, float, float]]:
    """Project CRS and region bounds (the project grid's, in that CRS) of a run config."""
    from mrv.config import load_config
    from mrv.pipeline.imagery import project_grid

    cfg = load_config(config)
    grid = project_grid(cfg)
    return cfg.region.crs, tuple(float(v) for v in grid.bounds)  # type: ignore[return-value]


def cmd_submit(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    fmt = load_format(args.format or DEFAULT_FORMAT[args.source], config_path=args.config)
    bounds = _bounds(args.bounds)
    crs = args.crs
    if args.config is not None and (crs is None or bounds is None):
        cfg_crs, cfg_bounds = project_of(args.config)
        crs, bounds = crs or cfg_crs, bounds or cfg_bounds
    if crs is None:
        raise ConfigError(
            "Say which project CRS the samples are stored in: --config RUN.yaml (its region.crs and region) "
            "or --crs EPSG:CODE (e.g. --crs EPSG:32633 for UTM 33N)."
        )
    checks = _checks(args.config)
    with _open(args, out) as store:
        report = submit_file(store, args.file, agency=args.agency, source=args.source, fmt=fmt,
                             project_crs=crs, region_bounds=bounds, checks=checks,
                             replaces=args.replaces)  # fmt: skip
    s = report.submission
    if report.duplicate_of is not None:
        out.write(
            f"{for_terminal(args.file)} was already submitted by {for_terminal(s.agency)} as submission "
            f"{s.submission_id} on {s.received_utc} with the same format profile (file sha256 {s.sha256[:12]}...); nothing "
            "was stored again. To correct it, resubmit with the corrected --format profile, or submit the corrected "
            f"file with --replaces {s.submission_id}; to withdraw it: mrv samples withdraw {s.submission_id} "
            "--reason TEXT.\n"
        )
    else:
        write_report(report, out)
    return 0


def write_report(report: SubmissionReport, out: TextIO) -> None:
    s = report.submission
    out.write(f"Submission {s.submission_id}: {for_terminal(s.filename)} from {for_terminal(s.agency)} "
              f"({for_terminal(s.source)}, format {for_terminal(s.format)}), received {s.received_utc}, "
              f"status {s.status.upper()}\n")  # fmt: skip
    if s.reason:
        out.write(f"Reason: {for_terminal(s.reason)}\n")
    if s.status != STORED and s.history and s.history != s.reason:
        out.write(f"History: {for_terminal(s.history)} (its samples are kept, no longer used)\n")
    lines = report.lines()
    if lines:
        out.write(f"{'row':>6}  {'sample / column':<24} result\n")
        for row, what, result in lines:
            out.write(f"{row:>6}  {for_terminal(what):<24} {for_terminal(result)}\n")
    flagged = report.flagged
    out.write(f"{s.submitted} rows submitted, {s.accepted} accepted, {s.rejected} rejected.\n")
    write_summary(s, out)
    if s.status in (STORED, "superseded", "withdrawn") and s.submitted:
        out.write(
            f"{flagged} accepted sample{'' if flagged == 1 else 's'} flagged by QA"
            + (" (stored with the reason; see 'mrv samples flags').\n" if flagged else ".\n")
        )


def write_summary(s: Submission, out: TextIO) -> None:
    """Samples and lines (they differ for long layouts) and the rejected lines by reason."""
    if not s.summary:
        return
    try:
        summary = json.loads(s.summary)
    except ValueError:
        return
    n_samples = summary.get("samples", {}).get("accepted")
    if n_samples is not None and n_samples != s.accepted:
        out.write(f"{n_samples} samples accepted (from {s.accepted} lines).\n")
    reasons = summary.get("by_reason") or {}
    if reasons:
        out.write("Rejected lines by reason:\n")
        items = list(reasons.items())
        for key, n in items[:_TOP_REASONS]:
            out.write(f"{int(n):>8}  {for_terminal(key)}\n")
        rest = sum(int(n) for _, n in items[_TOP_REASONS:])
        if rest:
            out.write(f"{rest:>8}  (other reasons)\n")


def cmd_list(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    with _open(args, out) as store:
        subs = list_submissions(store)
        flagged = flag_counts(store)
        shown = _shown(args, store)
    if not subs:
        out.write(
            f"No submissions in {shown} yet. Add one with 'mrv samples submit FILE --agency NAME'.\n"
        )
        return 0
    out.write(_list_table(subs, flagged))
    return 0


def _list_table(subs: list[Submission], flagged: dict[int, int]) -> str:
    hdr = (
        f"{'id':>5}  {'received (UTC)':<25} {'agency':<16} {'source':<6} {'format':<12} {'status':<10} "
        f"{'rows':>6} {'acc':>6} {'rej':>6} {'flag':>5}  file"
    )
    lines = [hdr, "-" * len(hdr)]
    for s in subs:
        history = f"  [{for_terminal(s.history)}]" if s.status != STORED and s.history else ""
        lines.append(
            f"{s.submission_id:>5}  {s.received_utc:<25} {for_terminal(s.agency)[:16]:<16} {for_terminal(s.source):<6} "
            f"{for_terminal(s.format)[:12]:<12} {s.status:<10} {s.submitted:>6} {s.accepted:>6} {s.rejected:>6} "
            f"{flagged.get(s.submission_id, 0):>5}  {for_terminal(s.filename)}{history}"
        )
    return "\n".join(lines) + "\n"


def cmd_report(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    with _open(args, out) as store:
        report = submission_report(store, args.submission_id)
    write_report(report, out)
    return 0


def cmd_flags(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    with _open(args, out) as store:
        flagged = flagged_samples(store, submission_id=args.submission_id)
        shown = _shown(args, store)
    where = f"submission {args.submission_id}" if args.submission_id is not None else shown
    if flagged.empty:
        out.write(f"No flagged samples in {where}.\n")
        return 0
    out.write(_flags_table(flagged))
    out.write(f"{len(flagged)} flagged sample{'' if len(flagged) == 1 else 's'} in {where} (kept in the store).\n")
    return 0


def _flags_table(flagged: pd.DataFrame) -> str:
    hdr = f"{'sub':>5} {'row':>6}  {'agency':<16} {'source':<6} {'sample':<20} {'site':<16} flag"
    lines = [hdr, "-" * len(hdr)]
    for r in flagged.astype(str).to_dict("records"):
        t = {k: for_terminal(v) for k, v in r.items()}
        lines.append(
            f"{t['submission_id']:>5} {t['row']:>6}  {t['agency'][:16]:<16} {t['source']:<6} "
            f"{t['sample_id'][:20]:<20} {t['site_id'][:16]:<16} {t['qa_flag']}"
        )
    return "\n".join(lines) + "\n"


def cmd_qa(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    checks = _checks(args.config)
    with _open(args, out) as store:
        outcome = rerun_qa(store, checks)
    out.write(
        f"QA of {outcome.checked} stored samples: {outcome.flagged} flagged "
        f"({outcome.newly_flagged} newly flagged, {outcome.cleared} cleared, {outcome.changed} flags changed). "
        "See them with 'mrv samples flags'.\n"
    )
    return 0


def cmd_withdraw(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    with _open(args, out) as store:
        report = withdraw(store, args.submission_id, reason=args.reason)
    s = report.submission
    out.write(
        f"Withdrew submission {s.submission_id} ({for_terminal(s.filename)} from {for_terminal(s.agency)}): "
        f"{len(report.accepted_rows)} samples are kept but no longer used. Reason: {for_terminal(s.withdrawn_reason)}. "
        "Run 'mrv samples qa' to update flags that referred to them.\n"
    )
    return 0


def _date_arg(text: str | None, option: str) -> dt.date | None:
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{option} must be a date written YYYY-MM-DD, got {for_terminal(text)!r}.") from None


#: Columns of the ``mrv samples stocks`` input (:mod:`mrv.samples.profile_stocks`) that an export writes.
STOCKS_COLUMNS = [
    "profile_id", "round", "top_cm", "bottom_cm", "soc_g_kg", "bulk_density_g_cm3", "coarse_fragments_vol_pct",
    "soc_sd_g_kg", "sample_id", "agency", "source", "x", "y", "crs", "sampling_date", "submission_id", "qa_flag",
]  # fmt: skip


def stocks_input(stored: pd.DataFrame, *, round_by: str = "year") -> pd.DataFrame:
    """Stored samples as the layer table of ``mrv samples stocks``: one row per layer, a soil profile per site and round.

    ``profile_id`` is ``agency/site_id`` (site ids are an agency's own); ``round`` the sampling
    year (or date). Extra columns (position, ids, flags) are carried along for the record; the
    stocks command reads the ones it needs.
    """
    if stored.empty:
        return pd.DataFrame(columns=STOCKS_COLUMNS)
    date = stored["sampling_date"].astype(str)
    out = stored.assign(
        profile_id=stored["agency"].astype(str) + "/" + stored["site_id"].astype(str),
        round=date.str[:4] if round_by == "year" else date,
    )
    return out[STOCKS_COLUMNS].sort_values(["profile_id", "round", "top_cm"], kind="stable").reset_index(drop=True)


def cmd_export(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    query = SampleQuery(
        start=_date_arg(args.start, "--start"),
        end=_date_arg(args.end, "--end"),
        sources=tuple(args.source or ()),
        agencies=tuple(args.agency or ()),
        include_flagged=not args.no_flagged,
    )
    with _open(args, out) as store:
        stored = samples_frame(store, query=query)
    table = _mapped(stored, args.round_by)
    try:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        write_csv(table, args.output)
    except OSError as exc:
        raise SampleError(f"Cannot write {for_terminal(args.output)}: {exc.strerror}. Check the path.") from exc
    n_profiles = table[["profile_id", "round"]].drop_duplicates().shape[0] if len(table) else 0
    out.write(
        f"Wrote {len(table)} layers of {n_profiles} soil profiles to {for_terminal(args.output)} "
        f"(input of 'mrv samples stocks {for_terminal(args.output)} --method fixed|esm').\n"
    )
    return 0


def _mapped(stored: pd.DataFrame, round_by: str) -> pd.DataFrame:
    """The parse side's mapping when it exists (:mod:`mrv.samples.profile_stocks`), else :func:`stocks_input`."""
    from mrv.samples import profile_stocks

    mapper = getattr(profile_stocks, "stored_to_stocks_input", None)
    if callable(mapper):
        return mapper(stored, round_by=round_by)  # type: ignore[no-any-return]
    return stocks_input(stored, round_by=round_by)
