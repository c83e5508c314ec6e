"""The results history: every run's figures in one SQLite file, for trends and baselines.

One file (default `.harness/history.sqlite` beside the config), stdlib sqlite3 in WAL mode with a
busy timeout, so pytest-xdist workers, two sessions and a report reading at once are all fine:
each session's results go in with one `BEGIN IMMEDIATE` transaction, so a reader sees a run
whole or not at all and no writer loses rows. A file that is not a database, or fails SQLite's
quick check, is moved aside (renamed with a timestamp, never deleted) and a fresh one started,
with a warning naming both paths.

Tables: `runs` (when, git commit and ref, machine fingerprint, harness version, config) and
`figures` (one row per numeric figure of each result record, with its device, model, suite,
fidelity, verdict, model file hash, runtime versions and a summary of the raw samples).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sqlite3
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import catalogue
from harness.identity import git_revision, machine_fingerprint, machine_info, model_sha256

DEFAULT_PATH = Path(".harness") / "history.sqlite"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,            -- when the session wrote its results (UTC, ISO 8601)
    recorded TEXT NOT NULL,           -- when they were stored
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


class StoreWarning(UserWarning):
    """Something about the history file the user should know (it was moved aside)."""


class StoreError(RuntimeError):
    """The history file cannot be used (another program's database, a newer schema)."""


@dataclass(frozen=True)
class Point:
    """One stored figure of one run."""

    run_id: int
    created: str
    commit: str | None
    machine: str
    device: str
    model: str
    suite: str
    fidelity: str
    figure: str
    value: float
    verdict: str


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


@dataclass(frozen=True)
class Trend:
    """A figure's series over runs with the level changes found in it."""

    device: str
    model: str
    suite: str
    figure: str
    fidelity: str
    points: tuple[Point, ...]
    steps: tuple[tuple[int, float, float], ...]  # (index into points, level before, after)

    @property
    def direction(self) -> int:
        """+1: higher is better, -1: lower is better, 0: not judged."""
        return figure_direction(self.figure)

    def regressions(self, window: int = 3, min_change: float = 0.02) -> list[tuple[int, float]]:
        """Steps for the worse within the last `window` points, by at least `min_change`
        (relative): (index, relative change). Older steps were reported on earlier nights."""
        found: list[tuple[int, float]] = []
        for index, before, after in self.steps:
            if index < len(self.points) - window or self.direction == 0 or before == 0:
                continue
            change = (after - before) / abs(before)
            if change * self.direction < 0 and abs(change) >= min_change:
                found.append((index, change))
        return found


def figure_direction(figure: str) -> int:
    """+1 higher is better, -1 lower is better, 0 not judged: the catalogue's."""
    return catalogue.direction(figure)


def model_hashes_from_config(config_path: Path) -> dict[str, str]:
    """{model name: sha256 of its file, or of its folder's files (harness.identity.model_sha256)}
    for the models of a config that exist on disk."""
    from harness.config import load_config

    hashes: dict[str, str] = {}
    for spec in load_config(config_path).models:
        path = spec.path if spec.path.is_absolute() else config_path.parent / spec.path
        if path.exists():
            hashes[spec.name] = model_sha256(path)
    return hashes


def default_path(config_path: Path | None) -> Path:
    """`.harness/history.sqlite` beside the config (or in the current folder without one)."""
    folder = config_path.resolve().parent if config_path is not None else Path.cwd()
    return folder / DEFAULT_PATH


def record_session(
    document: Mapping[str, Any], config_path: Path, db_path: Path | None = None
) -> tuple[int, Path]:
    """Store one pytest session's results document: the plugin's call at session end.

    The history goes to `db_path` (default `.harness/history.sqlite` beside the config), with the
    checkout's commit and ref (unless the document names them) and each model's SHA-256 (of its
    file, or of a language-model folder's files).
    Returns (run id, database path)."""
    path = db_path if db_path is not None else default_path(config_path)
    git = document.get("git") or {}
    commit, ref = git.get("commit"), git.get("ref")
    if not commit:
        commit, ref = git_revision(config_path.resolve().parent)
    try:
        hashes = model_hashes_from_config(config_path)
    except Exception:  # a config that no longer loads still gets its figures stored
        hashes = {}
    with Store(path) as store:
        return store.add_results(document, commit=commit, ref=ref, model_hashes=hashes), path


# -- what a record contributes ----------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def raw_summary(record: Mapping[str, Any]) -> dict[str, Any]:
    """What is kept of a record's raw data: sample count, p50/p90 (ms) and the p90's 95% CI for
    latency samples (and the baseline's, when a comparison carried them); ratio and CI when the
    record has them. The samples themselves stay in the results JSON."""
    from harness import stats

    summary: dict[str, Any] = {}
    raw = record.get("raw") or {}
    for key, prefix in (("samples_ns", ""), ("baseline_samples_ns", "baseline_")):
        samples = raw.get(key)
        if not isinstance(samples, list) or not samples:
            continue
        ms = [float(s) / 1e6 for s in samples]
        described = stats.summary(ms)
        summary[f"{prefix}n"] = described.n
        summary[f"{prefix}p50_ms"] = described.p50
        summary[f"{prefix}p90_ms"] = described.p90
        if described.n >= stats.min_samples_for_percentile(90.0):
            interval = stats.percentile_ci(ms, 90.0)
            summary[f"{prefix}p90_ci_ms"] = [interval.low, interval.high]
    figures = record.get("figures") or {}
    if "n" not in summary and _number(figures.get("n")) is not None:
        summary["n"] = figures["n"]
    for key in ("ratio", "ratio_low", "ratio_high"):
        if _number(figures.get(key)) is not None:
            summary[key] = figures[key]
    return summary


def document_digest(document: Mapping[str, Any]) -> str:
    text = json.dumps(
        [document.get("created"), document.get("host"), document.get("results")],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()


# -- the store --------------------------------------------------------------------------------


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


class Store:
    """The history file. Open with `Store(path)`; use as a context manager or call close()."""

    def __init__(self, path: Path, timeout_s: float = BUSY_TIMEOUT_S) -> None:
        self.path = Path(path)
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
        return db

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ----------------------------------------------------------------------------

    def add_results(
        self,
        document: Mapping[str, Any],
        *,
        commit: str | None = None,
        ref: str | None = None,
        model_hashes: Mapping[str, str] | None = None,
        machine: Mapping[str, Any] | None = None,
    ) -> int:
        """Store one results document (harness-results/1) as one run; returns the run id.

        commit/ref default to the document's `git` entry; model hashes to each record's
        `model_sha256`; the machine to the document's `host.machine_info`, else this machine.
        Storing the same document again returns the first run's id and adds nothing."""
        host = document.get("host") or {}
        info = dict(machine or host.get("machine_info") or machine_info())
        fingerprint = str(host.get("fingerprint") or machine_fingerprint(info))
        git = document.get("git") or {}
        commit = commit or git.get("commit")
        ref = ref or git.get("ref")
        hashes = dict(model_hashes or {})
        digest = document_digest(document)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        rows: list[tuple[Any, ...]] = []
        for record in document.get("results", []):
            status = str((record.get("verdict") or {}).get("status", "ERROR"))
            versions = json.dumps(
                (record.get("worker") or {}).get("versions") or {}, sort_keys=True
            )
            summary = json.dumps(raw_summary(record), sort_keys=True)
            sha = hashes.get(record["model"]) or record.get("model_sha256")
            for figure, value in (record.get("figures") or {}).items():
                number = _number(value)
                if number is None:
                    continue
                rows.append(
                    (
                        record["device"],
                        record["model"],
                        record["suite"],
                        record.get("fidelity", "measured"),
                        figure,
                        number,
                        status,
                        sha,
                        versions,
                        summary,
                    )
                )
        self.db.execute("BEGIN IMMEDIATE")
        try:
            found = self.db.execute("SELECT id FROM runs WHERE digest = ?", (digest,)).fetchone()
            if found is not None:
                self.db.execute("COMMIT")
                return int(found[0])
            cursor = self.db.execute(
                "INSERT INTO runs (created, recorded, git_commit, git_ref, machine, machine_info,"
                " harness_version, config, digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    document.get("created") or now,
                    now,
                    commit,
                    ref,
                    fingerprint,
                    json.dumps(info, sort_keys=True),
                    document.get("harness_version"),
                    document.get("config"),
                    digest,
                ),
            )
            run_id = int(cursor.lastrowid or 0)
            self.db.executemany(
                "INSERT INTO figures VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, *row) for row in rows],
            )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return run_id

    # -- reading ----------------------------------------------------------------------------

    _POINT_SQL = (
        "SELECT r.id, r.created, r.git_commit, r.machine, f.device, f.model, f.suite,"
        " f.fidelity, f.figure, f.value, f.verdict FROM figures f JOIN runs r ON r.id = f.run_id"
    )

    @staticmethod
    def _where(filters: Mapping[str, Any]) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in filters.items():
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
        return [Point(*row) for row in self.db.execute(sql, params)]

    def series(
        self, figure: str, *, device: str, model: str, suite: str, fidelity: str | None = None
    ) -> list[Point]:
        """One figure of one (device, model, suite) over runs, oldest first."""
        return self.points(
            device=device, model=model, suite=suite, figure=figure, fidelity=fidelity
        )

    def series_keys(self) -> list[tuple[str, str, str, str, str]]:
        """Every stored (device, model, suite, figure, fidelity)."""
        rows = self.db.execute(
            "SELECT DISTINCT device, model, suite, figure, fidelity FROM figures"
            " ORDER BY device, model, suite, figure, fidelity"
        )
        return [tuple(row) for row in rows]

    def run_count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM runs").fetchone()[0])

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
            params.append(commit.replace("%", "") + "%")
        if fidelity:
            sql += " AND f.fidelity = ?"
            params.append(fidelity)
        row = self.db.execute(
            sql + " ORDER BY r.created DESC, r.id DESC LIMIT 1", params
        ).fetchone()
        if row is None:
            return None
        figures = dict(
            self.db.execute(
                "SELECT figure, value FROM figures WHERE run_id = ? AND device = ? AND model = ?"
                " AND suite = ?",
                (row[0], device, model, suite),
            ).fetchall()
        )
        return StoredRun(
            run_id=row[0],
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
        with the steps `stats.detect_steps` finds in it (asv-style, robust to outliers)."""
        from harness.stats import detect_steps

        wanted = set(keys) if keys is not None else None
        trends: list[Trend] = []
        for device, model, suite, figure, fidelity in self.series_keys():
            if wanted is not None and (device, model, suite, figure) not in wanted:
                continue
            points = tuple(
                self.series(figure, device=device, model=model, suite=suite, fidelity=fidelity)
            )
            found = detect_steps([p.value for p in points], min_size=min_size)
            steps = tuple((s.index, s.before, s.after) for s in found)
            trends.append(Trend(device, model, suite, figure, fidelity, points, steps))
        return trends
