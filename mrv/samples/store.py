"""The sample store: a database of agency submissions, their samples, rejected rows and raw files.

Opened through a database URL: SQLite by default (``sqlite:///out/samples.db``, WAL journal,
foreign keys on), PostgreSQL by URL (``postgresql+psycopg://user@host/db``, driver
``psycopg[binary]``). The URL may also be named instead of given: ``env:NAME`` reads it from the
environment variable ``NAME`` (and ``MRV_SAMPLES_DB``, when set, is the default), so passwords
stay out of command lines, flow parameters and logs. Every message shows a URL through
:func:`redact_url` (``postgresql://user:***@host/db``). The schema is written with SQLAlchemy
Core, so the same code runs on both backends; the test suite runs the store tests against both (a
throw-away PostgreSQL server, tests/postgres.py). Positions are plain ``x``/``y`` columns in the
project CRS named in ``crs`` plus their 1 km grid cell ``gx``/``gy`` (``floor(x / 1000)``), an
index the QA queries neighbourhoods through (no PostGIS needed).

Writers queue: SQLite's ``BEGIN IMMEDIATE`` and, on PostgreSQL, a transaction-level advisory
lock (``pg_try_advisory_xact_lock``) taken at the start of every write transaction. A writer that
finds the lock taken waits for it -- up to ``lock_timeout_s`` (default 600 s, generous: a
150,000-row submission holds it for a few seconds), reporting its wait every 10 s through
``on_wait`` -- and only then gives up with :class:`StoreBusy`. A submission's QA therefore
always sees every sample stored before it, and two processes submitting the same file store it once.

Tables:

``schema_version``
    one row, the schema version this package wrote (checked on open).
``submissions``
    the ledger: one row per received file, with its sha256 and the sha256 of the format profile
    it was read with. ``status``: ``stored``; ``rejected`` (the file could not be read as a
    sample table); ``superseded`` (the same file was submitted again under another profile:
    ``superseded_by`` names the new submission); ``withdrawn`` (``withdrawn_utc``,
    ``withdrawn_reason``); ``failed`` (it could not be written, e.g. the write lock never came:
    ``reason`` says why, nothing else was stored). ``summary`` holds the counts by outcome and
    reason (JSON). Rows are never deleted.
``samples``
    the samples in use: accepted rows of ``stored`` submissions in canonical form
    (``CANONICAL_COLUMNS``) + ``submission_id``, ``agency``, ``qa_flag`` (``""`` when fine:
    flagged samples are kept), ``ingest_flag`` (notes of the ingest on a kept value, e.g. an
    implausible bulk density stored as missing: not a QA flag, the sample is used) and the grid
    cell ``gx``/``gy``; ``(agency, sample_id)`` is unique.
``retired_samples``
    the samples of superseded and withdrawn submissions, moved here unchanged (their ``id`` in
    ``samples`` kept; SQLite may give a later sample the same ``id``, so the key is ``retired_id``)
    with ``retired_utc`` and ``retired_reason``: kept, reported, never used by QA or runs.
``rejections``
    rejected rows of stored submissions (row, column, value, reason).
``raw_files``
    the raw bytes of every stored submission, content-addressed by sha256 (inside the
    database, so the archive is written in the same transaction as the samples).

Schema versions: 1 had no ``soc_sd_g_kg`` / ``gps_accuracy_m``; 2 had no profile hash,
superseding, withdrawal, summaries, grid cells or ``retired_samples``. Older databases are
upgraded in place when opened (one transaction; on SQLite the ledger table is rebuilt to widen
its status check, following SQLite's documented 12-step ALTER TABLE procedure, with foreign keys
checked before commit) and :attr:`SampleStore.migrated_from` is set so that the CLI can suggest
``mrv samples qa``. A database of a newer schema is refused with a message.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from mrv.errors import ConfigError, SampleError
from mrv.samples.ingest import CANONICAL_COLUMNS, Rejection
from mrv.samples.stocks import VAN_BEMMELEN_FACTOR, VAN_BEMMELEN_FACTOR_SD

__all__ = [
    "CELL_M",
    "DB_ENV",
    "DEFAULT_URL",
    "FAILED",
    "FLOAT_COLUMNS",
    "LOCK_TIMEOUT_S",
    "REJECTED",
    "SAMPLE_TABLE_COLUMNS",
    "SCHEMA_VERSION",
    "STORED",
    "SUPERSEDED",
    "WITHDRAWN",
    "AcceptedRow",
    "SampleQuery",
    "SampleStore",
    "StoreBusy",
    "Submission",
    "SubmissionReport",
    "cells",
    "db_column",
    "db_value",
    "fetch_tuples",
    "flag_counts",
    "flagged_samples",
    "insert_rows",
    "list_submissions",
    "raw_file",
    "raw_files",
    "redact_url",
    "rejections",
    "resolve_url",
    "retired_samples",
    "round_samples",
    "samples",
    "samples_frame",
    "store_query",
    "store_state",
    "submission_report",
    "submissions",
    "utc_now",
]

SCHEMA_VERSION = 3
#: Versions :meth:`SampleStore.open` can upgrade in place.
_MIGRATABLE = (1, 2)
#: Key of the PostgreSQL advisory lock that serialises writers ("mrv-samp").
WRITE_LOCK_KEY = 0x6D72762D73616D70
DEFAULT_URL = "sqlite:///out/samples.db"
#: Environment variable holding the default database URL (``mrv samples --db`` and the flows).
DB_ENV = "MRV_SAMPLES_DB"
#: Default wait for the write lock (s) before a submission gives up (``--lock-timeout``).
LOCK_TIMEOUT_S = 600.0
#: How often a waiting writer reports that it is still waiting (s).
WAIT_NOTE_S = 10.0
#: Size of the grid cells of the ``gx``/``gy`` neighbourhood index (m, in the project CRS).
CELL_M = 1000.0
_SQLITE_MAGIC = b"SQLite format 3\x00"

#: Submission status values in the ledger.
STORED = "stored"
REJECTED = "rejected"
SUPERSEDED = "superseded"
WITHDRAWN = "withdrawn"
FAILED = "failed"
STATUSES = (STORED, REJECTED, SUPERSEDED, WITHDRAWN, FAILED)


class StoreBusy(SampleError):
    """The write lock of the sample store was not obtained within the lock timeout."""


metadata = sa.MetaData()

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, nullable=False),
)


def _submissions_table(md: sa.MetaData, name: str = "submissions") -> sa.Table:
    status_in = ", ".join(f"'{s}'" for s in STATUSES)
    return sa.Table(
        name,
        md,
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
        sa.Column("profile_sha256", sa.String(64), nullable=True),
        sa.Column("superseded_by", sa.Integer, nullable=True),
        sa.Column("withdrawn_utc", sa.Text, nullable=True),
        sa.Column("withdrawn_reason", sa.Text, nullable=True),
        sa.Column("summary", sa.Text, nullable=True),
        sa.CheckConstraint(f"status IN ({status_in})", name=f"ck_{name}_status"),
        sa.CheckConstraint("accepted + rejected = submitted", name=f"ck_{name}_counts"),
    )


submissions = _submissions_table(metadata)
# A stored file is stored once per agency (a resubmission under another profile supersedes it first);
# whole-file rejections and failures may be retried.
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
#: Columns of ``samples`` stored as floating-point numbers.
FLOAT_COLUMNS = frozenset(_FLOAT_COLUMNS)
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
    sa.Column("ingest_flag", sa.Text, nullable=False, server_default=""),
    sa.Column("gx", sa.Integer, nullable=True),
    sa.Column("gy", sa.Integer, nullable=True),
    sa.UniqueConstraint("agency", "sample_id", name="uq_samples_agency_sample_id"),
)
# The QA's neighbourhood queries: one index serves "any date in a cell" (outliers) and "one date in a cell"
# (duplicates) as equality lookups; a second one the records of a site (jitter).
sa.Index("ix_samples_cell_date", samples.c.gy, samples.c.gx, samples.c.sampling_date)
sa.Index("ix_samples_site", samples.c.agency, samples.c.site_id)

#: Columns of ``samples`` (in table order), copied unchanged into ``retired_samples``.
SAMPLE_TABLE_COLUMNS = [c.name for c in samples.columns]

retired_samples = sa.Table(
    "retired_samples",
    metadata,
    sa.Column("retired_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.Integer, nullable=False),
    sa.Column("submission_id", sa.Integer, sa.ForeignKey("submissions.submission_id"), nullable=False, index=True),
    sa.Column("agency", sa.Text, nullable=False),
    *[_canonical_column(c) for c in CANONICAL_COLUMNS],
    sa.Column("qa_flag", sa.Text, nullable=False, server_default=""),
    sa.Column("ingest_flag", sa.Text, nullable=False, server_default=""),
    sa.Column("gx", sa.Integer, nullable=True),
    sa.Column("gy", sa.Integer, nullable=True),
    sa.Column("retired_utc", sa.Text, nullable=False),
    sa.Column("retired_reason", sa.Text, nullable=False),
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
    sa.Column("code", sa.Text, nullable=True),
)

raw_files = sa.Table(
    "raw_files",
    metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("size_bytes", sa.Integer, nullable=False),
    sa.Column("content", sa.LargeBinary, nullable=False),
)


def cells(values: np.ndarray | pd.Series) -> np.ndarray:
    """Grid cell index ``floor(v / CELL_M)`` of coordinates in metres (-1 for NaN, which never occurs in the store)."""
    v = np.asarray(values, dtype=float)
    return np.where(np.isfinite(v), np.floor(v / CELL_M), -1).astype(np.int64)


# ------------------------------------------------------------------------------------- URLs, secrets


def redact_url(url: str | Path) -> str:
    """``url`` with its password (and any ``password=`` query value) shown as ``***``; paths unchanged."""
    text = str(url)
    if "://" not in text:
        return text
    try:
        parsed = sa.engine.make_url(text)
    except (sa.exc.ArgumentError, ValueError):
        head, sep, rest = text.partition("://")
        return f"{head}{sep}***" if "@" in rest else text
    if parsed.query:
        parsed = parsed.update_query_dict(
            {k: "***" for k in parsed.query if "pass" in k.lower() or "secret" in k.lower() or "token" in k.lower()}
        )
    return str(parsed.render_as_string(hide_password=True))


def resolve_url(spec: str | Path | None) -> str:
    """The database URL ``spec`` stands for: ``env:NAME`` reads variable ``NAME``; ``None`` the default.

    The default is ``$MRV_SAMPLES_DB`` when set, else :data:`DEFAULT_URL`.
    """
    if spec is None or str(spec) == "":
        return os.environ.get(DB_ENV) or DEFAULT_URL
    text = str(spec)
    if text.startswith("env:"):
        name = text[4:]
        value = os.environ.get(name)
        if not name or not value:
            raise ConfigError(
                f"The sample database URL is to be read from the environment variable {name or '(no name)'!s}, "
                "which is not set. Export it (e.g. NAME=postgresql+psycopg://user:password@host/db) or pass --db URL."
            )
        return value
    return text


@dataclass(frozen=True)
class SampleStore:
    """An open sample database. Create with :meth:`SampleStore.open`; close with :meth:`close`."""

    url: str = field(repr=False)
    """The database URL as given (may hold a password: show :attr:`safe_url` instead)."""
    engine: Engine = field(repr=False)
    migrated_from: int | None = None
    """Schema version the database had before :meth:`open` upgraded it (None: no upgrade)."""
    lock_timeout_s: float = LOCK_TIMEOUT_S
    """How long a writer waits for the write lock before :class:`StoreBusy`."""
    on_wait: Callable[[float], None] | None = field(default=None, repr=False, compare=False)
    """Called with the seconds waited so far, every ``WAIT_NOTE_S`` while a writer waits for the lock."""

    @property
    def safe_url(self) -> str:
        """The URL with its password redacted, for messages and logs."""
        return redact_url(self.url)

    def __str__(self) -> str:
        return f"SampleStore({self.safe_url})"

    @classmethod
    def open(
        cls,
        url: str | Path | None = None,
        *,
        lock_timeout_s: float = LOCK_TIMEOUT_S,
        on_wait: Callable[[float], None] | None = None,
    ) -> SampleStore:
        """Open (and create, if new) the store at ``url`` (see :func:`resolve_url`).

        ``url`` is a database URL (``sqlite:///out/samples.db``, ``postgresql+psycopg://...``),
        ``env:NAME``, or a plain file path, taken as an SQLite file.
        """
        if not lock_timeout_s > 0:
            raise ConfigError(f"The lock timeout must be a positive number of seconds, got {lock_timeout_s}.")
        text = resolve_url(url)
        if "://" not in text:
            text = f"sqlite:///{text}"
        shown = redact_url(text)
        try:
            parsed = sa.engine.make_url(text)
        except (sa.exc.ArgumentError, ValueError):
            raise ConfigError(
                f"'{shown}' is not a database URL. Use e.g. sqlite:///out/samples.db or postgresql+psycopg://user@host/db."
            ) from None
        is_sqlite = parsed.get_backend_name() == "sqlite"
        if is_sqlite and parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
            _check_sqlite_file(Path(parsed.database))
        try:
            engine = sa.create_engine(
                parsed, connect_args={"timeout": min(WAIT_NOTE_S, lock_timeout_s)} if is_sqlite else {}
            )
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
            raise ConfigError(
                f"Cannot use the database URL '{shown}': {_redacted(exc, text)}. Check the URL, or install the "
                "database driver it names (PostgreSQL: pip install 'psycopg[binary]')."
            ) from None
        if is_sqlite:
            _configure_sqlite(engine)
        store = cls(url=text, engine=engine, lock_timeout_s=lock_timeout_s, on_wait=on_wait)
        try:
            migrated_from = store._create_schema()
        except sa.exc.DatabaseError as exc:
            engine.dispose()
            raise ConfigError(
                f"Cannot open the sample database '{shown}': {_redacted(exc.orig, text)}. "
                "Check the URL, the server, the path and permissions."
            ) from None
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

        Writers queue: on SQLite the transaction starts with ``BEGIN IMMEDIATE`` (retried while
        the database is locked), on PostgreSQL it first takes the advisory lock ``WRITE_LOCK_KEY``
        (released at commit or rollback); both wait up to :attr:`lock_timeout_s`, then raise
        :class:`StoreBusy`.
        """
        with self.engine.connect() as conn:
            conn.execution_options(mrv_write=True, mrv_lock_timeout_s=self.lock_timeout_s, mrv_on_wait=self.on_wait)
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    self._advisory_lock(conn)
                yield conn

    def _advisory_lock(self, conn: Connection) -> None:
        start = time.monotonic()
        note = start + WAIT_NOTE_S
        pause = 0.02
        while not conn.execute(sa.text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": WRITE_LOCK_KEY}).scalar():
            now = time.monotonic()
            if now - start >= self.lock_timeout_s:
                raise StoreBusy(_busy_message(self.safe_url, now - start))
            if self.on_wait is not None and now >= note:
                self.on_wait(now - start)
                note += WAIT_NOTE_S
            time.sleep(pause)
            pause = min(pause * 1.5, 0.5)

    def _create_schema(self) -> int | None:
        """Create a new schema or check (and upgrade) an existing one; returns the version upgraded from."""
        with self.engine.connect() as conn:
            found = (
                conn.execute(sa.select(schema_version.c.version)).scalars().all()
                if sa.inspect(conn).has_table("schema_version")
                else []
            )
        if found and found != [SCHEMA_VERSION] and not (len(found) == 1 and found[0] in _MIGRATABLE):
            raise ConfigError(
                f"The sample database {self.safe_url} has schema version {found[0]}, but this version of mrv "
                f"uses schema version {SCHEMA_VERSION} (and can upgrade only from {list(_MIGRATABLE)}). "
                "Use a matching mrv version or a new --db."
            )
        if found and found[0] in _MIGRATABLE:
            return self._upgrade()
        if found == [SCHEMA_VERSION]:
            return None  # nothing to write: opening a store does not queue behind a writer
        with self.transaction() as conn:
            metadata.create_all(conn)
            if not conn.execute(sa.select(schema_version.c.version)).first():
                conn.execute(schema_version.insert().values(version=SCHEMA_VERSION))
        return None

    def _upgrade(self) -> int | None:
        """Upgrade an older schema in one write transaction (re-checking the version under the lock)."""
        with self.engine.connect() as conn:
            sqlite = conn.dialect.name == "sqlite"
            if sqlite:  # the ledger rebuild needs foreign keys off, which SQLite allows only outside a transaction
                conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
            try:
                conn.execution_options(mrv_write=True, mrv_lock_timeout_s=self.lock_timeout_s, mrv_on_wait=self.on_wait)
                with conn.begin():
                    if not sqlite:
                        self._advisory_lock(conn)
                    version = int(conn.execute(sa.select(schema_version.c.version)).scalar_one())
                    if version == SCHEMA_VERSION:  # another process upgraded it meanwhile
                        return None
                    _migrate(conn, version)
                    metadata.create_all(conn)
                    for table in metadata.sorted_tables:
                        for index in table.indexes:
                            index.create(conn, checkfirst=True)
                    if sqlite:
                        problems = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                        if problems:  # pragma: no cover - guards the rebuild
                            raise SampleError(f"Schema upgrade broke foreign keys: {problems[:5]}; nothing was changed.")
                    conn.execute(schema_version.update().values(version=SCHEMA_VERSION))
                return version
            finally:
                if sqlite:
                    conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(schema_version.c.version)).scalar_one())


