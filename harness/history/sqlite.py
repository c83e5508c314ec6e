"""The history as one SQLite file: the default store (`.harness/history.sqlite` beside the
config), and the local cache of the git-branch store.

stdlib sqlite3 in WAL mode with a busy timeout, so pytest-xdist workers, two sessions and a
report reading at once are all fine: each run goes in with one `BEGIN IMMEDIATE` transaction, so
a reader sees a run whole or not at all and no writer loses rows. A file that is not a database,
or fails SQLite's quick check, is moved aside (renamed with a timestamp, never deleted) and a
fresh one started, with a warning naming both paths. Tables and queries: harness.history.sql.
A file of schema 1 (before repositories and testbeds) is upgraded in place.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from harness.history.records import RunRecord
from harness.history.sql import RUN_COLUMNS, Queries, run_values

__all__ = ["BUSY_TIMEOUT_S", "SCHEMA_VERSION", "Store", "StoreError", "StoreWarning"]

SCHEMA_VERSION = 2
BUSY_TIMEOUT_S = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    repository TEXT NOT NULL DEFAULT '',  -- OWNER/NAME of the repository measured ('' unknown)
    created TEXT NOT NULL,            -- when the session wrote its results (UTC, ISO 8601)
    recorded TEXT NOT NULL,           -- when they were first stored
    git_commit TEXT,
    git_ref TEXT,
    machine TEXT NOT NULL,            -- fingerprint: hash of cpu, cores, memory, OS, python
    machine_info TEXT NOT NULL,       -- what the fingerprint hashes (JSON)
    harness_version TEXT,
    config TEXT,
    digest TEXT NOT NULL UNIQUE       -- of the results document: storing it twice is a no-op
);
CREATE TABLE IF NOT EXISTS figures (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    device TEXT NOT NULL,
    testbed TEXT NOT NULL DEFAULT '', -- the device profile and its image tag
    model TEXT NOT NULL,
    suite TEXT NOT NULL,
    fidelity TEXT NOT NULL,
    figure TEXT NOT NULL,
    value REAL NOT NULL,
    verdict TEXT NOT NULL,
    model_sha256 TEXT,
    versions TEXT NOT NULL,           -- runtime versions (JSON)
    raw TEXT NOT NULL                 -- summary of the raw samples: n, p50, p90, CI (JSON)
);
CREATE INDEX IF NOT EXISTS figures_series ON figures (device, model, suite, figure, run_id);
CREATE INDEX IF NOT EXISTS figures_run ON figures (run_id);
"""

# Schema 1 had neither column: its runs belong to no named repository, its testbed is the device.
_UPGRADE_1 = """
ALTER TABLE runs ADD COLUMN repository TEXT NOT NULL DEFAULT '';
ALTER TABLE figures ADD COLUMN testbed TEXT NOT NULL DEFAULT '';
UPDATE figures SET testbed = device;
"""


class StoreWarning(UserWarning):
    """Something about the history file the user should know (it was moved aside)."""


class StoreError(RuntimeError):
    """The history file cannot be used (another program's database, a newer schema)."""


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock beside the database, held while it is checked and created."""
    try:
        import fcntl
    except ImportError:  # not POSIX: SQLite's own locking still protects the data
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Store(Queries):
    """The history file. Open with `Store(path)`; use as a context manager or call close().
    `repository` scopes every read to that repository's runs."""

    def __init__(
        self, path: Path, timeout_s: float = BUSY_TIMEOUT_S, repository: str | None = None
    ) -> None:
        self.path = Path(path)
        self.repository = repository
        self.timeout_s = timeout_s
        self.moved_aside: Path | None = None  # where a corrupt file went, if one did
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.path):
            self.db = self._open()

    # -- opening ----------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
        db.execute(f"PRAGMA busy_timeout = {int(self.timeout_s * 1000)}")
        db.execute("PRAGMA foreign_keys = ON")
        return db

    def _healthy(self) -> bool:
        """False when the file is not a readable SQLite database (it is then moved aside).
        A busy or unopenable file raises instead: it is not ours to move."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return True
        try:
            db = self._connect()
            try:
                rows = db.execute("PRAGMA quick_check").fetchall()
                tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
            finally:
                db.close()
        except sqlite3.OperationalError:
            raise  # locked, busy, no permission: nothing says the file is damaged
        except sqlite3.DatabaseError:
            return False  # not a database, or malformed
        if rows != [("ok",)]:
            return False
        if tables and not {"runs", "figures"} <= tables:
            raise StoreError(
                f"{self.path} is an SQLite database but not a harness history (tables: "
                f"{', '.join(sorted(tables))}); name another file for the history"
            )
        return True

    def _move_aside(self) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        counter = 1
        while target.exists():
            counter += 1
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{counter}")
        os.replace(self.path, target)
        for suffix in ("-wal", "-shm", "-journal"):
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                os.replace(side, target.with_name(target.name + suffix))
        self.moved_aside = target
        warnings.warn(
            f"harness history {self.path} is not a readable SQLite database; kept it as "
            f"{target} and started a new history at {self.path}",
            StoreWarning,
            stacklevel=4,
        )

    def _open(self) -> sqlite3.Connection:
        if not self._healthy():
            self._move_aside()
        db = self._connect()
        db.execute("PRAGMA journal_mode = WAL")
        # One transaction (executescript commits anything pending before it starts).
        db.executescript(
            f"BEGIN IMMEDIATE; {_SCHEMA}"
            f"INSERT OR IGNORE INTO meta VALUES ('schema', '{SCHEMA_VERSION}'); COMMIT;"
        )
        version = int(db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0])
        if version > SCHEMA_VERSION:
            db.close()
            raise StoreError(
                f"{self.path}: history schema {version} is newer than this harness "
                f"understands ({SCHEMA_VERSION}); upgrade harness or use another --db"
            )
        if version == 1:
            db.executescript(
                f"BEGIN IMMEDIATE; {_UPGRADE_1}"
                f"UPDATE meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema'; COMMIT;"
            )
        return db

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what harness.history.sql asks of a backend -------------------------------------------

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.db.execute(sql, params)

    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.db.executemany(sql, rows)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _insert_run(self, record: RunRecord) -> int | None:
        cursor = self.db.execute(
            f"INSERT INTO runs ({RUN_COLUMNS}) VALUES ({', '.join('?' * 10)})",
            run_values(record),
        )
        return int(cursor.lastrowid or 0)
