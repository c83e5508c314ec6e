"""The workflows, run end to end by a real Actions engine (act, tests/actlocal.py) on this machine:
a model repository like examples/digits calls `OWNER/harness/.github/workflows/model-gate.yml`
(mapped to this checkout) on host, x86-64 and rpi4 (real Docker, real QEMU), and
`nightly.yml` for two nights with its history on a branch of a local bare origin. Each test
reads what GitHub would show: the exit status, the gate job's `verdict` output, the `::error`
annotations and their files, the job summary and the uploaded report artifact.

The runs share one act state (its cache server, the jobs' ~/.cache/harness): later runs find
what earlier ones cached, as a repository's later pull requests do. Without act, Docker, the
actions folder (../shared/actions) or binfmt these tests skip, and fail under CI=true.
"""

from __future__ import annotations

import json
from typing import Any

import actlocal
import pytest

from conftest import unavailable

DEVICES = "host, x86-64, rpi4"
# The nightly as a model repository schedules it (docs/ci.md), on the host with small budgets.
NIGHTLY = """name: nightly
on:
  schedule:
    - cron: "17 3 * * *"
permissions:
  contents: read
jobs:
  nightly:
    permissions:
      contents: write
      issues: write
    uses: OWNER/harness/.github/workflows/nightly.yml@v0.1.0
    with:
      devices: host
      harness-spec: {wheel}
      pytest-args: "--harness-samples 200 --harness-time-budget 3"
"""


@pytest.fixture(scope="module")
def act() -> None:
    """act, Docker, the actions folder and binfmt are here (the `act` marker: conftest.py)."""
    why = actlocal.missing()
    if why:
        unavailable(why)


@pytest.fixture(scope="module")
def setting(
    act: None, tmp_path_factory: pytest.TempPathFactory
) -> tuple[actlocal.Repository, actlocal.Act]:
    root = tmp_path_factory.mktemp("act")
    wheel = actlocal.build_wheel(root / "wheel")
    repository = actlocal.example_repository(root / "repository", wheel, DEVICES)
    workflows = repository.work / ".github" / "workflows"
    # The same caller on the host alone: the gate-change pair is about policy, decided once
    # for every device (`policy[...]`, device "any"), and keeps the module within its minutes.
    host_only = (workflows / "model-gate.yml").read_text()
    # `inconclusive: pass` there: what this pair shows is policy, and the host's paired latency
    # may stay undecided on a loaded machine; it also shows the input reaching the jobs.
    host_only = host_only.replace(f"devices: {json.dumps(DEVICES)}", 'devices: "host"')
    (workflows / "host-gate.yml").write_text(
        host_only.replace(
            "      config: ",
            "      inconclusive: pass\n"
            '      pytest-args: "--harness-time-budget 3"\n'
            "      config: ",
            1,
        )
    )
    (workflows / "nightly.yml").write_text(NIGHTLY.format(wheel=json.dumps(str(wheel))))
    repository.commit("the host-only gate and the nightly")
    actlocal.git(repository.work, "push", "-q", "origin", "main")
    return repository, actlocal.Act(root / "state", wheel)


def pull_request(
    setting: tuple[actlocal.Repository, actlocal.Act],
    name: str,
    number: int,
    files: dict[str, bytes | str | None],
    labels: tuple[str, ...] = (),
    caller: str = "model-gate.yml",
) -> actlocal.Run:
    repository, act = setting
    with actlocal.branch(repository, name):
        repository.commit(name, files)
        event = actlocal.pull_request_event(repository, number, list(labels))
        workflow = repository.work / ".github" / "workflows" / caller
        return act.run(repository, "pull_request", event, workflow)


def results(run: actlocal.Run) -> list[dict[str, Any]]:
    document = json.loads(run.artifact("harness-report")["results.json"])
    return list(document["results"])


def shown(run: actlocal.Run) -> str:
    return f"exit {run.status} after {run.wall_s:.0f} s\n{run.log[-20000:]}"


# -- the nightly, two nights ------------------------------------------------------------------


def night(setting: tuple[actlocal.Repository, actlocal.Act]) -> actlocal.Run:
    repository, act = setting
    event = {
        "schedule": "17 3 * * *",
        "repository": {
            "full_name": "example/digits",
            "name": "digits",
            "owner": {"login": "example"},
            "default_branch": "main",
        },
    }
    workflow = repository.work / ".github" / "workflows" / "nightly.yml"
    return act.run(repository, "schedule", event, workflow)


