"""The example's language models end to end through pytest: examples/slm/harness.toml on the host
(and on an emulated Raspberry Pi 4), and a change that raises perplexity by 10% failing under
--baseline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import git, unavailable
from harness import textscore
from harness.worker.generate import TextModels
from harness.worker.server import proc_status_kb

pytest_plugins = ["pytester"]
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "slm"


def example(root: Path, slm_models: Path, robustness: int = 8) -> None:
    """The example repository in `root`, with the cached models and data."""
    config = (EXAMPLE / "harness.toml").read_text()
    config = config.replace("examples = 30", f"examples = {robustness}")
    (root / "harness.toml").write_text(config + "\n[latency]\ntime_budget_s = 5\n")
    shutil.copytree(slm_models / "data", root / "data", dirs_exist_ok=True)
    for name in ("slm-float", "slm-int4"):
        shutil.copytree(slm_models / "models" / name, root / "models" / name)


def results(path: Path) -> dict[tuple[str, str, str], dict]:  # type: ignore[type-arg]
    document = json.loads(path.read_text())
    return {(r["suite"], r["model"], r["device"]): r for r in document["results"]}


def test_the_example_passes_its_gates_on_the_host(
    pytester: pytest.Pytester, slm_models: Path
) -> None:
    example(pytester.path, slm_models)
    out = pytester.path / "out.json"
    result = pytester.runpytest("--device=host", f"--harness-json={out}", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=15)
    found = results(out)
    float_ppl = found["perplexity", "slm-float", "host"]["figures"]["perplexity"]
    parity = found["token_parity", "slm-int4", "host"]["figures"]
    assert parity["other_perplexity"] == pytest.approx(float_ppl)
    generation = found["generation", "slm-int4", "host"]
    assert generation["fidelity"] == "measured"
    assert generation["figures"]["tokens_per_s"] > 0
    memory = found["memory", "slm-float", "host"]["figures"]
    assert memory["context_tokens"] == 128 and memory["peak_mb"] >= memory["load_peak_mb"]
    assert found["prompt_robustness", "slm-int4", "host"]["figures"]["examples"] == 8


def scale_logits(folder: Path, factor: float) -> None:
    """Multiply the final norm's weight by `factor`: every logit scales with it (a temperature
    change), so the model's perplexity rises as the factor falls below 1."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(folder / "model.onnx"))
    for tensor in model.graph.initializer:
        if tensor.name.endswith("final_norm_layernorm.weight"):
            scaled = numpy_helper.to_array(tensor) * np.float32(factor)
            tensor.CopyFrom(numpy_helper.from_array(scaled, tensor.name))
    (folder / "model.onnx.data").unlink()  # onnx appends to an existing external data file
    onnx.save(
        model,
        str(folder / "model.onnx"),
        save_as_external_data=True,
        location="model.onnx.data",
        size_threshold=0,
    )


def perplexity(folder: Path, text: str, models: TextModels) -> float:
    models.load(str(folder), str(folder), 1, "none")
    return textscore.perplexity(models.perplexity(str(folder), text, 64, 32)["nll"])


