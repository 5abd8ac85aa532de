"""The sample store: a database of agency submissions, their samples, rejected rows and raw files.

Opened through a database URL: SQLite by default (``sqlite:///out/samples.db``, WAL journal,
foreign keys on), PostgreSQL by URL (``postgresql+psycopg://user@host/db``, driver
``psycopg[binary]``). The schema is written with SQLAlchemy Core, so the same code runs on both;
the test suite runs the store tests against both (a throw-away PostgreSQL server, tests/postgres.py).
Positions are plain ``x``/``y`` columns in the project CRS named in ``crs`` (no PostGIS geometry:
the QA needs only distances, computed in Python, so PostGIS is not required).

Writers are serialised: SQLite's ``BEGIN IMMEDIATE`` and, on PostgreSQL, a transaction-level
advisory lock (``pg_advisory_xact_lock``) taken at the start of every write transaction. A
submission's QA therefore always sees every sample stored before it, and two processes submitting
the same file store it once.

Tables:

``schema_version``
    one row, the schema version this package wrote (checked on open).
``submissions``
    the ledger: one row per received file (stored or rejected whole), with its sha256.
``samples``
    accepted rows in canonical form (``CANONICAL_COLUMNS``, including the conversion SD
    ``soc_sd_g_kg`` and the reported ``gps_accuracy_m``) + ``submission_id``, ``agency`` and
    ``qa_flag`` (the flags of :func:`mrv.samples.qa.check_samples`, ``""`` when fine: flagged
    samples are kept); ``(agency, sample_id)`` is unique.
``rejections``
    rejected rows of stored submissions (row, column, value, reason).
``raw_files``
    the raw bytes of every stored submission, content-addressed by sha256 (inside the
    database, so the archive is written in the same transaction as the samples).

Schema versions: 1 had no ``soc_sd_g_kg`` / ``gps_accuracy_m``. A version-1 database is upgraded
in place when opened (one transaction: the two columns are added, ``soc_sd_g_kg`` is restored for
samples converted from organic matter, whose method says so, and :attr:`SampleStore.migrated_from`
is set so that the CLI can suggest ``mrv samples qa`` to flag the samples stored before). A
database of a newer schema is refused with a message.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from mrv.errors import ConfigError, SampleError
from mrv.samples.ingest import CANONICAL_COLUMNS, Rejection
from mrv.samples.stocks import VAN_BEMMELEN_FACTOR, VAN_BEMMELEN_FACTOR_SD

SCHEMA_VERSION = 2
#: Versions :meth:`SampleStore.open` can upgrade in place.
_MIGRATABLE = (1,)
#: Key of the PostgreSQL advisory lock that serialises writers ("mrv-samples").
WRITE_LOCK_KEY = 0x6D72762D73616D70
DEFAULT_URL = "sqlite:///out/samples.db"

#: Submission status values in the ledger.
STORED = "stored"
REJECTED = "rejected"

metadata = sa.MetaData()

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, nullable=False),
)

submissions = sa.Table(
    "submissions",
    metadata,
    sa.Column("submission_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("agency", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("format", sa.Text, nullable=False),
    sa.Column("filename", sa.Text, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("received_utc", sa.Text, nullable=False),
    sa.Column("submitted", sa.Integer, nullable=False),
    sa.Column("accepted", sa.Integer, nullable=False),
    sa.Column("rejected", sa.Integer, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.CheckConstraint("status IN ('stored', 'rejected')", name="ck_submissions_status"),
    sa.CheckConstraint("accepted + rejected = submitted", name="ck_submissions_counts"),
)
# A stored file is stored once per agency; whole-file rejections may be retried (e.g. with the right --format).
sa.Index(
    "uq_submissions_agency_sha256_stored",
    submissions.c.agency,
    submissions.c.sha256,
    unique=True,
    sqlite_where=submissions.c.status == STORED,
    postgresql_where=submissions.c.status == STORED,
)

_FLOAT_COLUMNS = {
    "x",
    "y",
    "lon",
    "lat",
    "top_cm",
    "bottom_cm",
    "soc_g_kg",
    "bulk_density_g_cm3",
    "coarse_fragments_vol_pct",
    "soc_sd_g_kg",
    "gps_accuracy_m",
}
_NOT_NULL = {
    "row",
    "sample_id",
    "site_id",
    "source",
    "x",
    "y",
    "crs",
    "sampling_date",
    "top_cm",
    "bottom_cm",
    "soc_g_kg",
}


def _canonical_column(name: str) -> sa.Column[Any]:
    kind: Any = sa.Integer if name == "row" else sa.Double if name in _FLOAT_COLUMNS else sa.Text
    return sa.Column(name, kind, nullable=name not in _NOT_NULL)


samples = sa.Table(
    "samples",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("submission_id", sa.Integer, sa.ForeignKey("submissions.submission_id"), nullable=False, index=True),
    sa.Column("agency", sa.Text, nullable=False),
    *[_canonical_column(c) for c in CANONICAL_COLUMNS],
    sa.Column("qa_flag", sa.Text, nullable=False, server_default=""),
    sa.UniqueConstraint("agency", "sample_id", name="uq_samples_agency_sample_id"),
)

rejections = sa.Table(
    "rejections",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("submission_id", sa.Integer, sa.ForeignKey("submissions.submission_id"), nullable=False, index=True),
    sa.Column("row", sa.Integer, nullable=False),
    sa.Column("column", sa.Text, nullable=False),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
)

raw_files = sa.Table(
    "raw_files",
    metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("size_bytes", sa.Integer, nullable=False),
    sa.Column("content", sa.LargeBinary, nullable=False),
)


@dataclass(frozen=True)
class SampleStore:
    """An open sample database. Create with :meth:`SampleStore.open`; close with :meth:`close`."""

    url: str
    engine: Engine
    migrated_from: int | None = None
    """Schema version the database had before :meth:`open` upgraded it (None: no upgrade)."""

    @classmethod
    def open(cls, url: str | Path = DEFAULT_URL) -> SampleStore:
        """Open (and create, if new) the store at ``url``.

        ``url`` is a database URL (``sqlite:///out/samples.db``, ``postgresql+psycopg://...``)
        or a plain file path, taken as an SQLite file.
        """
        text = str(url)
        if "://" not in text:
            text = f"sqlite:///{text}"
        try:
            parsed = sa.engine.make_url(text)
        except sa.exc.ArgumentError:
            raise ConfigError(
                f"'{url}' is not a database URL. Use e.g. sqlite:///out/samples.db or postgresql+psycopg://user@host/db."
            ) from None
        is_sqlite = parsed.get_backend_name() == "sqlite"
        if is_sqlite and parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
            try:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"Cannot create the folder for the sample database {parsed.database}: {exc.strerror}."
                ) from exc
        try:
            engine = sa.create_engine(parsed, connect_args={"timeout": 30} if is_sqlite else {})
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
            raise ConfigError(
                f"Cannot use the database URL '{url}': {exc}. Check the URL, or install the database driver it names."
            ) from exc
        if is_sqlite:
            _configure_sqlite(engine)
        store = cls(url=text, engine=engine)
        try:
            migrated_from = store._create_schema()
        except sa.exc.OperationalError as exc:
            engine.dispose()
            raise ConfigError(
                f"Cannot open the sample database '{url}': {exc.orig}. Check the path and permissions."
            ) from exc
        except BaseException:
            engine.dispose()
            raise
        return replace(store, migrated_from=migrated_from) if migrated_from is not None else store

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return str(self.engine.dialect.name)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> SampleStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One write transaction: committed when the block ends, rolled back on any error.

        Writers queue up instead of failing half-way: on SQLite the transaction starts with
        ``BEGIN IMMEDIATE``, on PostgreSQL it first takes the advisory lock ``WRITE_LOCK_KEY``
        (released at commit or rollback).
        """
        with self.engine.connect() as conn:
            conn.execution_options(mrv_write=True)
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITE_LOCK_KEY})
                yield conn

    def _create_schema(self) -> int | None:
        """Create a new schema or check (and upgrade) an existing one; returns the version upgraded from."""
        migrated_from = None
        with self.transaction() as conn:
            if sa.inspect(conn).has_table("schema_version"):
                found = conn.execute(sa.select(schema_version.c.version)).scalars().all()
                if found and found[0] in _MIGRATABLE and len(found) == 1:
                    _migrate(conn, found[0])
                    migrated_from = found[0]
                elif found and found != [SCHEMA_VERSION]:
                    raise ConfigError(
                        f"The sample database {self.url} has schema version {found[0]}, but this version of mrv "
                        f"uses schema version {SCHEMA_VERSION} (and can upgrade only from {list(_MIGRATABLE)}). "
                        "Use a matching mrv version or a new --db."
                    )
            metadata.create_all(conn)
            if not conn.execute(sa.select(schema_version.c.version)).first():
                conn.execute(schema_version.insert().values(version=SCHEMA_VERSION))
        return migrated_from

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(schema_version.c.version)).scalar_one())


