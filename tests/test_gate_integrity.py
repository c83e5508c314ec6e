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