def _busy_message(shown: str, waited_s: float) -> str:
    return (
        f"The sample database {shown} stayed locked by other writers for {waited_s:.0f} s, so this submission "
        "was not stored. Submit it again later, or allow a longer wait with --lock-timeout SECONDS."
    )


def _redacted(exc: object, url: str) -> str:
    """``str(exc)`` with the URL's password (if any) removed."""
    text = str(exc).strip()
    password = sa.engine.make_url(url).password if "://" in url else None
    if password:
        text = text.replace(str(password), "***")
    return text.splitlines()[0] if text else type(exc).__name__


def _check_sqlite_file(path: Path) -> None:
    """A folder for a new SQLite file, or an existing regular file that is an SQLite database."""
    if path.exists():
        if not path.is_file():
            raise ConfigError(f"--db {path} is not a regular file (a folder or a device); give an SQLite file or a URL.")
        try:
            with path.open("rb") as fh:
                head = fh.read(len(_SQLITE_MAGIC))
        except OSError as exc:
            raise ConfigError(f"Cannot read the sample database {path}: {exc.strerror}. Check the permissions.") from exc
        if head and head != _SQLITE_MAGIC:
            raise ConfigError(
                f"{path} is not an SQLite database (it does not start with the SQLite header). Give the sample "
                "database file, a new file name, or a database URL (e.g. postgresql+psycopg://user@host/db)."
            )
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"Cannot create the folder for the sample database {path}: {exc.strerror}.") from exc


