"""The instructions item on an emulated Raspberry Pi 4: counts per inference, the timing model's
estimate in device milliseconds with its band and model stated, and
`instructions_max_regression` deciding without statistics against `--baseline`."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFIG = textwrap.dedent("""\
    counting = true
    [robustness]
    examples = 0
    [[models]]
    name = "mlp"
    path = "model.onnx"
    input_shapes = { input = [1, 64] }
    [models.gates]
    instructions_max_regression = 0.004
    """)


def run(pytester: pytest.Pytester, model: Path, base: Path) -> tuple[pytest.RunResult, dict]:
    shutil.copy(model, pytester.path / "model.onnx")
    shutil.copy(base, pytester.path / "base.onnx")
    (pytester.path / "harness.toml").write_text(CONFIG)
    out = pytester.path / "r.json"
    result = pytester.runpytest(
        "--device=rpi4",
        "-k",
        "instructions",
        "--baseline=base.onnx",
        f"--harness-json={out}",
        "-p",
        "no:cacheprovider",
    )
    record = next(r for r in json.loads(out.read_text())["results"] if r["suite"] == "instructions")
    return result, record


def test_identical_models_count_identically_and_pass(
    pytester: pytest.Pytester,
    counting_plugin: Path,
    digits_mlps: tuple[Path, Path],
) -> None:
    base, _ = digits_mlps
    result, record = run(pytester, base, base)
    result.assert_outcomes(passed=1)
    figures = record["figures"]
    assert record["fidelity"] == "counted"
    # Two fresh workers, the same model: the same count to the instruction.
    assert figures["instructions_per_inference"] == figures["baseline_instructions_per_inference"]
    assert figures["instructions_ratio"] == 1.0
    assert figures["cpu"] == "cortex-a72" and figures["arch"] == "arm64"
    # The timing model's estimate (harness.timing): a digits MLP's instructions (runtime
    # upkeep, mostly scalar) lie outside the mix of the MobileNets the CPU file's band was
    # checked on, so the estimate carries the out-of-mix band instead, and says why.
    from harness.timing.model import OUTSIDE_MIX_BAND

    assert figures["estimate_model"].startswith("cortex-a72 timing model at 1500 MHz")
    assert figures["estimate_band"] == OUTSIDE_MIX_BAND
    assert "instruction mix outside the calibration set's: scalar " in figures["estimate_model"]
    assert "estimate_not_validated" not in figures
    assert figures["estimated_ms_high"] == pytest.approx(
        figures["estimated_ms"] / (1 - OUTSIDE_MIX_BAND)
    )
    assert figures["n"] >= 1


def test_half_a_percent_more_work_fails_the_counted_gate(
    pytester: pytest.Pytester,
    counting_plugin: Path,
    digits_mlps: tuple[Path, Path],
) -> None:
    base, wide = digits_mlps
    result, record = run(pytester, wide, base)
    result.assert_outcomes(failed=1)
    result.stdout.re_match_lines(
        [
            r".*instructions\[mlp@rpi4\]: instructions \+0\.\d\d% > 0\.40% \(\d+\.\d → \d+\.\d per "
            r"inference\) \(rpi4, counted\)"
        ]
    )
    assert 1.004 < record["figures"]["instructions_ratio"] < 1.01
