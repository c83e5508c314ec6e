"""`--baseline`: base and new measured in the same worker, relative gates, missing baselines."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import git
from harness.modelgen import onnx as onnx_models

pytest_plugins = ["pytester"]


def config(gates: str, extra: str = "") -> str:
    return textwrap.dedent(f"""\
        {extra}
        [robustness]
        examples = 0
        [latency]
        time_budget_s = 8
        [[models]]
        name = "loop"
        path = "model.onnx"
        [models.gates]
        {gates}
        """)


def repo_with_two_commits(root: Path, first: int, second: int, gates: str) -> None:
    """model.onnx at HEAD~1 runs `first` loop steps, at HEAD `second` (work grows linearly)."""
    git(root, "init", "-q")
    onnx_models.slow(root / "model.onnx", iterations=first, size=96)
    (root / "harness.toml").write_text(config(gates))
    git(root, "add", "-A")
    git(root, "commit", "-qm", "base")
    onnx_models.slow(root / "model.onnx", iterations=second, size=96)
    (root / "README.md").write_text("a change\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "head")


def test_unchanged_model_passes_against_head_1(pytester: pytest.Pytester) -> None:
    repo_with_two_commits(
        pytester.path, 6, 6, "latency_max_regression = 0.25\nmemory_max_growth = 0.5"
    )
    result = pytester.runpytest("--baseline=HEAD~1", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(
        ["*baseline HEAD~1 (*)*", "*latency*ratio*latency_max_regression 25%*PASS*"]
    )


def test_slowed_model_fails_with_the_paired_ratio(pytester: pytest.Pytester) -> None:
    repo_with_two_commits(pytester.path, 4, 8, "latency_max_regression = 0.05")
    out = pytester.path / "r.json"
    result = pytester.runpytest("--baseline=HEAD~1", f"--harness-json={out}")
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.re_match_lines(
        [
            r".*latency\[loop@host\]: latency \+\d+\.\d% \[\+\d+\.\d%, \+\d+\.\d%\] > 5% "
            r"\(host, measured, paired n=\d+\)"
        ]
    )
    latency = next(r for r in json.loads(out.read_text())["results"] if r["suite"] == "latency")
    figures = latency["figures"]
    assert figures["paired"] and figures["ratio_low"] > 1.05
    assert len(latency["raw"]["baseline_samples_ns"]) == len(latency["raw"]["samples_ns"])
    assert latency["worker"]["baseline"].startswith("HEAD~1 (")


def test_model_missing_at_the_base_is_an_error_by_default(pytester: pytest.Pytester) -> None:
    root = pytester.path
    git(root, "init", "-q")
    (root / "README.md").write_text("no model yet\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "base")
    onnx_models.slow(root / "model.onnx", iterations=2, size=32)
    (root / "harness.toml").write_text(config("latency_max_regression = 0.05\nsize_kb_max = 10"))
    git(root, "add", "-A")
    git(root, "commit", "-qm", "add the model")
    result = pytester.runpytest("--baseline=HEAD~1")
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*latency[[]loop@host[]]: no baseline for latency_max_regression: model.onnx does not "
            "exist at HEAD~1 (*) (to report such models as NO BASELINE instead, set "
            'baseline_missing = "report" in harness.toml)'
        ]
    )
    (root / "harness.toml").write_text(
        config("latency_max_regression = 0.05", extra='baseline_missing = "report"')
    )
    result = pytester.runpytest("--baseline=HEAD~1")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["*latency*NO BASELINE*not applied: model.onnx does not exist*"])


def test_relative_gates_without_baseline_are_reported_not_applied(
    pytester: pytest.Pytester,
) -> None:
    onnx_models.slow(pytester.path / "model.onnx", iterations=2, size=32)
    (pytester.path / "harness.toml").write_text(config("latency_max_regression = 0.05"))
    result = pytester.runpytest()
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*latency*not applied*latency regression*no --baseline given*"])


def test_accuracy_drop_against_a_base_model_file(pytester: pytest.Pytester) -> None:
    root = pytester.path
    rng = np.random.default_rng(0)
    w = [
        rng.standard_normal((16, 8)).astype(np.float32),
        rng.standard_normal((8, 4)).astype(np.float32),
    ]
    b = [np.zeros(8, np.float32), np.zeros(4, np.float32)]
    onnx_models.mlp(root / "base.onnx", w, b)
    damaged = [w[0] + rng.standard_normal(w[0].shape).astype(np.float32), w[1]]
    onnx_models.mlp(root / "model.onnx", damaged, b)
    x = rng.standard_normal((200, 16)).astype(np.float32)
    relu = np.maximum(x @ w[0], 0)
    np.savez(root / "d.npz", X=x, y=np.argmax(relu @ w[1], axis=1))  # labels: the base's answers
    (root / "harness.toml").write_text(
        textwrap.dedent("""\
        [[models]]
        name = "mlp"
        path = "model.onnx"
        dataset = "d.npz"
        [models.gates]
        accuracy_max_drop = 0.02
        """)
    )
    result = pytester.runpytest("--baseline=base.onnx", "-k", "accuracy")
    result.assert_outcomes(failed=1)
    result.stdout.re_match_lines(
        [
            r".*accuracy\[mlp@host\]: accuracy drop 0\.\d{4} > 0\.0200 \(1\.0000 → 0\.\d{4}\) "
            r"\(host, measured, n=200\)"
        ]
    )


def test_stored_results_as_baseline(pytester: pytest.Pytester) -> None:
    onnx_models.slow(pytester.path / "model.onnx", iterations=2, size=64)
    (pytester.path / "harness.toml").write_text(config("latency_max_regression = 3.0"))
    pytester.runpytest("--harness-json=base.json").assert_outcomes(passed=4)
    out = pytester.path / "new.json"
    # policy[loop] too: the results document carries the config it was made with
    pytester.runpytest("--baseline=base.json", f"--harness-json={out}").assert_outcomes(passed=5)
    latency = next(r for r in json.loads(out.read_text())["results"] if r["suite"] == "latency")
    assert latency["figures"]["paired"] is False
    assert latency["figures"]["ratio_low"] <= latency["figures"]["ratio_high"]


def test_bad_baseline_values_are_usage_errors(pytester: pytest.Pytester) -> None:
    onnx_models.slow(pytester.path / "model.onnx", iterations=2, size=32)
    (pytester.path / "harness.toml").write_text(config("size_kb_max = 10"))
    result = pytester.runpytest("--baseline=no-such-ref")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--baseline no-such-ref: not a git ref of the repository*"])
    (pytester.path / "broken.json").write_text("{not json")
    result = pytester.runpytest("--baseline=broken.json")
    result.stderr.fnmatch_lines(["*--baseline *broken.json: cannot use it as stored results:*"])


def test_a_stored_baseline_from_another_machine_is_flagged(pytester: pytest.Pytester) -> None:
    onnx_models.slow(pytester.path / "model.onnx", iterations=2, size=64)
    (pytester.path / "harness.toml").write_text(config("latency_max_regression = 3.0"))
    pytester.runpytest("--harness-json=base.json").assert_outcomes(passed=4)
    document = json.loads((pytester.path / "base.json").read_text())
    document["host"]["fingerprint"] = "another-machine"
    (pytester.path / "base.json").write_text(json.dumps(document))
    out = pytester.path / "new.json"
    # policy[loop] too: the results document carries the config it was made with
    pytester.runpytest("--baseline=base.json", f"--harness-json={out}").assert_outcomes(passed=5)
    latency = next(r for r in json.loads(out.read_text())["results"] if r["suite"] == "latency")
    assert latency["flags"]["baseline_other_machine"] is True
    (check,) = latency["verdict"]["checks"]
    assert check["message"].endswith(
        "[baseline measured on another machine: figures may not compare]"
    )
