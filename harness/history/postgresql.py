"""The history in PostgreSQL: one database for many repositories (`--history
postgresql://USER@HOST/DATABASE`), for organisations that want every model repository's runs
side by side. The same records as the other stores (harness.history.records), in the same two
tables (harness.history.sql) inside a schema of their own, `harness`, so they sit beside other
applications' tables. Each run names its repository (`--repository`, in Actions
`$GITHUB_REPOSITORY`); each figure its testbed (device profile and image).

Driver: psycopg 3 (`pip install 'harness[postgresql]'`), imported only here. Writers are safe
side by side: a run is one transaction, and a run stored twice (same digest) is stored once
(`ON CONFLICT DO NOTHING`). The schema is created on first use under an advisory lock.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from typing import Any

from harness.errors import ConfigError
from harness.history.records import RunRecord
from harness.history.sql import RUN_COLUMNS, Queries, run_values

__all__ = ["SCHEMA_VERSION", "PostgresHistory", "redact"]

SCHEMA_VERSION = 2  # the same tables as the SQLite file's schema 2
_LOCK = 0x6861726E657373  # pg_advisory_xact_lock key while the schema is created ("harness")

_SCHEMA = """
CREATE SCHEMA IF NOT EXISTS harness;
CREATE TABLE IF NOT EXISTS harness.meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS harness.runs (
    id BIGSERIAL PRIMARY KEY,
    repository TEXT NOT NULL DEFAULT '',
    created TEXT NOT NULL,
    recorded TEXT NOT NULL,
    git_commit TEXT,
    git_ref TEXT,
    machine TEXT NOT NULL,
    machine_info TEXT NOT NULL,
    harness_version TEXT,
    config TEXT,
    digest TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS harness.figures (
    run_id BIGINT NOT NULL REFERENCES harness.runs(id) ON DELETE CASCADE,
    device TEXT NOT NULL,
    testbed TEXT NOT NULL,
    model TEXT NOT NULL,
    suite TEXT NOT NULL,
    fidelity TEXT NOT NULL,
    figure TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    verdict TEXT NOT NULL,
    model_sha256 TEXT,
    versions TEXT NOT NULL,
    raw TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS figures_series
    ON harness.figures (device, model, suite, figure, run_id);
CREATE INDEX IF NOT EXISTS figures_run ON harness.figures (run_id);
CREATE INDEX IF NOT EXISTS runs_repository ON harness.runs (repository, created);
"""


def redact(location: str) -> str:
    """The URI without its password: postgresql://user:***@host/db."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", location)


class PostgresHistory(Queries):
    def __init__(self, location: str, *, repository: str | None = None) -> None:
        try:
            import psycopg
        except ImportError:
            raise ConfigError(
                "a PostgreSQL history needs the psycopg driver: pip install 'harness[postgresql]'"
            ) from None
        self.location = redact(location)
        self.repository = repository
        try:
            self.conn = psycopg.connect(location, autocommit=True, options="-c search_path=harness")
        except psycopg.Error as exc:
            raise ConfigError(
                f"cannot connect to the PostgreSQL history at {self.location}: {str(exc).strip()}"
            ) from None
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
            self.conn.execute(_SCHEMA)
            self.conn.execute(
                "INSERT INTO harness.meta VALUES ('schema', %s) ON CONFLICT DO NOTHING",
                (str(SCHEMA_VERSION),),
            )
            row = self.conn.execute(
                "SELECT value FROM harness.meta WHERE key = 'schema'"
            ).fetchone()
        if row is not None and int(row[0]) > SCHEMA_VERSION:
            self.conn.close()
            raise ConfigError(
                f"{self.location}: history schema {row[0]} is newer than this harness "
                f"understands ({SCHEMA_VERSION}); upgrade harness"
            )

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> PostgresHistory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(sql.replace("?", "%s"), tuple(params))

    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self.conn.cursor() as cursor:
            cursor.executemany(sql.replace("?", "%s"), rows)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        with self.conn.transaction():
            yield

    def _insert_run(self, record: RunRecord) -> int | None:
        row = self._execute(
            f"INSERT INTO runs ({RUN_COLUMNS}) VALUES ({', '.join('?' * 10)})"
            " ON CONFLICT (digest) DO NOTHING RETURNING id",
            run_values(record),
        ).fetchone()
        return int(row[0]) if row is not None else None