# The GitHub CLI the nightly's regression step calls: act reaches no GitHub API here, so a
# stand-in records the call (docs/ci.md: what act cannot do here).
GH = """#!/bin/sh
echo "$*" >> "{calls}"
case "$1 $2" in
  "issue create"|"issue comment")
    while [ $# -gt 0 ]; do
      if [ "$1" = --body-file ]; then cat "$2" >> "{calls}"; fi
      shift
    done ;;
esac
"""


def worse_onnx() -> bytes:
    """digits.onnx with its first layer's weights reversed: it runs, as fast, and it is wrong."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(actlocal.EXAMPLE / "models" / "digits.onnx"))
    for index, tensor in enumerate(model.graph.initializer):
        if tensor.name == "coefficient":
            weights = numpy_helper.to_array(tensor)[::-1].copy()
            model.graph.initializer[index].CopyFrom(numpy_helper.from_array(weights, tensor.name))
    return bytes(model.SerializeToString())


@pytest.fixture(scope="module")
def nights(setting: tuple[actlocal.Repository, actlocal.Act]) -> list[actlocal.Run]:
    """Night 1 on main as it is; night 2 after a commit to main that broke digits.onnx."""
    repository, act = setting
    calls = act.state / "gh-calls"
    (act.bin / "gh").write_text(GH.format(calls=calls))
    (act.bin / "gh").chmod(0o755)
    first = night(setting)
    repository.commit("a broken digits.onnx", {"models/digits.onnx": worse_onnx()})
    actlocal.git(repository.work, "push", "-q", "origin", "main")
    try:
        second = night(setting)
    finally:
        original = (actlocal.EXAMPLE / "models" / "digits.onnx").read_bytes()
        repository.commit("digits.onnx back", {"models/digits.onnx": original})
        actlocal.git(repository.work, "push", "-q", "origin", "main")
    (act.bin / "gh").unlink()
    return [first, second]


def test_two_nights_on_the_history_branch_and_the_regression_reported(
    setting: tuple[actlocal.Repository, actlocal.Act], nights: list[actlocal.Run]
) -> None:
    repository, act = setting
    first, second = nights
    assert first.status == 0, shown(first)
    listing = actlocal.git(repository.origin, "ls-tree", "-r", "--name-only", "harness-history")
    runs = [name for name in listing.splitlines() if name.startswith("runs/")]
    assert len(runs) == 2, listing
    assert "index.html" in listing.splitlines(), listing  # the nightly site, for Pages
    # Night 2 fails, names the step of the broken model's accuracy, and comments on the issue.
    assert second.status != 0, shown(second)
    report = second.artifact("harness-nightly-report")
    text = report["report.md"].decode()
    assert "regression" in text and "digits-onnx" in text, text[:3000]
    assert any("accuracy" in line and "digits-onnx" in line for line in text.splitlines()), text
    calls = (act.state / "gh-calls").read_text()
    assert "issue create --repo " in calls and "--title Nightly model regression" in calls, calls
    assert "found a regression or a failing gate" in calls


# -- pull requests ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def readme_only(setting: tuple[actlocal.Repository, actlocal.Act]) -> actlocal.Run:
    return pull_request(setting, "readme", 1, {"README.md": "# digits\n\nOnly words change.\n"})


def test_a_readme_only_pull_request_passes_on_every_device(readme_only: actlocal.Run) -> None:
    run = readme_only
    assert run.status == 0, shown(run)
    assert run.outputs("gate")["verdict"] == "PASS", shown(run)
    assert run.annotations("gate") == [], shown(run)
    assert "PASS" in run.summary("gate").splitlines()[0], run.summary("gate")
    records = results(run)
    assert {r["device"] for r in records if r["device"] != "any"} == {"host", "x86-64", "rpi4"}
    latency = [r for r in records if r["suite"] == "latency"]
    assert len(latency) == 9 and {r["figures"]["ratio_basis"] for r in latency} == {"identical"}
    assert all(r["verdict"]["status"] in ("PASS", "NO GATE") for r in records), [
        (r["suite"], r["device"], r["verdict"]) for r in records if r["verdict"]["status"] != "PASS"
    ]


def test_board_latency_is_estimated_with_its_band(readme_only: actlocal.Run) -> None:
    """On rpi4 the p90 gate reads the timing model (counting prepared by the workflow), with
    its band; the regression against an identical base is nothing, by identity."""
    latency = [r for r in results(readme_only) if r["suite"] == "latency" and r["device"] == "rpi4"]
    assert len(latency) == 3, latency
    for record in latency:
        figures = record["figures"]
        assert figures.get("estimated_ms", 0) > 0, figures
        assert figures.get("estimate_band", 0) > 0, figures
        assert figures["estimated_ms_low"] < figures["estimated_ms"] < figures["estimated_ms_high"]
        p90 = next(c for c in record["verdict"]["checks"] if c["gate"] == "latency_p90_ms_max")
        assert p90["passed"] and "(board estimate)" in p90["message"], p90
        assert figures["ratio_basis"] == "identical" and figures["emulated_runs"] == 0, figures
    report = readme_only.artifact("harness-report")["report.md"].decode()
    assert "✅ estimated" in report, report[:3000]  # the rpi4 column of the grid


def test_the_report_artifact_and_the_pr_number(readme_only: actlocal.Run) -> None:
    files = readme_only.artifact("harness-report")
    assert {"report.md", "report.html", "results.json", "pr-number"} <= set(files), list(files)
    assert files["pr-number"].decode().strip() == "1"
    assert files["report.html"].lstrip().startswith(b"<!DOCTYPE html"), files["report.html"][:80]


@pytest.fixture(scope="module")
def worse_model(setting: tuple[actlocal.Repository, actlocal.Act]) -> actlocal.Run:
    return pull_request(setting, "worse", 2, {"models/digits.onnx": worse_onnx()})


def test_a_worse_model_fails_with_annotations_on_its_file(worse_model: actlocal.Run) -> None:
    run = worse_model
    assert run.status != 0, shown(run)
    assert run.outputs("gate")["verdict"] == "FAIL", shown(run)
    annotations = [a for a in run.annotations("gate") if a.get("file")]
    assert annotations, shown(run)
    assert {a["file"] for a in annotations} == {"models/digits.onnx"}, annotations
    assert any("accuracy" in a["title"] for a in annotations), annotations
    summary = run.summary("gate")
    assert "FAIL" in summary.splitlines()[0] and "digits-onnx" in summary, summary
    # On rpi4 the changed model's regression is decided on the timing model (the same
    # instructions: reversed weights cost what the originals did), the wall clock a note.
    (board,) = [
        r
        for r in results(run)
        if (r["suite"], r["device"], r["model"]) == ("latency", "rpi4", "digits-onnx")
    ]
    assert board["figures"]["ratio_basis"] == "estimated", board["figures"]
    ratio = next(c for c in board["verdict"]["checks"] if c["gate"] == "latency_max_regression")
    assert ratio["passed"] and "timing model on counted instructions" in ratio["message"], ratio
    failed = {(r["suite"], r["device"]) for r in results(run) if r["verdict"]["status"] == "FAIL"}
    assert {("accuracy", device) for device in ("host", "x86-64")} <= failed, failed
    assert all(
        r["model"] == "digits-onnx" for r in results(run) if r["verdict"]["status"] == "FAIL"
    )


def loosened(text: str) -> str:
    assert "accuracy_min = 0.95" in text
    return text.replace("accuracy_min = 0.95", "accuracy_min = 0.50", 1)


def test_loosening_a_gate_fails_without_the_label(setting: Any) -> None:
    repository, _ = setting
    config = loosened((repository.work / "harness.toml").read_text())
    run = pull_request(setting, "loosen", 3, {"harness.toml": config}, caller="host-gate.yml")
    assert run.status != 0, shown(run)
    assert run.outputs("gate")["verdict"] == "FAIL", shown(run)
    policy = [r for r in results(run) if r["suite"] == "policy"]
    assert any(r["verdict"]["status"] == "FAIL" for r in policy), policy
    assert any("accuracy_min" in a["message"] for a in run.annotations("gate")), shown(run)


def test_loosening_a_gate_passes_with_the_label(setting: Any) -> None:
    repository, _ = setting
    config = loosened((repository.work / "harness.toml").read_text())
    run = pull_request(
        setting, "loosen-labelled", 4, {"harness.toml": config}, ("gate-change",), "host-gate.yml"
    )
    assert run.status == 0, shown(run)
    assert run.outputs("gate")["verdict"] in ("PASS", "INCONCLUSIVE"), shown(run)
    policy = [r for r in results(run) if r["suite"] == "policy"]
    assert policy and all(r["verdict"]["status"] == "PASS" for r in policy), policy
    others = [r["verdict"]["status"] for r in results(run) if r["suite"] != "policy"]
    assert set(others) <= {"PASS", "NO GATE", "INCONCLUSIVE"}, others
    assert "accuracy_min" in run.artifact("harness-report")["report.md"].decode()
