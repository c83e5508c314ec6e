"""The relational form of the history, shared by the SQLite file and PostgreSQL: two tables,
`runs` and `figures`, and the queries every report asks (points, series, baselines, trends).

A backend supplies a connection, its schema, its transaction and how it inserts a run
(`_execute`, `_transaction`, `_insert_run`); queries are written once here with `?` for a
parameter (a backend whose driver wants `%s` rewrites them in `_execute`).

Tables (SQLite and PostgreSQL alike):
- `runs`: id, repository, created, recorded, git commit and ref, machine fingerprint and what it
  hashes, harness version, config path, and the document's digest (unique: storing a run twice
  is a no-op).
- `figures`: run id, device, testbed, model, suite, fidelity, figure, value (numeric figures
  only), verdict, model SHA-256, runtime versions (JSON) and the raw samples' summary (JSON).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.history.records import FigureRow, RunRecord
from harness.history.trends import Point, Trend, trend

__all__ = ["Queries", "StoredRun"]

RUN_COLUMNS = (
    "repository, created, recorded, git_commit, git_ref, machine, machine_info, harness_version,"
    " config, digest"
)
FIGURE_COLUMNS = (
    "run_id, device, testbed, model, suite, fidelity, figure, value, verdict, model_sha256,"
    " versions, raw"
)


@dataclass(frozen=True)
class StoredRun:
    """The stored figures of (device, model, suite) in one run of the history."""

    run_id: int
    created: str
    commit: str | None
    machine: str
    fidelity: str
    verdict: str
    model_sha256: str | None
    figures: Mapping[str, float]
    raw: Mapping[str, Any]

    def other_machine(self, fingerprint: str) -> bool:
        """True when this baseline was measured on a machine other than `fingerprint`."""
        return self.machine != fingerprint


def run_values(record: RunRecord) -> tuple[Any, ...]:
    return (
        record.repository,
        record.created,
        record.recorded,
        record.commit,
        record.ref,
        record.machine,
        record.machine_info,
        record.harness_version,
        record.config,
        record.digest,
    )


def figure_values(run_id: int, row: FigureRow) -> tuple[Any, ...]:
    return (
        run_id,
        row.device,
        row.testbed,
        row.model,
        row.suite,
        row.fidelity,
        row.figure,
        row.value,
        row.verdict,
        row.model_sha256,
        row.versions,
        row.raw,
    )


class Queries:
    """Reads and writes over `runs` and `figures`; `repository`, when set, scopes every read
    to that repository's runs."""

    repository: str | None = None

    # -- what a backend supplies ------------------------------------------------------------

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        raise NotImplementedError

    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        raise NotImplementedError

    def _transaction(self) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError

    def _insert_run(self, record: RunRecord) -> int | None:
        """Insert the run; its id, or None when its digest is stored already."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # -- writing ----------------------------------------------------------------------------

    def add_record(self, record: RunRecord) -> int:
        """Store one run record; returns its run id here. A record stored already (same
        digest) returns the first one's id and adds nothing."""
        with self._transaction():
            found = self._execute("SELECT id FROM runs WHERE digest = ?", (record.digest,))
            row = found.fetchone()
            if row is not None:
                return int(row[0])
            run_id = self._insert_run(record)
            if run_id is None:  # another writer stored it since
                row = self._execute(
                    "SELECT id FROM runs WHERE digest = ?", (record.digest,)
                ).fetchone()
                return int(row[0])
            self._executemany(
                f"INSERT INTO figures ({FIGURE_COLUMNS}) VALUES ({', '.join('?' * 12)})",
                [figure_values(run_id, row) for row in record.figures],
            )
        return run_id

    def add_records(self, records: Sequence[RunRecord]) -> list[int]:
        """Store several records (one transaction each); their run ids here."""
        return [self.add_record(record) for record in records]

    def add_results(
        self,
        document: Mapping[str, Any],
        *,
        commit: str | None = None,
        ref: str | None = None,
        model_hashes: Mapping[str, str] | None = None,
        machine: Mapping[str, Any] | None = None,
        repository: str = "",
    ) -> int:
        """Store one results document (harness-results/1 or /2) as one run; returns the run
        id. commit/ref default to the document's `git` entry; model hashes to each record's
        `model_sha256`; the machine to the document's `host.machine_info`, else this machine.
        Storing the same document again returns the first run's id and adds nothing."""
        from harness.history.records import from_results

        record = from_results(
            document,
            commit=commit,
            ref=ref,
            model_hashes=model_hashes,
            machine=machine,
            repository=repository,
        )
        return self.add_record(record)

    # -- records out (export) ---------------------------------------------------------------

    def digests(self) -> set[str]:
        return {str(row[0]) for row in self._execute("SELECT digest FROM runs").fetchall()}

    def records(self) -> Iterator[RunRecord]:
        """Every stored run (of the repository, when scoped) as a record, oldest first."""
        where, params = self._where({})
        runs = self._execute(
            f"SELECT r.id, {RUN_COLUMNS} FROM runs r{where} ORDER BY r.created, r.digest", params
        ).fetchall()
        for run in runs:
            rows = self._execute(
                "SELECT device, testbed, model, suite, fidelity, figure, value, verdict,"
                " model_sha256, versions, raw FROM figures WHERE run_id = ?"
                " ORDER BY device, model, suite, figure, fidelity, testbed",
                (run[0],),
            ).fetchall()
            figures = tuple(
                FigureRow(r[0], r[1], r[2], r[3], r[4], r[5], float(r[6]), r[7], r[8], r[9], r[10])
                for r in rows
            )
            yield RunRecord(
                digest=run[10],
                repository=run[1],
                created=run[2],
                recorded=run[3],
                commit=run[4],
                ref=run[5],
                machine=run[6],
                machine_info=run[7],
                harness_version=run[8],
                config=run[9],
                figures=figures,
            )

    # -- reading ----------------------------------------------------------------------------

    _POINT_SQL = (
        "SELECT r.id, r.created, r.git_commit, r.machine, f.device, f.model, f.suite,"
        " f.fidelity, f.figure, f.value, f.verdict, r.repository"
        " FROM figures f JOIN runs r ON r.id = f.run_id"
    )

    def _where(self, filters: Mapping[str, Any]) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in {**filters, "r.repository": self.repository}.items():
            if value is None:
                continue
            if isinstance(value, (list, tuple)):
                clauses.append(f"{column} IN ({', '.join('?' * len(value))})")
                params.extend(value)
            else:
                clauses.append(f"{column} = ?")
                params.append(value)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def points(
        self,
        *,
        device: str | None = None,
        model: str | None = None,
        suite: str | None = None,
        figure: str | Sequence[str] | None = None,
        fidelity: str | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[Point]:
        """Stored figures matching the filters, ordered by run time (oldest first by default)."""
        where, params = self._where(
            {
                "f.device": device,
                "f.model": model,
                "f.suite": suite,
                "f.figure": figure if isinstance(figure, (str, type(None))) else tuple(figure),
                "f.fidelity": fidelity,
            }
        )
        order = "DESC" if newest_first else "ASC"
        sql = (
            f"{self._POINT_SQL}{where} ORDER BY r.created {order}, r.id {order},"
            " f.device, f.model, f.suite, f.figure"
        )
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [
            Point(
                run_id=int(row[0]),
                created=row[1],
                commit=row[2],
                machine=row[3],
                device=row[4],
                model=row[5],
                suite=row[6],
                fidelity=row[7],
                figure=row[8],
                value=float(row[9]),
                verdict=row[10],
                repository=row[11],
            )
            for row in self._execute(sql, params).fetchall()
        ]

    def series(
        self, figure: str, *, device: str, model: str, suite: str, fidelity: str | None = None
    ) -> list[Point]:
        """One figure of one (device, model, suite) over runs, oldest first."""
        return self.points(
            device=device, model=model, suite=suite, figure=figure, fidelity=fidelity
        )

    def series_keys(self) -> list[tuple[str, str, str, str, str]]:
        """Every stored (device, model, suite, figure, fidelity)."""
        where, params = self._where({})
        rows = self._execute(
            "SELECT DISTINCT f.device, f.model, f.suite, f.figure, f.fidelity FROM figures f"
            f" JOIN runs r ON r.id = f.run_id{where}"
            " ORDER BY f.device, f.model, f.suite, f.figure, f.fidelity",
            params,
        ).fetchall()
        return [(row[0], row[1], row[2], row[3], row[4]) for row in rows]

    def repositories(self) -> list[str]:
        """The repositories whose runs are stored ("" for runs stored without one)."""
        rows = self._execute("SELECT DISTINCT repository FROM runs ORDER BY repository")
        return [str(row[0]) for row in rows.fetchall()]

    def run_count(self) -> int:
        where, params = self._where({})
        return int(self._execute(f"SELECT COUNT(*) FROM runs r{where}", params).fetchone()[0])

    def baseline(
        self,
        device: str,
        model: str,
        suite: str,
        *,
        commit: str | None = None,
        fidelity: str | None = None,
    ) -> StoredRun | None:
        """The newest stored run with results for (device, model, suite) — at `commit` when
        given (a full SHA or a prefix of one) — whose verdict was not ERROR."""
        sql = (
            "SELECT r.id, r.created, r.git_commit, r.machine, f.fidelity, f.verdict,"
            " f.model_sha256, f.raw FROM figures f JOIN runs r ON r.id = f.run_id"
            " WHERE f.device = ? AND f.model = ? AND f.suite = ? AND f.verdict != 'ERROR'"
        )
        params: list[Any] = [device, model, suite]
        if commit:
            sql += " AND r.git_commit LIKE ?"
            params.append(commit.replace("%", "").replace("_", "") + "%")
        if fidelity:
            sql += " AND f.fidelity = ?"
            params.append(fidelity)
        if self.repository is not None:
            sql += " AND r.repository = ?"
            params.append(self.repository)
        row = self._execute(sql + " ORDER BY r.created DESC, r.id DESC LIMIT 1", params).fetchone()
        if row is None:
            return None
        figures = {
            str(name): float(value)
            for name, value in self._execute(
                "SELECT figure, value FROM figures WHERE run_id = ? AND device = ? AND model = ?"
                " AND suite = ?",
                (row[0], device, model, suite),
            ).fetchall()
        }
        return StoredRun(
            run_id=int(row[0]),
            created=row[1],
            commit=row[2],
            machine=row[3],
            fidelity=row[4],
            verdict=row[5],
            model_sha256=row[6],
            figures=figures,
            raw=json.loads(row[7]),
        )

    def trends(
        self,
        keys: Sequence[tuple[str, str, str, str]] | None = None,
        *,
        min_size: int = 2,
    ) -> list[Trend]:
        """Series for (device, model, suite, figure) keys (default: every stored one), each
        with its level changes (harness.history.trends)."""
        wanted = set(keys) if keys is not None else None
        found: list[Trend] = []
        for device, model, suite, figure, fidelity in self.series_keys():
            if wanted is not None and (device, model, suite, figure) not in wanted:
                continue
            points = self.series(figure, device=device, model=model, suite=suite, fidelity=fidelity)
            found.append(
                trend(
                    points,
                    device=device,
                    model=model,
                    suite=suite,
                    figure=figure,
                    fidelity=fidelity,
                    min_size=min_size,
                )
            )
        return found
