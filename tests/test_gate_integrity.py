"""Every path by which a bad model could pass, fed the bad case: NaN figures, a session that
measured nothing, a pull request that loosens its own gates, a baseline that gives nothing."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from harness.config import GateSpec
from harness.gates import FAIL, decide
from harness.modelgen import onnx as onnx_models
from harness.results import Flags

pytest_plugins = ["pytester"]


@pytest.mark.parametrize(
    ("suite", "figures", "gates"),
    [
        ("accuracy", {"mae": math.nan}, GateSpec(mae_max=0.1)),
        ("accuracy", {"accuracy": math.nan}, GateSpec(accuracy_min=0.9)),
        ("latency", {"p90_ms": math.nan}, GateSpec(latency_p90_ms_max=5.0)),
        ("memory", {"peak_mb": math.inf}, GateSpec(memory_peak_mb_max=100)),
        ("parity", {"parity_max_abs_error": math.nan}, GateSpec(parity_max_abs_error=0.1)),
        ("parity", {"parity_cosine_min": math.nan}, GateSpec(parity_cosine_min=0.9)),
        (
            "accuracy",
            {"accuracy": 0.9, "accuracy_drop": math.nan, "baseline_accuracy": math.nan},
            GateSpec(accuracy_max_drop=0.01),
        ),
        (
            "latency",
            {"ratio": math.nan, "ratio_low": math.nan, "ratio_high": math.nan, "paired": True},
            GateSpec(latency_max_regression=0.05),
        ),
        (
            "memory",
            {"memory_growth": math.nan, "baseline_model_share_mb": 0.0, "model_share_mb": 1.0},
            GateSpec(memory_max_growth=0.1),
        ),
    ],
)
def test_a_non_finite_figure_fails_its_gate(
    suite: str, figures: dict[str, float], gates: GateSpec
) -> None:
    verdict = decide(suite, figures, gates, "host", "measured", Flags(baseline="HEAD"))
    assert verdict.status == FAIL, verdict
    assert any("not a finite number" in reason for reason in verdict.reasons), verdict.reasons


def test_non_finite_outputs_fail_accuracy_by_default() -> None:
    verdict = decide("accuracy", {"accuracy": 0.99, "nonfinite": 3}, GateSpec(), "h", "measured")
    assert verdict.status == FAIL
    assert verdict.reasons == ("samples with non-finite outputs 3 > 0 (h, measured)",)
    allowed = decide(
        "accuracy", {"accuracy": 0.99, "nonfinite": 3}, GateSpec(nonfinite_max=5), "h", "measured"
    )
    assert allowed.status != FAIL


def test_a_regression_model_that_outputs_nan_fails(pytester: pytest.Pytester) -> None:
    root = pytester.path
    weights = [np.ones((4, 1), np.float32)]
    onnx_models.mlp(root / "nan.onnx", weights, [np.array([np.nan], np.float32)], softmax=False)
    rng = np.random.default_rng(0)
    np.savez(root / "data.npz", X=rng.standard_normal((20, 4)).astype(np.float32),
             y=rng.standard_normal((20, 1)).astype(np.float32))  # fmt: skip
    (root / "harness.toml").write_text(
        '[[models]]\nname = "nan"\npath = "nan.onnx"\ndataset = "data.npz"\n'
        "[models.gates]\nmae_max = 0.5\n"
    )
    result = pytester.runpytest("-k", "accuracy", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*mae_max: mae is nan (host, measured): not a finite number*"])
    result.stdout.fnmatch_lines(["*samples with non-finite outputs 20 > 0*"])


def test_a_device_override_does_not_reset_the_default_nonfinite_gate(tmp_path: Path) -> None:
    from harness.config import load_config

    (tmp_path / "m.onnx").write_bytes(b"")
    (tmp_path / "harness.toml").write_text(
        '[[models]]\nname = "m"\npath = "m.onnx"\n[models.gates]\nnonfinite_max = 4\n'
        "[models.devices.rpi4]\nmemory_peak_mb_max = 100\n"
    )
    model = load_config(tmp_path / "harness.toml").models[0]
    assert model.gates_for("rpi4").nonfinite_max == 4
    assert model.gates_for("rpi4").memory_peak_mb_max == 100


def _wide_mlp(path: Path, hidden: int) -> None:
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal((1024, hidden)).astype(np.float32),
               rng.standard_normal((hidden, 4)).astype(np.float32)]  # fmt: skip
    biases = [np.zeros(hidden, np.float32), np.zeros(4, np.float32)]
    onnx_models.mlp(path, weights, biases)


def test_memory_growth_reads_the_model_share_not_the_whole_process(
    pytester: pytest.Pytester,
) -> None:
    """The weights double (8 -> 16 MB). The worker's peak also holds ~45 MB of Python, numpy and
    the runtime, which dilutes the change; the model's share does not. The gate reads the share."""
    import json

    root = pytester.path
    (root / "base").mkdir()
    _wide_mlp(root / "base" / "m.onnx", 2048)
    _wide_mlp(root / "m.onnx", 4096)
    (root / "harness.toml").write_text(
        '[[models]]\nname = "m"\npath = "m.onnx"\n[models.gates]\nmemory_max_growth = 0.30\n'
    )
    result = pytester.runpytest(
        "-k", "memory", "--baseline=base", "--harness-json=out.json", "-p", "no:cacheprovider"
    )
    (memory,) = json.loads((root / "out.json").read_text())["results"]
    figures = memory["figures"]
    share_growth = figures["model_share_mb"] / figures["baseline_model_share_mb"] - 1
    peak_growth = figures["peak_mb"] / figures["baseline_peak_mb"] - 1
    assert figures["memory_growth"] == pytest.approx(share_growth)
    assert share_growth > 0.30 > peak_growth  # the whole peak would have let it through
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*memory (model share) +* > 30% (* → * MB) (host, measured)*"])


