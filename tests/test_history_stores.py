"""The history's stores with the real things: git branches in local bare repositories (two
writers racing, a fresh clone), a PostgreSQL server (conftest.py's `postgresql`), the SQLite
file (schema 1 upgraded in place), and `harness history export/import` between all three,
losslessly."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import git
from harness.history import open_history
from harness.history.gitbranch import GitHistory
from harness.history.records import RunRecord, from_results


def _document(night: int, p90: float = 1.0, device: str = "rpi4") -> dict[str, Any]:
    return {
        "schema": "harness-results/2",
        "harness_version": "0.1.0",
        "created": f"2026-11-{night:02d}T03:00:00Z",
        "config": "/repo/harness.toml",
        "git": {"commit": f"{night:x}" * 40, "ref": "refs/heads/main"},
        "host": {"fingerprint": "ab" * 8, "machine_info": {"cpu": "x", "cores": 2}},
        "devices": [{"name": device, "backend": "docker", "image": "harness-device:arm64-x"}],
        "results": [
            {
                "nodeid": f"harness.toml::latency[m@{device}]",
                "suite": "latency",
                "model": "m",
                "device": device,
                "fidelity": "emulated",
                "verdict": {"status": "PASS", "checks": [], "reasons": []},
                "figures": {"n": 100, "p90_ms": p90, "p90_low_ms": p90 * 0.9, "note": "x"},
                "raw": {"samples_ns": [int(p90 * 1e6)] * 40},
                "worker": {
                    "versions": {"onnxruntime": "1.32.0"},
                    "limits": {"image": "harness-device:arm64-0123456789ab"},
                },
            },
            {
                "nodeid": f"harness.toml::accuracy[m@{device}]",
                "suite": "accuracy",
                "model": "m",
                "device": device,
                "fidelity": "emulated",
                "verdict": {"status": "PASS", "checks": [], "reasons": []},
                "figures": {"accuracy": 0.97 + night / 1000, "n": 450},
                "raw": {},
                "worker": {},
            },
        ],
    }


def _harness(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def _bare(tmp_path: Path, name: str = "history.git") -> Path:
    bare = tmp_path / name
    subprocess.run(["git", "init", "--quiet", "--bare", str(bare)], check=True)
    return bare


def _on_branch(bare: Path, branch: str = "harness-history") -> list[str]:
    listed = subprocess.run(
        ["git", "--git-dir", str(bare), "ls-tree", "-r", "--name-only", branch],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return listed.stdout.split()


# -- the record ---------------------------------------------------------------------------------


def test_a_record_is_a_text_file_that_reads_back_the_same() -> None:
    record = from_results(_document(1), repository="acme/models", recorded="2026-11-01T04:00:00Z")
    assert record.path == f"runs/2026/11/20261101T030000Z-{record.digest[:16]}.json"
    text = record.text()
    assert RunRecord.from_text(text) == record
    assert RunRecord.from_text(record.line()) == record
    rows = [line for line in text.splitlines() if line.lstrip().startswith('{"device"')]
    assert len(rows) == len(record.figures)  # one figure per line: diffs read as figures
    testbeds = {f.testbed for f in record.figures}
    assert testbeds == {"rpi4 harness-device:arm64-0123456789ab"}  # profile + image
    assert sorted(f.figure for f in record.figures) == ["accuracy", "n", "n", "p90_low_ms",
                                                        "p90_ms"]  # fmt: skip
    with pytest.raises(ValueError, match="not a harness history record"):
        RunRecord.from_text(json.dumps({"schema": "harness-results/2"}), "x.json")


# -- SQLite ---------------------------------------------------------------------------------


def test_a_schema_1_file_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            INSERT INTO meta VALUES ('schema', '1');
            CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, created TEXT NOT NULL,
              recorded TEXT NOT NULL, git_commit TEXT, git_ref TEXT, machine TEXT NOT NULL,
              machine_info TEXT NOT NULL, harness_version TEXT, config TEXT,
              digest TEXT NOT NULL UNIQUE);
            CREATE TABLE figures (run_id INTEGER NOT NULL, device TEXT NOT NULL,
              model TEXT NOT NULL, suite TEXT NOT NULL, fidelity TEXT NOT NULL,
              figure TEXT NOT NULL, value REAL NOT NULL, verdict TEXT NOT NULL,
              model_sha256 TEXT, versions TEXT NOT NULL, raw TEXT NOT NULL);
            INSERT INTO runs VALUES (1, '2026-10-01T00:00:00Z', '2026-10-01T00:00:00Z', 'c0',
              NULL, 'm', '{}', '0.1.0', NULL, 'd0');
            INSERT INTO figures VALUES (1, 'host', 'm', 'latency', 'measured', 'p90_ms', 2.5,
              'PASS', NULL, '{}', '{}');
            """
        )
    with open_history(str(path)) as store:
        [record] = list(store.records())
        assert record.repository == "" and record.figures[0].testbed == "host"
        store.add_results(_document(2))
        assert store.run_count() == 2
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("2",)