def _migrate(conn: Connection, version: int) -> None:
    """Upgrade schema ``version`` to :data:`SCHEMA_VERSION` inside the caller's transaction.

    1 -> 2: add ``samples.soc_sd_g_kg`` and ``samples.gps_accuracy_m`` (nullable). Samples whose
    SOC was converted from organic matter (method ending in the van Bemmelen note) get their
    conversion SD back: ``0.08 x SOM = 0.08 / 0.58 x SOC`` (:func:`mrv.samples.stocks.som_to_soc`).

    2 -> 3: the ledger gains ``profile_sha256`` (NULL for older rows: their profile is unknown, so
    a resubmission of their file supersedes them), ``superseded_by``, ``withdrawn_utc``,
    ``withdrawn_reason`` and ``summary``, and its status check admits ``superseded``, ``withdrawn``
    and ``failed`` (PostgreSQL: the constraint is replaced; SQLite: the table is rebuilt, foreign
    keys off, as SQLite's ALTER TABLE documentation prescribes). Samples gain their grid cell
    ``gx``/``gy`` and ``ingest_flag`` (notes of the ingest, e.g. a bulk density stored as missing),
    rejections their reason ``code``; ``retired_samples`` and the neighbourhood indexes are created
    by the caller.
    Both SQLite and PostgreSQL run DDL transactionally, so a failed upgrade leaves the old version intact.
    """
    double = sa.Double().compile(dialect=conn.dialect)
    if version == 1:
        have = {c["name"] for c in sa.inspect(conn).get_columns("samples")}
        for name in ("soc_sd_g_kg", "gps_accuracy_m"):
            if name not in have:
                conn.exec_driver_sql(f"ALTER TABLE samples ADD COLUMN {name} {double}")
        conn.execute(
            samples.update()
            .where(samples.c.method.like("%x organic matter (van Bemmelen)%"), samples.c.soc_sd_g_kg.is_(None))
            .values(soc_sd_g_kg=samples.c.soc_g_kg * (VAN_BEMMELEN_FACTOR_SD / VAN_BEMMELEN_FACTOR))
        )
        version = 2
    if version == 2:
        old_cols = [c["name"] for c in sa.inspect(conn).get_columns("submissions")]
        if conn.dialect.name == "sqlite":
            tmp = _submissions_table(sa.MetaData(), "submissions_v3")
            tmp.create(conn)
            cols = ", ".join(f'"{c}"' for c in old_cols)
            conn.exec_driver_sql(f"INSERT INTO submissions_v3 ({cols}) SELECT {cols} FROM submissions")
            conn.exec_driver_sql("DROP TABLE submissions")
            conn.exec_driver_sql("ALTER TABLE submissions_v3 RENAME TO submissions")
        else:
            for col in submissions.columns:
                if col.name not in old_cols:
                    kind = col.type.compile(dialect=conn.dialect)
                    conn.exec_driver_sql(f"ALTER TABLE submissions ADD COLUMN {col.name} {kind}")
            conn.exec_driver_sql("ALTER TABLE submissions DROP CONSTRAINT IF EXISTS ck_submissions_status")
            status_in = ", ".join(f"'{s}'" for s in STATUSES)
            conn.exec_driver_sql(
                f"ALTER TABLE submissions ADD CONSTRAINT ck_submissions_status CHECK (status IN ({status_in}))"
            )
        have = {c["name"] for c in sa.inspect(conn).get_columns("samples")}
        for name in ("gx", "gy"):
            if name not in have:
                conn.exec_driver_sql(f"ALTER TABLE samples ADD COLUMN {name} INTEGER")
        if "ingest_flag" not in have:
            conn.exec_driver_sql("ALTER TABLE samples ADD COLUMN ingest_flag TEXT NOT NULL DEFAULT ''")
        if "code" not in {c["name"] for c in sa.inspect(conn).get_columns("rejections")}:
            conn.exec_driver_sql("ALTER TABLE rejections ADD COLUMN code TEXT")
        rows = conn.execute(sa.select(samples.c.id, samples.c.x, samples.c.y)).all()
        if rows:
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            gx = cells(np.array([r[1] for r in rows], dtype=float))
            gy = cells(np.array([r[2] for r in rows], dtype=float))
            stmt = samples.update().where(samples.c.id == sa.bindparam("pk")).values(
                gx=sa.bindparam("cx"), gy=sa.bindparam("cy")
            )
            for lo in range(0, len(ids), 20_000):
                conn.execute(stmt, [{"pk": int(i), "cx": int(a), "cy": int(b)}
                                    for i, a, b in zip(ids[lo:lo + 20_000], gx[lo:lo + 20_000],
                                                       gy[lo:lo + 20_000], strict=True)])  # fmt: skip