def _cuda_only(root: Path) -> None:
    onnx_models.mlp(root / "m.onnx")
    (root / "harness.toml").write_text(
        'devices = ["cuda-gpu"]\n[[models]]\nname = "m"\npath = "m.onnx"\n'
        "[models.gates]\nsize_kb_max = 64\n"
    )


def test_a_gpu_only_session_without_a_gpu_fails(
    pytester: pytest.Pytester, docker_client: object
) -> None:
    # With an engine, the cuda-gpu backend can say the GPU is missing (without one it cannot ask).
    import json
    import shutil

    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has an NVIDIA GPU: the cuda-gpu device measures here")
    _cuda_only(pytester.path)
    result = pytester.runpytest("--harness-json=out.json", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["harness: FAIL: nothing was measured on cuda-gpu: *"])
    assert json.loads((pytester.path / "out.json").read_text())["exitstatus"] == 1
    allowed = pytester.runpytest("--allow-unmeasured", "-p", "no:cacheprovider")
    assert allowed.ret == pytest.ExitCode.OK
    # The merge of that session's results says the same, and exits non-zero.
    from harness.results import read_document
    from harness.verdict import overall

    document = read_document(pytester.path / "out.json")
    verdict = overall(document)
    assert verdict.status == "ERROR" and verdict.exit_code() == 1
    assert any("nothing was measured on cuda-gpu" in p for p in verdict.problems)
    assert overall(document, allow_unmeasured=True).exit_code() == 0


def _repo_with_gates(root: Path, base_gates: str) -> None:
    from conftest import git

    git(root, "init", "-q")
    onnx_models.mlp(root / "m.onnx")
    (root / "harness.toml").write_text(_policy_config(base_gates))
    git(root, "add", "-A")
    git(root, "commit", "-qm", "base")


def _policy_config(gates: str, extra: str = "") -> str:
    return f'{extra}\n[[models]]\nname = "m"\npath = "m.onnx"\n[models.gates]\n{gates}\n'


def test_a_pull_request_that_loosens_its_gates_fails_policy(pytester: pytest.Pytester) -> None:
    root = pytester.path
    _repo_with_gates(root, "size_kb_max = 64\naccuracy_min = 0.95\n[models.devices.rpi4]\n"
                     "memory_peak_mb_max = 100")  # fmt: skip
    (root / "harness.toml").write_text(
        _policy_config(
            "size_kb_max = 64\naccuracy_min = 0.90\n[models.devices.rpi4]\n"
            "memory_peak_mb_max = 150",
            'inconclusive = "pass"',
        )  # fmt: skip
    )
    result = pytester.runpytest("-k", "policy", "--baseline=HEAD", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*policy[[]m[]]: this change loosens gates or changes what is measured against HEAD "
            "(*): accuracy_min 0.95 → 0.9 "
            "(loosened); devices.rpi4.memory_peak_mb_max 100 → 150 (loosened); "
            "config.inconclusive fail → pass (loosened)*"
        ]  # fmt: skip
    )
    allowed = pytester.runpytest(
        "-k", "policy", "--baseline=HEAD", "--allow-gate-changes", "-p", "no:cacheprovider"
    )
    allowed.assert_outcomes(passed=1)
    allowed.stdout.fnmatch_lines(["*policy*accuracy_min 0.95 → 0.9 (loosened)*"])  # still shown