def test_a_change_raising_perplexity_10_percent_fails_under_baseline(
    pytester: pytest.Pytester, slm_models: Path, tmp_path: Path
) -> None:
    root = pytester.path
    example(root, slm_models)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "base")
    # The change: the float model's logits softened until its perplexity is at least 10% higher
    # (measured here first, so the premise of the test is a fact, not a hope).
    text = (root / "data" / "valid.txt").read_text()
    models = TextModels(proc_status_kb)
    before = perplexity(root / "models" / "slm-float", text, models)
    growth = 0.0
    for factor in np.arange(0.7, 0.3, -0.025):
        candidate = tmp_path / f"soft-{factor:.3f}"
        shutil.copytree(root / "models" / "slm-float", candidate)
        scale_logits(candidate, float(factor))
        growth = perplexity(candidate, text, models) / before - 1
        if growth >= 0.10:
            shutil.rmtree(root / "models" / "slm-float")
            shutil.copytree(candidate, root / "models" / "slm-float")
            break
    assert growth >= 0.10
    git(root, "commit", "-qam", "softer logits")
    out = root / "out.json"
    result = pytester.runpytest(
        "--baseline=HEAD~1",
        "-k",
        "perplexity or (generation and slm-int4)",
        f"--harness-json={out}",
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(passed=2, failed=1)  # slm-int4 is unchanged
    result.stdout.fnmatch_lines(["*perplexity +*% > 5% (* → *) (host, measured)*"])
    found = results(out)
    changed = found["perplexity", "slm-float", "host"]["figures"]
    assert changed["perplexity_growth"] == pytest.approx(growth, rel=1e-3)
    assert found["perplexity", "slm-int4", "host"]["figures"]["perplexity_growth"] == 0.0
    # The same int4 folder as base and new: decode steps paired in rounds, within the 25% gate.
    decode = found["generation", "slm-int4", "host"]["figures"]
    assert decode["paired"] is True and decode["rounds"] >= 6
    assert decode["ratio_high"] <= 1.25


def test_the_int4_model_on_an_emulated_raspberry_pi(
    pytester: pytest.Pytester, slm_models: Path, docker_client: object, arm64_binfmt: None
) -> None:
    example(pytester.path, slm_models, robustness=3)
    # A tenth of the text: perplexity windows cost ~0.5 s each under QEMU.
    valid = pytester.path / "data" / "valid.txt"
    valid.write_text("".join(valid.read_text().splitlines(keepends=True)[:36]))
    out = pytester.path / "out.json"
    # What can differ on the board: its kernels' perplexity, emulated timings, memory under its
    # RAM, robustness. Answers and token parity repeat the host's (minutes under QEMU).
    result = pytester.runpytest(
        "--device=rpi4",
        "-k",
        "slm-int4 and not answers and not token_parity",
        f"--harness-json={out}",
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(passed=6)
    found = results(out)
    generation = found["generation", "slm-int4", "rpi4"]
    assert generation["fidelity"] == "emulated"
    figures = generation["figures"]
    if "estimate_unavailable" in figures:
        unavailable(figures["estimate_unavailable"])
    # Gated on the timing model's estimate of the board (its band), not on emulated ms.
    checks = {c["gate"]: c for c in generation["verdict"]["checks"]}
    for gate in ("ttft_p90_ms_max", "decode_p90_ms_max", "tokens_per_s_min"):
        assert checks[gate]["passed"] is True, checks[gate]["message"]
        assert checks[gate]["figure"].startswith("estimated_")
        assert "(rpi4, estimated: cortex-a72" in checks[gate]["message"]
    assert figures["estimated_decode_ms"] < figures["decode_p50_ms"]  # QEMU is slower
    host_ppl = perplexity(
        slm_models / "models" / "slm-int4", valid.read_text(), TextModels(proc_status_kb)
    )
    rpi4_ppl = found["perplexity", "slm-int4", "rpi4"]["figures"]["perplexity"]
    assert rpi4_ppl == pytest.approx(host_ppl, rel=1e-3)  # other kernels: last digits only
    memory = found["memory", "slm-int4", "rpi4"]["figures"]
    assert "board_peak_mb" in memory and memory["emulated_peak_mb"] > memory["board_peak_mb"]


def test_decode_regression_on_an_emulated_board_pairs_emulated_runs(
    pytester: pytest.Pytester, slm_models: Path, docker_client: object, arm64_binfmt: None
) -> None:
    """Under --baseline on rpi4 the decode ratio comes from paired emulated runs (labelled
    emulated), never a missing figure: the same folder as base and new is not a regression."""
    root = pytester.path
    example(root, slm_models)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "base")
    out = root / "out.json"
    result = pytester.runpytest_subprocess(
        "--device=rpi4", "--baseline=HEAD", "-k", "generation and slm-int4",
        f"--harness-json={out}", "-p", "no:cacheprovider",
    )  # fmt: skip
    record = results(out)["generation", "slm-int4", "rpi4"]
    figures, checks = record["figures"], {c["gate"]: c for c in record["verdict"]["checks"]}
    # The path, not the statistics (tests/test_stats.py): 3 rounds of emulated timings give a
    # non-nominal interval, which need not hold 1.0 (seen: +0.7% to +37.1% for one folder).
    assert figures["paired"] is True
    assert figures["ratio_low"] <= figures["ratio"] <= figures["ratio_high"]
    decode = checks["decode_max_regression"]
    assert "(rpi4, emulated, paired n=" in decode["message"]
    assert decode["passed"] in (True, None), decode["message"]  # None: rounds ran out of budget
    assert record["verdict"]["status"] in ("PASS", "INCONCLUSIVE"), result.stdout.str()[-2000:]
    assert checks["decode_p90_ms_max"]["figure"] == "estimated_decode_ms"


def test_context_memory_compares_with_the_base_in_workers_of_their_own(
    pytester: pytest.Pytester, slm_models: Path
) -> None:
    root = pytester.path
    example(root, slm_models)
    config = (root / "harness.toml").read_text()
    gate = "memory_peak_mb_max = 300\n"
    (root / "harness.toml").write_text(config.replace(gate, gate + "memory_max_growth = 0.2\n"))
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "base")
    out = root / "out.json"
    result = pytester.runpytest_subprocess(
        "--baseline=HEAD", "-k", "memory and slm-int4", f"--harness-json={out}",
        "-p", "no:cacheprovider",
    )  # fmt: skip
    result.assert_outcomes(passed=1)
    figures = results(out)["memory", "slm-int4", "host"]["figures"]
    # The same folder as base and new: each alone in its worker, the shares agree closely.
    assert figures["baseline_model_share_mb"] > 0
    assert abs(figures["memory_growth"]) < 0.2
    assert figures["context_tokens"] == 128