def _configure_sqlite(engine: Engine) -> None:
    """Foreign keys and WAL on every connection; explicit BEGIN (pysqlite's own is unreliable); writers queue."""

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: object) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves, below
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA temp_store=MEMORY")  # the QA's temporary key tables
        cur.execute("PRAGMA cache_size=-8192")  # 8 MiB of pages (default 2): large submissions update big indexes
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        if not options.get("mrv_write", False):
            conn.exec_driver_sql("BEGIN")
            return
        lock_timeout_s = float(options.get("mrv_lock_timeout_s", LOCK_TIMEOUT_S))
        on_wait = options.get("mrv_on_wait")
        # Each attempt waits up to the connection's busy timeout (WAIT_NOTE_S); retried until lock_timeout_s.
        start = time.monotonic()
        while True:
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                return
            except sa.exc.OperationalError as exc:
                if "locked" not in str(exc.orig) and "busy" not in str(exc.orig):
                    raise
            waited = time.monotonic() - start
            if waited >= lock_timeout_s:
                raise StoreBusy(_busy_message(redact_url(str(engine.url)), waited))
            if on_wait is not None:
                on_wait(waited)


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
    profile_sha256: str | None = None
    """SHA-256 of the format profile the file was read with (None: stored before schema 3)."""
    superseded_by: int | None = None
    withdrawn_utc: str | None = None
    withdrawn_reason: str | None = None
    summary: str | None = None
    """Counts by outcome and reason, JSON (see :func:`mrv.samples.submit.summarise`)."""

    @property
    def in_use(self) -> bool:
        """True when the submission's samples are used (status ``stored``)."""
        return self.status == STORED

    @property
    def history(self) -> str:
        """``superseded by 7``, ``withdrawn 2026-...: reason``, the rejection reason, or ``""``."""
        if self.status == SUPERSEDED:
            return f"superseded by {self.superseded_by}" if self.superseded_by else "superseded"
        if self.status == WITHDRAWN:
            return f"withdrawn {self.withdrawn_utc}: {self.withdrawn_reason}"
        return self.reason or ""