def test_tightened_and_removed_gates(pytester: pytest.Pytester) -> None:
    root = pytester.path
    _repo_with_gates(root, "size_kb_max = 64\naccuracy_min = 0.95")
    (root / "harness.toml").write_text(_policy_config("size_kb_max = 32\naccuracy_min = 0.97"))
    tightened = pytester.runpytest("-k", "policy", "--baseline=HEAD", "-p", "no:cacheprovider")
    tightened.assert_outcomes(passed=1)
    (root / "harness.toml").write_text(_policy_config("accuracy_min = 0.97"))
    removed = pytester.runpytest("-k", "policy", "--baseline=HEAD", "-p", "no:cacheprovider")
    removed.assert_outcomes(failed=1)
    removed.stdout.fnmatch_lines(["*size_kb_max 64 → unset (loosened)*"])


def test_policy_compares_every_gate_direction() -> None:
    from harness.policy import LOOSENED, TIGHTENED, _compare

    assert _compare("gates", "accuracy_min", 0.9, 0.8).kind == LOOSENED  # type: ignore[union-attr]
    assert _compare("gates", "parity_cosine_min", 0.9, 0.99).kind == TIGHTENED  # type: ignore[union-attr]
    assert _compare("gates", "latency_max_regression", 0.05, 0.1).kind == LOOSENED  # type: ignore[union-attr]
    assert _compare("gates", "mae_max", 0.1, 0.05).kind == TIGHTENED  # type: ignore[union-attr]
    assert _compare("gates", "nonfinite_max", 0.0, None).kind == LOOSENED  # type: ignore[union-attr]
    assert _compare("gates", "size_kb_max", None, 10.0).kind == TIGHTENED  # type: ignore[union-attr]
    assert _compare("gates", "size_kb_max", 10.0, 10.0) is None


def test_the_report_lists_every_gate_change() -> None:
    from harness.report.wording import gate_changes

    records = [
        {"suite": "policy", "model": "m", "figures": {"allowed": True, "changes": [
            "accuracy_min 0.95 → 0.9 (loosened)", "size_kb_max 64 → 32 (tightened)"]}},
        {"suite": "size", "model": "m", "figures": {"size_kb": 3.0}},
    ]  # fmt: skip
    lines = gate_changes(records)
    assert "- m: accuracy_min 0.95 → 0.9 (loosened) — accepted (--allow-gate-changes)" in lines
    assert "- m: size_kb_max 64 → 32 (tightened) — accepted (--allow-gate-changes)" in lines
    assert gate_changes(records[1:]) == []


def test_an_item_that_breaks_unexpectedly_still_has_its_error_row(
    pytester: pytest.Pytester,
) -> None:
    """A bug inside a suite (here a planted one) fails its item with the traceback and still
    leaves an ERROR record: in the table, the JSON and so the merged verdict."""
    import json

    onnx_models.mlp(pytester.path / "m.onnx")
    (pytester.path / "harness.toml").write_text('[[models]]\nname = "m"\npath = "m.onnx"\n')
    pytester.makeconftest(
        "import harness.suites.size as size\n"
        "def _broken(pair):\n    raise KeyError('planted')\n"
        "size.measure = _broken\n"
    )
    # In a subprocess: the planted bug must not outlive this test in the shared module.
    result = pytester.runpytest_subprocess(
        "-k", "size", "--harness-json=out.json", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["host *m *size *ERROR *KeyError: 'planted'*"])
    (record,) = json.loads((pytester.path / "out.json").read_text())["results"]
    assert record["verdict"]["status"] == "ERROR"


