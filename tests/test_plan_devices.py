"""The plan on a real emulated board: when the dataset costs more than the budget, accuracy is
scored on the host and the rpi4 container answers a seeded sample, whose agreement decides
device_top1_min on its interval. A tiny budget makes the digits model 'expensive' here, so the
path real-scale models take runs in seconds."""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_device_matrix import copy_example

from conftest import unavailable

pytest_plugins = ["pytester"]


def test_an_expensive_dataset_is_scored_on_the_host_and_sampled_on_the_board(
    pytester: pytest.Pytester,
    docker_client: Any,
    arm64_binfmt: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What the board is asked depends on what it answered before: none here, whatever other
    # tests of the session answered.
    monkeypatch.setenv("HARNESS_ANSWERS_CACHE", str(pytester.path / "answers"))
    copy_example("digits", pytester.path)
    config = pytester.path / "harness.toml"
    config.write_text(config.read_text().replace(
        'devices = ["host", "x86-64", "rpi4"]',
        'devices = ["rpi4"]\n[plan]\nbudget_s = 0.005\nmax_budget_s = 0.005\n'
        "agreement_samples = 16",
    ))  # fmt: skip
    out = pytester.path / "results.json"
    result = pytester.runpytest(
        f"--harness-json={out}", "-k", "accuracy and (onnx or int8)", "-p", "no:cacheprovider"
    )
    accuracy = {r["model"]: r for r in json.loads(out.read_text())["results"]}
    onnx = accuracy["digits-onnx"]
    figures = onnx["figures"]
    assert figures["accuracy_on"] == "host (natively, all 450 samples)"
    assert figures["accuracy"] == pytest.approx(0.9733, abs=0.002)
    assert figures["agreement_n"] == 8  # 0.005 s affords none: the floor
    assert figures["host_agreement"] == 1.0 and figures["host_agreement_low"] < 1.0
    assert len(onnx["raw"]["agreement_indices"]) == 8
    assert onnx["plan"]["accuracy_on"] == "host" and onnx["fidelity"] == "emulated"
    assert onnx["verdict"]["status"] == "PASS"
    # digits-int8 gates device_top1_min = 0.99: 8 of 8 agree, [63%, 100%] cannot decide it.
    int8 = accuracy["digits-int8"]
    assert int8["verdict"]["status"] == "INCONCLUSIVE"
    assert "about 368 samples decide it" in int8["verdict"]["reasons"][0]
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*harness plan*",
            "digits-int8 on rpi4: ~* per inference under QEMU; accuracy on the "
            "host, agreement on 8 of 450 samples*",
        ]  # fmt: skip
    )


@pytest.mark.parametrize(("gate", "status"), [("5.0", "PASS"), ("0.00001", "FAIL")])
def test_an_emulated_latency_gate_reads_the_timing_model_where_it_holds(
    pytester: pytest.Pytester, docker_client: Any, arm64_binfmt: None, gate: str, status: str
) -> None:
    """The rpi4 latency gate reads the timing model's estimate, never the emulated clock; the
    digits MLP's instruction mix lies outside the MobileNets' that the cortex-a72 band was
    checked on, so the estimate carries the band measured for estimates outside the mix
    (harness.timing.model.OUTSIDE_MIX_BAND, ±67%): ~0.1 ms passes 5 ms and fails 0.00001 ms."""
    copy_example("digits", pytester.path)
    config = pytester.path / "harness.toml"
    text = config.read_text().replace('devices = ["host", "x86-64", "rpi4"]', 'devices = ["rpi4"]')
    config.write_text(text.replace("latency_p90_ms_max = 5.0", f"latency_p90_ms_max = {gate}"))
    out = pytester.path / "results.json"
    pytester.runpytest(f"--harness-json={out}", "-k", "latency and digits-onnx")
    (latency,) = json.loads(out.read_text())["results"]
    assert latency["verdict"]["status"] == status, latency["verdict"]
    (check,) = [c for c in latency["verdict"]["checks"] if c["gate"] == "latency_p90_ms_max"]
    assert check["figure"] == "estimated_ms" and check["passed"] is (status == "PASS")
    assert "latency p90 (board estimate)" in check["message"]
    assert "(rpi4, estimated: cortex-a72 timing model" in check["message"]
    assert "instruction mix outside the calibration set's" in check["message"]
    assert "band widened to ±67%" in check["message"]
    figures = latency["figures"]
    assert figures["estimated_ms_high"] == pytest.approx(figures["estimated_ms"] / (1 - 0.67))
    assert latency["fidelity"] == "emulated"  # the wall clock beside it stays emulated


def test_the_next_emulated_worker_starts_while_the_items_before_it_run(
    docker_client: Any, arm64_binfmt: None
) -> None:
    """Told the order of the pairs, the pool starts and greets the next emulated pair's worker
    in the background (one at a time) when an earlier pair is taken; its item then finds it
    greeted and loads the model (the first inference, which prices the plan, runs in the item);
    a released pair is not started again."""
    from pathlib import Path

    from harness.config import load_config
    from harness.devices import load_profiles
    from harness.pairs import PairPool

    config = load_config(Path(__file__).parent.parent / "examples" / "digits" / "harness.toml")
    profiles = load_profiles()
    onnx, floating = config.models[0], config.models[1]
    pool = PairPool(config)
    pool.order = [(onnx, profiles["host"]), (onnx, profiles["rpi4"]), (floating, profiles["rpi4"])]
    try:
        pool.get(onnx, profiles["host"])
        pool._ahead.result(timeout=120)
        board = pool.pairs[(onnx.name, "rpi4")].worker
        greeted = board._greeted
        assert greeted is not None and board.hello["machine"] == "aarch64"
        assert board.client is None and not board.loaded  # no model yet
        assert (floating.name, "rpi4") not in pool.pairs  # one at a time
        assert pool.get(onnx, profiles["rpi4"]).start() is greeted  # the same worker
        assert board.loaded["samples"] == 450 and board._greeted is None
        pool.release(onnx.name, "rpi4")
        pool.get(floating, profiles["rpi4"])  # the last in order: nothing after it
        pool.get(onnx, profiles["host"])
        assert pool.pairs[(onnx.name, "rpi4")].worker.client is None  # released: not again
    finally:
        pool.close()


@pytest.mark.usefixtures("counting_plugin")  # QEMU: the "qemu" marker
def test_no_emulated_timed_runs_where_the_timing_model_decides(
    pytester: pytest.Pytester, docker_client: Any, arm64_binfmt: None
) -> None:
    """Without a baseline the p90 gate on a board reads the timing model, and nothing reads the
    emulated wall clock: no timed runs under QEMU (issue 22: 17 runs, ~60 s at real scale)."""
    copy_example("digits", pytester.path)
    config = pytester.path / "harness.toml"
    text = config.read_text().replace('devices = ["host", "x86-64", "rpi4"]', 'devices = ["rpi4"]')
    config.write_text(text)
    out = pytester.path / "results.json"
    pytester.runpytest(f"--harness-json={out}", "-k", "latency and digits-onnx")
    (latency,) = json.loads(out.read_text())["results"]
    figures = latency["figures"]
    if "estimate_unavailable" in figures:
        unavailable(figures["estimate_unavailable"])
    assert latency["verdict"]["status"] == "PASS", latency["verdict"]
    assert figures["emulated_runs"] == 0 and "p90_ms" not in figures, figures
    assert not (latency.get("raw") or {}).get("samples_ns")
