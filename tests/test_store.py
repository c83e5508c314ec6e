"""The SQLite history: runs and figures in, series/baselines/trends out, concurrent writers in
separate processes losing nothing, a corrupt file kept aside, and `harness history`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from harness.store import (
    Store,
    StoreWarning,
    Trend,
    default_path,
    machine_fingerprint,
    machine_info,
    raw_summary,
)

pytest_plugins = ["pytester"]


def _document(created: str = "2026-11-01T03:00:00Z", p90: float = 1.0) -> dict[str, Any]:
    """A small results document with one latency and one accuracy record."""
    samples = [int((p90 * 0.9 + 0.1 * p90 * (i % 10) / 9) * 1e6) for i in range(100)]
    worker = {"versions": {"onnxruntime": "1.32.0", "numpy": "2.4.6"}}
    return {
        "schema": "harness-results/1",
        "harness_version": "0.1.0",
        "created": created,
        "config": "/repo/harness.toml",
        "host": {"machine": "x86_64", "python": "3.11.7", "node": "vm"},
        "exitstatus": 0,
        "devices": [{"name": "rpi4", "fidelity": "emulated"}],
        "results": [
            {
                "nodeid": "harness.toml::latency[m@rpi4]",
                "suite": "latency",
                "model": "m",
                "device": "rpi4",
                "fidelity": "emulated",
                "verdict": {"status": "PASS", "checks": [], "reasons": []},
                "figures": {"n": 100, "p50_ms": p90 * 0.95, "p90_ms": p90, "task": "x"},
                "raw": {"samples_ns": samples},
                "worker": worker,
                "error": None,
            },
            {
                "nodeid": "harness.toml::accuracy[m@rpi4]",
                "suite": "accuracy",
                "model": "m",
                "device": "rpi4",
                "fidelity": "emulated",
                "verdict": {"status": "PASS", "checks": [], "reasons": []},
                "figures": {"n": 450, "accuracy": 0.97, "flag": True},
                "raw": {},
                "worker": worker,
                "error": None,
            },
        ],
    }


def test_results_go_in_as_one_run_and_come_back_as_series(tmp_path: Path) -> None:
    with Store(tmp_path / "h.sqlite") as store:
        first = store.add_results(_document(), commit="a" * 40, ref="refs/heads/main")
        again = store.add_results(_document(), commit="a" * 40)
        second = store.add_results(
            _document("2026-11-02T03:00:00Z", 1.2), commit="b" * 40, model_hashes={"m": "f00d"}
        )
        assert first == again != second  # the same document twice is stored once
        assert store.run_count() == 2
        series = store.series("p90_ms", device="rpi4", model="m", suite="latency")
        assert [(p.value, p.commit) for p in series] == [(1.0, "a" * 40), (1.2, "b" * 40)]
        assert {p.fidelity for p in series} == {"emulated"}
        figures = {p.figure for p in store.points()}
        assert figures == {"n", "p50_ms", "p90_ms", "accuracy"}  # numbers only, no bools
        row = store.db.execute(
            "SELECT model_sha256, versions, raw FROM figures WHERE run_id = ? AND figure = ?",
            (second, "p90_ms"),
        ).fetchone()
        assert row[0] == "f00d"
        assert json.loads(row[1]) == {"numpy": "2.4.6", "onnxruntime": "1.32.0"}
        raw = json.loads(row[2])
        assert raw["n"] == 100 and raw["p90_ci_ms"][0] <= raw["p90_ms"] <= raw["p90_ci_ms"][1]
        run = store.db.execute("SELECT git_ref, machine, machine_info FROM runs").fetchone()
        assert run[0] == "refs/heads/main"
        assert run[1] == machine_fingerprint(json.loads(run[2]))


def test_baseline_is_the_newest_run_at_a_commit(tmp_path: Path) -> None:
    with Store(tmp_path / "h.sqlite") as store:
        store.add_results(_document("2026-11-01T00:00:00Z", 1.0), commit="a" * 40)
        store.add_results(_document("2026-11-02T00:00:00Z", 2.0), commit="b" * 40)
        broken = _document("2026-11-03T00:00:00Z", 9.0)
        broken["results"][0]["verdict"]["status"] = "ERROR"
        store.add_results(broken, commit="c" * 40)
        newest = store.baseline("rpi4", "m", "latency")
        assert newest is not None and newest.commit == "b" * 40  # ERROR runs are no baseline
        assert newest.figures["p90_ms"] == 2.0
        at = store.baseline("rpi4", "m", "latency", commit="aaaaaaa")
        assert at is not None and at.figures["p90_ms"] == 1.0 and at.raw["n"] == 100
        assert not at.other_machine(at.machine) and at.other_machine("0" * 16)
        assert store.baseline("rpi4", "other", "latency") is None


def test_the_machine_fingerprint_ignores_the_host_name() -> None:
    info = machine_info()
    assert set(info) == {"cpu", "cores", "memory_mb", "os", "arch", "python"}
    assert machine_fingerprint() == machine_fingerprint(info)
    assert machine_fingerprint({**info, "cores": 999}) != machine_fingerprint(info)
    assert len(machine_fingerprint()) == 16


def test_raw_summary_without_samples_keeps_the_counts() -> None:
    record = _document()["results"][1]
    assert raw_summary(record) == {"n": 450}
    record["figures"].update(ratio=1.05, ratio_low=1.01, ratio_high=1.09)
    assert raw_summary(record) == {"n": 450, "ratio": 1.05, "ratio_low": 1.01, "ratio_high": 1.09}


WRITER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from harness.store import Store

    path, who, count, start = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    document = json.loads(Path(sys.argv[5]).read_text())
    while time.time() < start:
        time.sleep(0.001)
    store = Store(path, timeout_s=30)
    for i in range(count):
        document["created"] = f"2026-11-01T00:00:{i:02d}Z-{who}"
        store.add_results(document, commit=who)
    store.close()
    """
)