# -- a git branch ---------------------------------------------------------------------------


def test_runs_on_a_branch_survive_a_fresh_cache_and_a_fresh_clone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare = _bare(tmp_path)
    writer = GitHistory.open(f"git:{bare}", cache=tmp_path / "writer", repository=None)
    assert writer.run_count() == 0  # no branch yet: an empty history, not an error
    first = from_results(_document(1))
    writer.add_record(first)
    writer.add_record(first)  # stored once
    writer.append([from_results(_document(2, 1.3))])
    writer.close()
    assert len([p for p in _on_branch(bare) if p.startswith("runs/")]) == 2
    log = subprocess.run(
        ["git", "--git-dir", str(bare), "log", "--format=%s", "harness-history"],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    assert log == ["harness history: 1 run of 2222222222", "harness history: 1 run of 1111111111"]

    # A checkout elsewhere: `git:origin` reads the branch through the clone's own remote.
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(bare), str(clone)], check=True,
                   capture_output=True)  # fmt: skip
    monkeypatch.chdir(clone)
    reader = GitHistory.open("git:origin", cache=tmp_path / "reader", readonly=True)
    series = reader.series("p90_ms", device="rpi4", model="m", suite="latency")
    assert [p.value for p in series] == [1.0, 1.3]
    second = from_results(_document(2, 1.3)).digest
    assert [r.digest for r in reader.records()] == [first.digest, second]
    with pytest.raises(Exception, match="opened read-only"):
        reader.add_record(from_results(_document(3)))
    reader.close()
    # The cache is only a cache: removed, it is rebuilt from the branch.
    (tmp_path / "reader" / "history.sqlite").unlink()
    again = GitHistory.open("git:origin", cache=tmp_path / "reader", readonly=True)
    assert again.run_count() == 2
    again.close()


def test_two_writers_racing_on_one_branch_lose_no_run(tmp_path: Path) -> None:
    """Writer A has fetched the tip when writer B pushes (B runs inside A's pre-push hook):
    A's push is refused, A fetches again, builds its commit on B's and pushes."""
    bare = _bare(tmp_path)
    results = tmp_path / "b.json"
    results.write_text(json.dumps(_document(2, device="x86-64")))
    hook_dir = tmp_path / "hooks"
    hook_dir.mkdir()
    hook = hook_dir / "pre-push"
    flag = tmp_path / "b-pushed"
    hook.write_text(
        "#!/bin/sh\n"
        f'[ -e "{flag}" ] && exit 0\ntouch "{flag}"\n'
        f'exec "{sys.executable}" -m harness.cli history --history "git:{bare}" '
        f'--history-cache "{tmp_path / "b"}" --add "{results}" --repository acme/b >/dev/null\n'
    )
    hook.chmod(0o755)
    a = GitHistory.open(f"git:{bare}", cache=tmp_path / "a")
    subprocess.run(["git", "--git-dir", str(a.git.git_dir), "config", "core.hooksPath",
                    str(hook_dir)], check=True)  # fmt: skip
    a.add_results(_document(1), repository="acme/a")
    assert flag.exists() and a.retries >= 1  # B got in first, A retried
    assert a.run_count() == 2 and a.repositories() == ["acme/a", "acme/b"]
    a.close()
    assert len([p for p in _on_branch(bare) if p.startswith("runs/")]) == 2


def test_writers_in_parallel_processes_all_land(tmp_path: Path) -> None:
    bare = _bare(tmp_path)
    processes = []
    for writer in range(2):
        files = []
        for night in range(1, 5):
            path = tmp_path / f"w{writer}-{night}.json"
            document = _document(night, device=f"dev{writer}")
            path.write_text(json.dumps(document))
            files.append(str(path))
        script = " && ".join(
            f'"{sys.executable}" -m harness.cli history --history "git:{bare}" '
            f'--history-cache "{tmp_path / f"cache{writer}"}" --add "{file}" --limit 0'
            for file in files
        )
        processes.append(subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE))  # fmt: skip
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err.decode()
    assert len([p for p in _on_branch(bare) if p.startswith("runs/")]) == 8


def test_git_locations_are_checked(tmp_path: Path) -> None:
    done = _harness("history", "--history", "git:", cwd=tmp_path)
    assert done.returncode == 2 and "name the remote, e.g. git:origin" in done.stderr
    done = _harness("history", "--history", "git:origin", cwd=tmp_path)
    assert done.returncode == 2
    assert "names a remote of the repository in the current folder" in done.stderr
    done = _harness("history", "--history", "ftp://host/x", cwd=tmp_path)
    assert done.returncode == 2 and "no history store for ftp://" in done.stderr
    done = _harness("nightly", "--history", str(tmp_path / "h.sqlite"), "--out", "o", "--publish")
    assert done.returncode == 2 and "--publish writes the site to a history branch" in done.stderr


# -- PostgreSQL -----------------------------------------------------------------------------