def _migrate(conn: Connection, version: int) -> None:
    """Upgrade schema ``version`` to :data:`SCHEMA_VERSION` inside the caller's transaction.

    1 -> 2: add ``samples.soc_sd_g_kg`` and ``samples.gps_accuracy_m`` (nullable). Samples whose
    SOC was converted from organic matter (method ending in the van Bemmelen note) get their
    conversion SD back: ``0.08 x SOM = 0.08 / 0.58 x SOC`` (:func:`mrv.samples.stocks.som_to_soc`).
    Both SQLite and PostgreSQL run ``ALTER TABLE ... ADD COLUMN`` transactionally, so a failed
    upgrade leaves version 1 intact.
    """
    if version == 1:
        double = sa.Double().compile(dialect=conn.dialect)
        have = {c["name"] for c in sa.inspect(conn).get_columns("samples")}
        for name in ("soc_sd_g_kg", "gps_accuracy_m"):
            if name not in have:
                conn.exec_driver_sql(f"ALTER TABLE samples ADD COLUMN {name} {double}")
        conn.execute(
            samples.update()
            .where(samples.c.method.like("%x organic matter (van Bemmelen)%"), samples.c.soc_sd_g_kg.is_(None))
            .values(soc_sd_g_kg=samples.c.soc_g_kg * (VAN_BEMMELEN_FACTOR_SD / VAN_BEMMELEN_FACTOR))
        )
        conn.execute(schema_version.update().values(version=SCHEMA_VERSION))


