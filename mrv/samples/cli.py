"""``mrv samples submit | list | report | flags | qa``: the sample store from the command line.

:func:`add_commands` registers the commands under the ``mrv samples`` group. Expected failures
raise :class:`~mrv.errors.MRVError` subclasses; ``mrv``'s main prints them and exits 2 (a file
rejected whole is recorded in the ledger first).

``flags [SUBMISSION_ID]`` lists the samples the QA flagged (they stay in the store); ``qa``
recomputes every flag in one transaction, e.g. after new lab data arrived. Both ``submit`` and
``qa`` take the QA thresholds from a run config's ``samples:`` section with ``--config``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

from mrv.errors import ConfigError
from mrv.resources import profile_dirs
from mrv.samples.formats import load_format
from mrv.samples.qa import SampleChecks
from mrv.samples.store import (
    DEFAULT_URL,
    SampleStore,
    Submission,
    SubmissionReport,
    flag_counts,
    flagged_samples,
    list_submissions,
    submission_report,
)
from mrv.samples.store_qa import rerun_qa
from mrv.samples.submit import SOURCES, submit_file

#: Profile used when ``--format`` is not given.
DEFAULT_FORMAT = {"lab": "lab_wide", "crowd": "crowd"}


def add_commands(samples: Any) -> None:
    """Register ``submit``, ``list``, ``report``, ``flags`` and ``qa`` on the ``mrv samples`` subparsers object."""
    sub = samples.add_parser("submit", help="validate an agency's sample file and store it in the sample database")
    sub.add_argument("file", type=Path)
    sub.add_argument("--agency", required=True, help="name of the submitting agency or lab")
    sub.add_argument("--source", choices=SOURCES, default="lab")
    sub.add_argument(
        "--format", default=None, help="sample format profile (default: lab_wide for lab, crowd for crowd)"
    )
    sub.add_argument(
        "--crs", default="EPSG:32633", help="project CRS the coordinates are stored in (default EPSG:32633)"
    )
    sub.add_argument("--bounds", default=None, help="project region XMIN,YMIN,XMAX,YMAX in the project CRS")
    _db_option(sub)
    _config_option(sub)
    sub.set_defaults(func=cmd_submit)

    lst = samples.add_parser("list", help="list the submissions in the sample database")
    _db_option(lst)
    lst.set_defaults(func=cmd_list)

    rep = samples.add_parser("report", help="accepted and rejected rows of one submission")
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
    qa.set_defaults(func=cmd_qa)


def _db_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", default=DEFAULT_URL, help=f"sample database URL (default {DEFAULT_URL})")


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="run config whose samples: section sets the QA thresholds (default: the built-in defaults)",
    )


def _checks(config: Path | None) -> SampleChecks:
    if config is None:
        return SampleChecks()
    from mrv.config import load_config

    return SampleChecks.from_config(load_config(config).samples)


def _open(db: str, out: TextIO) -> SampleStore:
    store = SampleStore.open(db)
    if store.migrated_from is not None:
        out.write(
            f"Upgraded the sample database {db} from schema version {store.migrated_from} to "
            f"{store.schema_version()}. Run 'mrv samples qa --db {db}' to check the samples stored before.\n"
        )
    return store


def _bounds(text: str | None) -> tuple[float, float, float, float] | None:
    if text is None:
        return None
    try:
        xmin, ymin, xmax, ymax = (float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--bounds must be four numbers XMIN,YMIN,XMAX,YMAX, got {text!r}.") from None
    if not (xmin < xmax and ymin < ymax):
        raise ConfigError(f"--bounds {text}: XMIN must be below XMAX and YMIN below YMAX.")
    return xmin, ymin, xmax, ymax


def cmd_submit(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    fmt = load_format(args.format or DEFAULT_FORMAT[args.source], search_dirs=profile_dirs("sample_formats"))
    bounds = _bounds(args.bounds)
    checks = _checks(args.config)
    with _open(args.db, out) as store:
        report = submit_file(store, args.file, agency=args.agency, source=args.source, fmt=fmt,
                             project_crs=args.crs, region_bounds=bounds, checks=checks)  # fmt: skip
    s = report.submission
    if report.duplicate_of is not None:
        out.write(
            f"{args.file} was already submitted by {s.agency} as submission {s.submission_id} on {s.received_utc} "
            f"(same content, sha256 {s.sha256[:12]}...); nothing was stored again.\n"
        )
    else:
        write_report(report, out)
    return 0


def write_report(report: SubmissionReport, out: TextIO) -> None:
    s = report.submission
    out.write(f"Submission {s.submission_id}: {s.filename} from {s.agency} ({s.source}, format {s.format}), "
              f"received {s.received_utc}, status {s.status.upper()}\n")  # fmt: skip
    if s.reason:
        out.write(f"Reason: {s.reason}\n")
    lines = report.lines()
    if lines:
        out.write(f"{'row':>6}  {'sample / column':<24} result\n")
        for row, what, result in lines:
            out.write(f"{row:>6}  {what:<24} {result}\n")
    flagged = report.flagged
    out.write(f"{s.submitted} rows submitted, {s.accepted} accepted, {s.rejected} rejected.\n")
    if s.status == "stored":
        out.write(
            f"{flagged} accepted sample{'' if flagged == 1 else 's'} flagged by QA"
            + (" (stored with the reason; see 'mrv samples flags').\n" if flagged else ".\n")
        )


def cmd_list(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    with _open(args.db, out) as store:
        subs = list_submissions(store)
        flagged = flag_counts(store)
    if not subs:
        out.write(f"No submissions in {args.db} yet. Add one with 'mrv samples submit FILE --agency NAME'.\n")
        return 0
    out.write(_list_table(subs, flagged))
    return 0


def _list_table(subs: list[Submission], flagged: dict[int, int]) -> str:
    hdr = (
        f"{'id':>5}  {'received (UTC)':<25} {'agency':<16} {'source':<6} {'format':<12} {'status':<8} "
        f"{'rows':>6} {'acc':>6} {'rej':>6} {'flag':>5}  file"
    )
    lines = [hdr, "-" * len(hdr)]
    for s in subs:
        lines.append(
            f"{s.submission_id:>5}  {s.received_utc:<25} {s.agency[:16]:<16} {s.source:<6} {s.format[:12]:<12} "
            f"{s.status:<8} {s.submitted:>6} {s.accepted:>6} {s.rejected:>6} {flagged.get(s.submission_id, 0):>5}  "
            f"{s.filename}"
        )
    return "\n".join(lines) + "\n"


def cmd_report(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    with _open(args.db, out) as store:
        report = submission_report(store, args.submission_id)
    write_report(report, out)
    return 0


def cmd_flags(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    with _open(args.db, out) as store:
        flagged = flagged_samples(store, submission_id=args.submission_id)
    where = f"submission {args.submission_id}" if args.submission_id is not None else args.db
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
        lines.append(
            f"{r['submission_id']:>5} {r['row']:>6}  {r['agency'][:16]:<16} {r['source']:<6} "
            f"{r['sample_id'][:20]:<20} {r['site_id'][:16]:<16} {r['qa_flag']}"
        )
    return "\n".join(lines) + "\n"


def cmd_qa(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    checks = _checks(args.config)
    with _open(args.db, out) as store:
        outcome = rerun_qa(store, checks)
    out.write(
        f"QA of {outcome.checked} stored samples: {outcome.flagged} flagged "
        f"({outcome.newly_flagged} newly flagged, {outcome.cleared} cleared, {outcome.changed} flags changed). "
        "See them with 'mrv samples flags'.\n"
    )
    return 0