def test_concurrent_writers_lose_no_rows(tmp_path: Path) -> None:
    """Two processes (two sessions, or xdist workers) open and write one new file at once."""
    import time

    path = tmp_path / ".harness" / "history.sqlite"
    template = tmp_path / "doc.json"
    template.write_text(json.dumps(_document()))
    start = str(time.time() + 1.0)
    count = 25
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), who, str(count), start, str(template)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for who in ("one", "two", "three")
    ]
    for writer in writers:
        _, error = writer.communicate(timeout=120)
        assert writer.returncode == 0, error
    with Store(path) as store:
        assert store.run_count() == 3 * count
        per_run = store.db.execute("SELECT COUNT(*) FROM figures GROUP BY run_id").fetchall()
        assert per_run == [(5,)] * (3 * count)  # every run whole: 3 + 2 numeric figures
        mode = store.db.execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"


@pytest.mark.parametrize("damage", ["not a database", "overwritten pages"])
def test_a_corrupt_history_is_kept_aside_and_a_new_one_started(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "history.sqlite"
    if damage == "not a database":
        path.write_bytes(b"this is not SQLite\n" * 100)
    else:
        with Store(path) as store:
            for day in range(1, 29):
                store.add_results(_document(f"2026-11-{day:02d}T00:00:00Z", float(day)))
        data = bytearray(path.read_bytes())
        assert len(data) > 8 * 4096
        data[4096 : 4096 * 6] = b"\xa5" * (4096 * 5)
        path.write_bytes(bytes(data))
    before = path.read_bytes()
    with pytest.warns(StoreWarning) as caught, Store(path) as store:
        assert store.run_count() == 0
        store.add_results(_document())
        assert store.run_count() == 1
    kept = store.moved_aside
    assert kept is not None and kept.parent == tmp_path
    assert kept.name.startswith("history.sqlite.corrupt-")
    assert kept.read_bytes() == before  # never deleted, never changed
    message = str(caught[0].message)
    assert str(path) in message and str(kept) in message


def _history(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", "history", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=60,
    )


def test_history_command_adds_and_prints(tmp_path: Path) -> None:
    (tmp_path / "harness.toml").write_text('devices = ["host"]\n')
    results = tmp_path / "results.json"
    results.write_text(json.dumps(_document()))
    missing = _history(cwd=tmp_path)
    assert missing.returncode == 2
    assert f"no history at {tmp_path / '.harness' / 'history.sqlite'}" in missing.stderr

    added = _history("--add", str(results), "--commit", "c0ffee1234", cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    db = default_path(tmp_path / "harness.toml")
    assert db == tmp_path / ".harness" / "history.sqlite" and db.is_file()
    assert f"stored {results} as run 1 in {db}" in added.stdout

    shown = _history("--model", "m", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "harness history" in shown.stdout
    for text in ("c0ffee1234", "rpi4", "latency", "p90_ms", "1 ms", "accuracy", "emulated"):
        assert text in shown.stdout
    assert "p50_ms" not in shown.stdout  # headline figures unless --all-figures / --figure
    as_json = json.loads(_history("--json", "--figure", "p50_ms", cwd=tmp_path).stdout)
    assert [(p["figure"], p["value"]) for p in as_json] == [("p50_ms", 0.95)]
    assert "nothing stored matches" in _history("--device", "x", cwd=tmp_path).stdout

    corrupt = tmp_path / "corrupt.sqlite"
    corrupt.write_text("garbage")
    moved = _history("--db", str(corrupt), "--add", str(results), cwd=tmp_path)
    assert moved.returncode == 0
    assert f"{corrupt} was not a readable SQLite database; kept it as" in moved.stderr


def _trend(values: list[float], figure: str = "p90_ms") -> Trend:
    from harness.stats import detect_steps
    from harness.store import Point

    points = tuple(
        Point(i, f"2026-11-{i + 1:02d}", f"c{i}", "m1", "host", "m", "latency", "measured",
              figure, v, "PASS")
        for i, v in enumerate(values)
    )  # fmt: skip
    steps = tuple((s.index, s.before, s.after) for s in detect_steps(values))
    return Trend("host", "m", "latency", figure, "measured", points, steps)


def test_regressions_are_recent_steps_for_the_worse() -> None:
    flat = [1.0, 1.01, 0.99, 1.0, 1.02, 0.98, 1.0, 1.01, 0.99, 1.0]
    slower = _trend([*flat, 1.3, 1.31])
    assert [(i, round(c, 1)) for i, c in slower.regressions()] == [(10, 0.3)]
    assert slower.regressions(window=1) == []  # the step is older than the last run
    assert _trend([*flat, 0.7, 0.71]).regressions() == []  # faster is no regression
    assert _trend([*flat, 0.7, 0.71], "accuracy").regressions()[0][0] == 10  # less accurate
    assert _trend([*flat, 1.3, 1.31], "threads").regressions() == []  # not judged
    assert _trend([*flat, 1.01, 1.0]).regressions() == []
    assert _trend([*flat, 1.3, 1.31]).regressions(min_change=0.5) == []


def test_store_trends_follow_each_series(tmp_path: Path) -> None:
    with Store(tmp_path / "h.sqlite") as store:
        for day in range(12):
            p90 = 1.0 + 0.01 * (day % 3) + (0.5 if day >= 9 else 0.0)
            store.add_results(_document(f"2026-11-{day + 1:02d}T00:00:00Z", p90))
        keys = [("rpi4", "m", "latency", "p90_ms"), ("rpi4", "m", "accuracy", "accuracy")]
        trends = store.trends(keys)
    by_figure = {t.figure: t for t in trends}
    assert set(by_figure) == {"p90_ms", "accuracy"}
    assert [s[0] for s in by_figure["p90_ms"].steps] == [9]
    assert by_figure["accuracy"].steps == ()
    assert len(by_figure["p90_ms"].points) == 12
    assert by_figure["p90_ms"].regressions()[0][0] == 9


def test_record_session_stores_commit_and_model_hashes(tmp_path: Path) -> None:
    """What the plugin calls at session end: the history beside the config, with the checkout's
    commit and the model files' hashes."""
    import hashlib
    import shutil

    from harness.store import record_session

    repo = tmp_path / "repo"
    example = Path(__file__).resolve().parent.parent / "examples" / "digits"
    shutil.copytree(example, repo, ignore=shutil.ignore_patterns(".github", ".harness"))
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "models"], check=True)
    head = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    document = _document()
    for record in document["results"]:
        record["model"] = "digits-onnx"
    run, where = record_session(document, repo / "harness.toml")
    path = repo / ".harness" / "history.sqlite"
    assert where == str(path)
    with Store(path) as store:
        commit, ref = store.db.execute("SELECT git_commit, git_ref FROM runs").fetchone()
        assert (run, commit, ref) == (1, head, "refs/heads/main")
        hashes = {r[0] for r in store.db.execute("SELECT model_sha256 FROM figures")}
    expected = hashlib.sha256((repo / "models" / "digits.onnx").read_bytes()).hexdigest()
    assert hashes == {expected}


def test_a_language_model_folder_is_hashed_by_every_file(tmp_path: Path) -> None:
    """A GenAI folder has no single file: the history hashes all of them, so a changed weight
    file shows as a changed model (it recorded no hash at all before)."""
    from harness.store import model_hashes_from_config

    folder = tmp_path / "models" / "lm"
    folder.mkdir(parents=True)
    (folder / "genai_config.json").write_text("{}")
    (folder / "model.onnx").write_bytes(b"weights")
    config = tmp_path / "harness.toml"
    config.write_text(
        'devices = ["host"]\n[[models]]\nname = "lm"\ntask = "generate"\npath = "models/lm"\n'
    )
    first = model_hashes_from_config(config)
    assert set(first) == {"lm"} and len(first["lm"]) == 64
    (folder / "model.onnx").write_bytes(b"other weights")
    changed = model_hashes_from_config(config)["lm"]
    assert changed != first["lm"]
    (folder / "model.onnx").rename(folder / "renamed.onnx")  # same bytes, another file
    assert model_hashes_from_config(config)["lm"] != changed


def test_another_programs_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    import sqlite3

    from harness.store import StoreError

    path = tmp_path / "theirs.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE invoices (id INTEGER)")
    before = path.read_bytes()
    with pytest.raises(StoreError, match="not a harness history \\(tables: invoices\\)"):
        Store(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if "corrupt" in p.name] == []
    done = _history("--db", str(path), cwd=tmp_path)
    assert done.returncode == 2
    assert f"harness: error: history {path}: {path} is an SQLite database but not" in done.stderr


def test_a_session_writes_its_history_to_a_git_branch(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    """`pytest --harness-history git:REMOTE#BRANCH`: the run lands on the branch of the remote."""
    from harness.history import open_history
    from harness.modelgen import onnx as onnx_models

    remote = tmp_path / "history.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    onnx_models.mlp(pytester.path / "m.onnx")
    (pytester.path / "harness.toml").write_text(
        '[robustness]\nexamples = 0\n[[models]]\nname = "m"\npath = "m.onnx"\n'
    )
    result = pytester.runpytest(f"--harness-history=git:{remote}#runs", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines([f"*history run 1 in git:{remote}#runs*"])
    listed = subprocess.run(
        ["git", "-C", str(remote), "ls-tree", "-r", "--name-only", "runs"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert len([name for name in listed if name.endswith(".json")]) == 1
    store = open_history(f"git:{remote}#runs", readonly=True, cache=tmp_path / "cache")
    try:
        assert store.run_count() == 1
    finally:
        store.close()