class AcceptedRow(NamedTuple):
    """One accepted record of a submission (a named tuple: reports of 200,000 rows are built fast)."""

    row: int
    sample_id: str
    qa_flag: str = ""
    """Why the QA flagged the sample (kept in the store), ``""`` when fine."""
    note: str = ""
    """Notes of the ingest on the record (e.g. a bulk density stored as missing), ``""`` when none."""


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
        out = [(a.row, a.sample_id, (f"ACCEPTED, FLAGGED: {a.qa_flag}" if a.qa_flag else "ACCEPTED")
                + (f", NOTE: {a.note}" if a.note else "")) for a in self.accepted_rows]  # fmt: skip
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
    table = samples if row._mapping["status"] == STORED else retired_samples
    acc = fetch_tuples(
        conn,
        sa.select(table.c.row, table.c.sample_id, table.c.qa_flag, table.c.ingest_flag)
        .where(table.c.submission_id == submission_id)
        .order_by(table.c.row),
    )
    rej = fetch_tuples(
        conn,
        sa.select(rejections.c.row, rejections.c.column, rejections.c.value, rejections.c.reason, rejections.c.code)
        .where(rejections.c.submission_id == submission_id)
        .order_by(rejections.c.row, rejections.c.id),
    )
    return SubmissionReport(
        submission=_submission(row),
        accepted_rows=tuple(AcceptedRow(int(r), str(i), str(q or ""), str(n or "")) for r, i, q, n in acc),
        rejections=tuple(Rejection(int(r), c, v, why, code or "") for r, c, v, why, code in rej),
        duplicate_of=duplicate_of,
    )