def _configure_sqlite(engine: Engine) -> None:
    """Foreign keys and WAL on every connection; explicit BEGIN (pysqlite's own is unreliable)."""

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: object) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves, below
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("mrv_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


# --------------------------------------------------------------------------------------- queries


@dataclass(frozen=True)
class Submission:
    """One ledger row."""

    submission_id: int
    agency: str
    source: str
    format: str
    filename: str
    sha256: str
    received_utc: str
    submitted: int
    accepted: int
    rejected: int
    status: str
    reason: str | None


@dataclass(frozen=True)
class AcceptedRow:
    row: int
    sample_id: str
    qa_flag: str = ""
    """Why the QA flagged the sample (kept in the store), ``""`` when fine."""


@dataclass(frozen=True)
class SubmissionReport:
    """A submission with its accepted and rejected rows.

    ``duplicate_of`` is set when a resubmitted file was recognised by its sha256: the report is
    then that of the earlier submission, and nothing was stored again.
    """

    submission: Submission
    accepted_rows: tuple[AcceptedRow, ...]
    rejections: tuple[Rejection, ...]
    duplicate_of: int | None = None

    @property
    def submission_id(self) -> int:
        return self.submission.submission_id

    @property
    def flagged(self) -> int:
        """Accepted samples the QA flagged (stored with the reason)."""
        return sum(1 for a in self.accepted_rows if a.qa_flag)

    def lines(self) -> list[tuple[int, str, str]]:
        """``(row, sample id or column, result)`` sorted by row; result is ``ACCEPTED``,
        ``ACCEPTED, FLAGGED: reason`` or ``REJECTED: reason``."""
        out = [(a.row, a.sample_id, f"ACCEPTED, FLAGGED: {a.qa_flag}" if a.qa_flag else "ACCEPTED")
               for a in self.accepted_rows]  # fmt: skip
        out += [(r.row, r.column or "(whole row)", f"REJECTED: {r.reason}") for r in self.rejections]
        return sorted(out, key=lambda t: t[0])


def _submission(row: sa.Row[Any]) -> Submission:
    m = row._mapping
    return Submission(**{f: m[f] for f in Submission.__dataclass_fields__})


def list_submissions(store: SampleStore, *, agency: str | None = None) -> list[Submission]:
    """Every ledger row, oldest first."""
    query = sa.select(submissions).order_by(submissions.c.submission_id)
    if agency is not None:
        query = query.where(submissions.c.agency == agency)
    with store.engine.connect() as conn:
        return [_submission(r) for r in conn.execute(query)]


def submission_report(store: SampleStore, submission_id: int, *, duplicate_of: int | None = None) -> SubmissionReport:
    """Counts, accepted rows and rejected rows of one submission."""
    with store.engine.connect() as conn:
        return _report(conn, submission_id, duplicate_of=duplicate_of, store_url=store.url)


def _report(
    conn: Connection, submission_id: int, *, duplicate_of: int | None = None, store_url: str = ""
) -> SubmissionReport:
    row = conn.execute(sa.select(submissions).where(submissions.c.submission_id == submission_id)).first()
    if row is None:
        raise SampleError(
            f"There is no submission {submission_id} in the sample database {store_url}. "
            "Run 'mrv samples list' to see the submission numbers."
        )
    acc = conn.execute(
        sa.select(samples.c.row, samples.c.sample_id, samples.c.qa_flag)
        .where(samples.c.submission_id == submission_id)
        .order_by(samples.c.row)
    )
    rej = conn.execute(
        sa.select(rejections.c.row, rejections.c.column, rejections.c.value, rejections.c.reason)
        .where(rejections.c.submission_id == submission_id)
        .order_by(rejections.c.row, rejections.c.id)
    )
    return SubmissionReport(
        submission=_submission(row),
        accepted_rows=tuple(AcceptedRow(int(r.row), str(r.sample_id), str(r.qa_flag or "")) for r in acc),
        rejections=tuple(Rejection(int(r.row), r.column, r.value, r.reason) for r in rej),
        duplicate_of=duplicate_of,
    )


SAMPLE_FRAME_COLUMNS = [*CANONICAL_COLUMNS, "submission_id", "agency", "qa_flag"]


def samples_frame(store: SampleStore, *, source: str | None = None, agency: str | None = None) -> pd.DataFrame:
    """All stored samples in canonical form (plus ``submission_id``, ``agency``, ``qa_flag``)."""
    query = sa.select(*[samples.c[c] for c in SAMPLE_FRAME_COLUMNS]).order_by(samples.c.submission_id, samples.c.row)
    if source is not None:
        query = query.where(samples.c.source == source)
    if agency is not None:
        query = query.where(samples.c.agency == agency)
    with store.engine.connect() as conn:
        rows = conn.execute(query).all()
    frame = pd.DataFrame([tuple(r) for r in rows], columns=SAMPLE_FRAME_COLUMNS)
    for col in _FLOAT_COLUMNS:
        frame[col] = frame[col].astype(float)
    return frame


FLAG_COLUMNS = ["submission_id", "agency", "source", "row", "sample_id", "site_id", "sampling_date", "qa_flag"]


def flagged_samples(store: SampleStore, *, submission_id: int | None = None) -> pd.DataFrame:
    """Samples with a QA flag (``FLAG_COLUMNS``), oldest first; of one submission if given."""
    query = (
        sa.select(*[samples.c[c] for c in FLAG_COLUMNS])
        .where(samples.c.qa_flag != "")
        .order_by(samples.c.submission_id, samples.c.row)
    )
    if submission_id is not None:
        query = query.where(samples.c.submission_id == submission_id)
    with store.engine.connect() as conn:
        if submission_id is not None:
            _report(conn, submission_id, store_url=store.url)  # raises for an unknown submission
        rows = conn.execute(query).all()
    return pd.DataFrame([tuple(r) for r in rows], columns=FLAG_COLUMNS)


def flag_counts(store: SampleStore) -> dict[int, int]:
    """Submission id -> number of its samples with a QA flag (submissions without flags left out)."""
    query = (
        sa.select(samples.c.submission_id, sa.func.count())
        .where(samples.c.qa_flag != "")
        .group_by(samples.c.submission_id)
    )
    with store.engine.connect() as conn:
        return {int(sid): int(n) for sid, n in conn.execute(query)}


def raw_file(store: SampleStore, sha256: str) -> bytes:
    """The archived bytes of a stored submission."""
    with store.engine.connect() as conn:
        content = conn.execute(sa.select(raw_files.c.content).where(raw_files.c.sha256 == sha256)).scalar()
    if content is None:
        raise SampleError(f"No raw file with sha256 {sha256} is archived in {store.url}.")
    return bytes(content)


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def db_value(value: object) -> object:
    """numpy scalars -> Python, NaN -> NULL."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