@pytest.mark.parametrize(
    ("low", "high", "status"), [(60.0, 100.0, "PASS"), (600.0, 1000.0, "FAIL"), (300.0, 700.0,
                                                                                  "INCONCLUSIVE")]
)  # fmt: skip
def test_an_emulated_latency_gate_reads_the_estimate_and_its_band(
    low: float, high: float, status: str
) -> None:
    figures = {
        "p90_ms": 9000.0,  # the emulated wall clock: never compared with device milliseconds
        "estimated_ms": (low + high) / 2,
        "estimated_ms_low": low,
        "estimated_ms_high": high,
        "estimate_model": "cortex-a72 timing model at 1500 MHz, 1 thread",
    }
    verdict = decide("latency", figures, GateSpec(latency_p90_ms_max=500), "rpi4", "emulated")
    assert verdict.status == status
    (check,) = verdict.checks
    assert check.figure == "estimated_ms"
    assert "(rpi4, estimated: cortex-a72 timing model at 1500 MHz, 1 thread)" in check.message


def test_without_a_timing_model_the_emulated_gate_says_how_to_get_one() -> None:
    figures = {"p90_ms": 9000.0, "estimate_unavailable": "no timing model here (...); run X"}
    verdict = decide("latency", figures, GateSpec(latency_p90_ms_max=500), "rpi4", "emulated")
    (check,) = verdict.checks
    assert check.passed is None and "run X" in check.message


def test_an_error_verdict_fails_its_item_and_the_session(pytester: pytest.Pytester) -> None:
    """A stored baseline that gives a relative gate nothing to compare with is an ERROR: pytest's
    outcome, its exit status and the JSON agree (it used to pass in pytest)."""
    import json

    onnx_models.mlp(pytester.path / "m.onnx")
    (pytester.path / "harness.toml").write_text(
        _policy_config("memory_max_growth = 0.5", "[robustness]\nexamples = 0")
    )
    pytester.runpytest("--harness-json=base.json", "-p", "no:cacheprovider").assert_outcomes(
        passed=4
    )
    stored = json.loads((pytester.path / "base.json").read_text())
    stored["results"] = [r for r in stored["results"] if r["suite"] != "memory"]
    (pytester.path / "base.json").write_text(json.dumps(stored))
    result = pytester.runpytest(
        "--baseline=base.json", "--harness-json=out.json", "-p", "no:cacheprovider"
    )
    assert result.ret == 1
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(["*memory[[]m@host[]]*memory_max_growth: no memory_growth*"])
    document = json.loads((pytester.path / "out.json").read_text())
    memory = next(r for r in document["results"] if r["suite"] == "memory")
    assert memory["verdict"]["status"] == "ERROR"


def test_the_history_is_not_written_through_a_link(pytester: pytest.Pytester) -> None:
    """A committed `.harness` link would send the history elsewhere: harness refuses it."""
    elsewhere = pytester.path / "elsewhere"
    elsewhere.mkdir()
    (pytester.path / ".harness").symlink_to(elsewhere)
    onnx_models.mlp(pytester.path / "m.onnx")
    (pytester.path / "harness.toml").write_text(
        _policy_config("size_kb_max = 64", "[robustness]\nexamples = 0")
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*history not written*is a symbolic link*"])
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ("[models.gates]\naccuracy_min = nan", "accuracy_min = nan"),
        ("[models.gates]\nsize_kb_max = inf", "size_kb_max = inf"),
        ("[models.devices.host]\nmae_max = -inf", "mae_max = -inf"),
        ("[models.gates]\nparity_max_abs_error = nan", "parity_max_abs_error = nan"),
    ],
)
def test_non_finite_thresholds_are_refused_naming_the_key(
    tmp_path: Path, table: str, key: str
) -> None:
    from harness.config import load_config
    from harness.errors import ConfigError

    (tmp_path / "harness.toml").write_text(f'[[models]]\nname = "m"\npath = "m.onnx"\n{table}\n')
    with pytest.raises(ConfigError, match=f"{key} must be a finite number"):
        load_config(tmp_path / "harness.toml")


@pytest.mark.parametrize(
    "table", ["[latency]\ntime_budget_s = nan", "[plan]\nbudget_s = inf", "timeout_s = nan"]
)
def test_non_finite_settings_are_refused(tmp_path: Path, table: str) -> None:
    from harness.config import load_config
    from harness.errors import ConfigError

    (tmp_path / "harness.toml").write_text(f'{table}\n[[models]]\nname = "m"\npath = "m.onnx"\n')
    with pytest.raises(ConfigError, match="must be a finite number"):
        load_config(tmp_path / "harness.toml")