SAMPLE_FRAME_COLUMNS = [*CANONICAL_COLUMNS, "submission_id", "agency", "qa_flag", "ingest_flag"]


@dataclass(frozen=True)
class SampleQuery:
    """Which stored samples a run takes (``rounds[].samples: {store: ...}`` in a run config).

    Only samples in use (of ``stored`` submissions) are returned; dates are inclusive.
    """

    start: dt.date | None = None
    end: dt.date | None = None
    sources: tuple[str, ...] = ()
    """Empty: every source."""
    agencies: tuple[str, ...] = ()
    """Empty: every agency."""
    include_flagged: bool = True
    """False: leave out samples with a QA flag."""


def samples_frame(
    store: SampleStore,
    *,
    source: str | None = None,
    agency: str | None = None,
    query: SampleQuery | None = None,
) -> pd.DataFrame:
    """Stored samples in use in canonical form (plus ``submission_id``, ``agency``, ``qa_flag``), oldest first."""
    stmt = sa.select(*[samples.c[c] for c in SAMPLE_FRAME_COLUMNS]).order_by(samples.c.submission_id, samples.c.row)
    if source is not None:
        stmt = stmt.where(samples.c.source == source)
    if agency is not None:
        stmt = stmt.where(samples.c.agency == agency)
    if query is not None:
        stmt = _query_filters(stmt, query)
    with store.engine.connect() as conn:
        rows = fetch_tuples(conn, stmt)
    frame = pd.DataFrame(rows, columns=SAMPLE_FRAME_COLUMNS)
    for col in _FLOAT_COLUMNS:
        frame[col] = frame[col].astype(float)
    return frame