def test_postgresql_keeps_many_repositories_apart(postgresql: str) -> None:
    from harness.history.postgresql import PostgresHistory

    with PostgresHistory(postgresql) as store:
        a = store.add_results(_document(1), repository="acme/a")
        assert store.add_results(_document(1), repository="acme/a") == a  # stored once
        store.add_results(_document(2, 1.5), repository="acme/b")
        assert {"acme/a", "acme/b"} <= set(store.repositories())
    with PostgresHistory(postgresql, repository="acme/b") as scoped:
        assert [p.value for p in scoped.points(figure="p90_ms")] == [1.5]
        base = scoped.baseline("rpi4", "m", "latency", commit="2222")
        assert base is not None and base.figures["p90_ms"] == 1.5 and base.raw["n"] == 40
        [trend] = scoped.trends([("rpi4", "m", "latency", "p90_ms")])
        assert len(trend.points) == 1


def test_a_wrong_postgresql_location_names_the_fix(postgresql: str) -> None:
    broken = postgresql.replace("/harness?", "/nosuchdb?")
    done = _harness("history", "--history", broken)
    assert done.returncode == 2
    assert "cannot connect to the PostgreSQL history at" in done.stderr
    assert "nosuchdb" in done.stderr


# -- export / import between the three ------------------------------------------------------


def test_export_and_import_move_a_history_between_all_three_stores_losslessly(
    tmp_path: Path, postgresql: str
) -> None:
    sqlite_path = tmp_path / "history.sqlite"
    for night in (1, 2, 3):
        done = _harness("history", "--history", str(sqlite_path), "--add",
                        _write(tmp_path, night), "--repository", "acme/rt")  # fmt: skip
        assert done.returncode == 0, done.stderr
    exported = tmp_path / "sqlite.jsonl"
    assert _harness("history", "--history", str(sqlite_path), "export", "--out",
                    str(exported)).returncode == 0  # fmt: skip
    original = exported.read_text()
    assert len(original.splitlines()) == 3

    bare = _bare(tmp_path)
    branch = f"git:{bare}#results"
    cache = ["--history-cache", str(tmp_path / "git-cache")]
    done = _harness("history", "import", "--history", branch, *cache, str(exported))
    assert done.returncode == 0 and "imported 3 new runs" in done.stdout, done.stderr
    done = _harness("history", "import", "--history", postgresql, branch, *cache)
    assert done.returncode == 0, done.stderr
    done = _harness("history", "import", "--history", postgresql, str(exported))
    assert "imported 0 new runs" in done.stdout and "(3 already there)" in done.stdout
    back = tmp_path / "back.sqlite"
    done = _harness("history", "import", "--history", str(back), "--repository", "acme/rt",
                    postgresql)  # fmt: skip
    assert done.returncode == 0, done.stderr

    for location in (branch, str(back)):
        done = _harness("history", "--history", location, *cache, "export")
        assert done.returncode == 0, done.stderr
        assert done.stdout == original, location
    done = _harness("history", "--history", postgresql, "--repository", "acme/rt", "export")
    assert done.stdout == original
    # A checkout of the branch is a folder of run files: import reads those too.
    checkout = tmp_path / "checkout"
    subprocess.run(["git", "clone", "--quiet", "--branch", "results", str(bare), str(checkout)],
                   check=True)  # fmt: skip
    done = _harness("history", "import", "--history", str(tmp_path / "c.sqlite"),
                    str(checkout / "runs"))  # fmt: skip
    assert "imported 3 new runs" in done.stdout
    assert _harness("history", "--history", str(tmp_path / "c.sqlite"), "export").stdout == (
        original
    )


def _write(folder: Path, night: int) -> str:
    path = folder / f"night{night}.json"
    path.write_text(json.dumps(_document(night, 1.0 + night / 10)))
    return str(path)


def test_history_show_reads_a_branch_in_a_checkout(tmp_path: Path) -> None:
    bare = _bare(tmp_path, "origin.git")
    repo = tmp_path / "repo"
    subprocess.run(["git", "clone", "--quiet", str(bare), str(repo)], check=True,
                   capture_output=True)  # fmt: skip
    (repo / "README").write_text("x\n")
    git(repo, "add", "README")
    git(repo, "commit", "-qm", "x")
    git(repo, "push", "-q", "origin", "HEAD")
    env = {"HARNESS_CACHE": str(tmp_path / "cache")}
    added = _harness("history", "--history", "git:origin", "--add", _write(tmp_path, 1),
                     cwd=repo, **env)  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "as run 1 in git:origin" in added.stdout
    assert [p for p in _on_branch(bare) if p.startswith("runs/2026/11/")]  # pushed to origin
    shown = _harness("history", "--history", "git:origin", "--json", cwd=repo, **env)
    assert {p["figure"] for p in json.loads(shown.stdout)} == {"p90_ms", "accuracy"}
    # The checkout's own branches and work tree are untouched.
    status = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True,
                            text=True)  # fmt: skip
    assert status.stdout == ""