def _query_filters(stmt: Any, query: SampleQuery) -> Any:
    if query.start is not None:  # ISO dates compare as text; the store writes sampling_date as YYYY-MM-DD
        stmt = stmt.where(samples.c.sampling_date >= query.start.isoformat())
    if query.end is not None:
        stmt = stmt.where(samples.c.sampling_date <= query.end.isoformat())
    if query.sources:
        stmt = stmt.where(samples.c.source.in_(list(query.sources)))
    if query.agencies:
        stmt = stmt.where(samples.c.agency.in_(list(query.agencies)))
    if not query.include_flagged:
        stmt = stmt.where(samples.c.qa_flag == "")
    return stmt


def store_state(store: SampleStore, query: SampleQuery | None = None) -> dict[str, Any]:
    """What a run's samples depend on: per submission in use, its number of matching samples and of flagged ones.

    A run's sample step is keyed on this, so a new, superseded or withdrawn submission with
    samples in the window, or a QA re-run that changed their flags, recomputes it; nothing else does.
    """
    flagged = sa.func.sum(sa.case((samples.c.qa_flag != "", 1), else_=0))
    stmt = _query_filters(
        sa.select(samples.c.submission_id, sa.func.count(), flagged).group_by(samples.c.submission_id),
        query or SampleQuery(),
    ).order_by(samples.c.submission_id)
    with store.engine.connect() as conn:
        rows = fetch_tuples(conn, stmt)
    return {
        "submissions": [int(r[0]) for r in rows],
        "samples": [int(r[1]) for r in rows],
        "flagged": [int(r[2] or 0) for r in rows],
        "schema": SCHEMA_VERSION,
    }


def store_query(store_cfg: Any) -> tuple[str, SampleQuery]:
    """URL and query of a run config's :class:`mrv.config.StoreSamplesConfig` (``rounds[].store``)."""
    return resolve_url(store_cfg.url), SampleQuery(
        start=store_cfg.start, end=store_cfg.end, sources=tuple(store_cfg.sources), agencies=tuple(store_cfg.agencies)
    )


def round_samples(
    url: str, query: SampleQuery, *, project_crs: str
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The stored samples a run round takes (canonical columns + ``qa_flag``, x/y in ``project_crs``) and their state.

    Samples stored in another CRS (a store shared by projects) are transformed with pyproj
    (``always_xy``); the state is :func:`store_state` of the same query.
    """
    with SampleStore.open(url) as store:
        frame = samples_frame(store, query=query)
        state = store_state(store, query)
    if len(frame):
        from pyproj import CRS, Transformer

        target = CRS.from_user_input(project_crs)
        for crs_text in frame["crs"].dropna().unique():
            if CRS.from_user_input(str(crs_text)) == target:
                continue
            sel = (frame["crs"] == crs_text).to_numpy()
            tx = Transformer.from_crs(str(crs_text), target, always_xy=True)
            x, y = tx.transform(frame.loc[sel, "x"].to_numpy(), frame.loc[sel, "y"].to_numpy())
            frame.loc[sel, "x"], frame.loc[sel, "y"] = x, y
            frame.loc[sel, "crs"] = project_crs
    return frame, state


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


def fetch_tuples(conn: Connection, stmt: sa.Executable) -> list[tuple[Any, ...]]:
    """All rows of ``stmt`` as plain tuples, read from the DBAPI cursor (several times faster than Row objects)."""
    result = conn.execute(stmt)
    try:
        return [tuple(r) for r in result.cursor.fetchall()] if result.cursor is not None else []  # type: ignore[attr-defined]
    finally:
        result.close()


def insert_rows(conn: Connection, table: sa.Table, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    """``INSERT`` many rows through the DBAPI's executemany (no per-row SQLAlchemy compilation)."""
    if not rows:
        return
    prep = conn.dialect.identifier_preparer
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    sql = (
        f"INSERT INTO {prep.format_table(table)} ({', '.join(prep.quote(c) for c in columns)}) "
        f"VALUES ({', '.join([mark] * len(columns))})"
    )
    conn.exec_driver_sql(sql, rows)


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def db_column(values: pd.Series) -> list[object]:
    """A column as Python values for the database: NaN / NA -> None, numpy scalars -> Python (vectorised)."""
    if pd.api.types.is_float_dtype(values.dtype):
        arr = values.to_numpy(dtype=float)
        out: list[object] = arr.tolist()
        for i in np.flatnonzero(np.isnan(arr)):
            out[i] = None
        return out
    if pd.api.types.is_integer_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
        return list(values.tolist())
    return list(values.astype(object).where(values.notna(), None).tolist())


def db_value(value: object) -> object:
    """numpy scalars -> Python, NaN -> NULL."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
