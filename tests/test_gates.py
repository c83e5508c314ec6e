"""gates.decide: pure decisions from thresholds and figures."""

from __future__ import annotations

from harness.config import GateSpec
from harness.gates import FAIL, INCONCLUSIVE, NO_BASELINE, NO_GATE, PASS, decide
from harness.results import ERROR, Flags


def test_latency_p90_failure_message() -> None:
    verdict = decide(
        "latency", {"p90_ms": 6.2, "n": 500}, GateSpec(latency_p90_ms_max=5.0), "host", "measured"
    )
    assert verdict.status == FAIL
    assert verdict.reasons == ("latency p90 6.200 ms > 5.000 ms (host, measured, n=500)",)


def test_emulated_milliseconds_never_meet_an_absolute_gate() -> None:
    verdict = decide(
        "latency", {"p90_ms": 600.0, "n": 40}, GateSpec(latency_p90_ms_max=5.0), "rpi4", "emulated"
    )
    assert verdict.status == NO_GATE
    (check,) = verdict.checks
    assert check.passed is None
    assert "not applied: emulated figures are not device milliseconds" in check.message


def test_estimated_milliseconds_do() -> None:
    verdict = decide(
        "latency", {"p90_ms": 6.0}, GateSpec(latency_p90_ms_max=5.0), "rpi4", "estimated"
    )
    assert verdict.status == FAIL


def test_accuracy_min_and_mae() -> None:
    gates = GateSpec(accuracy_min=0.95)
    assert (
        decide(
            "accuracy", {"accuracy": 0.97, "n": 10, "nonfinite": 0}, gates, "host", "measured"
        ).status
        == PASS
    )
    verdict = decide(
        "accuracy", {"accuracy": 0.90, "n": 10, "nonfinite": 0}, gates, "host", "measured"
    )
    assert verdict.reasons == ("accuracy 0.9000 < 0.9500 (host, measured, n=10)",)
    assert (
        decide(
            "accuracy", {"mae": 0.2, "nonfinite": 0}, GateSpec(mae_max=0.1), "h", "measured"
        ).status
        == FAIL
    )


def test_memory_under_emulation_reads_the_board_estimate() -> None:
    figures = {"peak_mb": 160.0, "board_peak_mb": 70.0}
    verdict = decide("memory", figures, GateSpec(memory_peak_mb_max=100), "rpi4", "emulated")
    assert verdict.status == PASS
    assert verdict.checks[0].figure == "board_peak_mb"
    assert "(board estimate) 70.0 MB ≤ 100.0 MB (rpi4, estimated)" in verdict.checks[0].message
    native = decide("memory", figures, GateSpec(memory_peak_mb_max=100), "host", "measured")
    assert native.status == FAIL  # natively the real peak is what counts


def test_a_missing_figure_fails_rather_than_passes() -> None:
    verdict = decide("size", {}, GateSpec(size_kb_max=10), "host", "measured")
    assert verdict.status == FAIL
    assert "no figure to compare" in verdict.reasons[0]


def test_oom_failure_figure_fails_the_memory_gate() -> None:
    flags = Flags(failure="OOM-killed at 512 MB (rpi-zero-2w)", oom=True)
    verdict = decide("memory", {}, GateSpec(), "rpi-zero-2w", "emulated", flags)
    assert verdict.status == FAIL
    assert verdict.reasons[0] == "OOM-killed at 512 MB (rpi-zero-2w)"


def test_latency_ratio_pass_fail_and_undecided() -> None:
    gates = GateSpec(latency_max_regression=0.05)
    base = {"paired": True, "rounds": 40}
    slow = decide(
        "latency",
        base | {"ratio": 1.079, "ratio_low": 1.051, "ratio_high": 1.106},
        gates,
        "host",
        "measured",
    )
    assert slow.status == FAIL
    assert slow.reasons == ("latency +7.9% [+5.1%, +10.6%] > 5% (host, measured, paired n=40)",)
    same = decide(
        "latency",
        base | {"ratio": 1.0, "ratio_low": 0.98, "ratio_high": 1.02},
        gates,
        "host",
        "emulated",
    )
    assert same.status == PASS  # relative gates apply to emulated figures
    unsure = decide(
        "latency",
        base | {"ratio": 1.04, "ratio_low": 1.0, "ratio_high": 1.08},
        gates,
        "host",
        "measured",
        Flags(inconclusive="needs more rounds"),
    )
    assert unsure.status == INCONCLUSIVE


def test_accuracy_drop_and_memory_growth() -> None:
    figures = {
        "accuracy": 0.95,
        "baseline_accuracy": 0.97,
        "accuracy_drop": 0.02,
        "n": 100,
        "nonfinite": 0,
    }
    verdict = decide("accuracy", figures, GateSpec(accuracy_max_drop=0.01), "host", "measured")
    assert verdict.reasons == (
        "accuracy drop 0.0200 > 0.0100 (0.9700 → 0.9500) (host, measured, n=100)",
    )
    memory = {"model_share_mb": 5.5, "baseline_model_share_mb": 5.0, "memory_growth": 0.1}
    assert decide("memory", memory, GateSpec(memory_max_growth=0.2), "h", "measured").status == PASS
    assert (
        decide("memory", memory, GateSpec(memory_max_growth=0.05), "h", "measured").status == FAIL
    )


def test_relative_gate_without_a_base_is_reported_never_passed() -> None:
    verdict = decide(
        "latency", {"p90_ms": 1.0}, GateSpec(latency_max_regression=0.05), "host", "measured"
    )
    assert verdict.status == NO_GATE and verdict.checks[0].passed is None
    assert "no --baseline given" in verdict.checks[0].message
    missing = decide(
        "latency",
        {},
        GateSpec(latency_max_regression=0.05),
        "host",
        "measured",
        Flags(baseline="HEAD~1", baseline_missing="x.onnx does not exist at HEAD~1"),
    )
    assert missing.status == NO_BASELINE


def test_a_baseline_in_use_that_gives_no_figure_is_an_error_not_a_pass() -> None:
    gates = GateSpec(accuracy_max_drop=0.01, latency_max_regression=0.05, memory_max_growth=0.1)
    flags = Flags(baseline="base.json", baseline_problem="its accuracy record failed: OOM")
    for suite, figures in (
        ("accuracy", {"accuracy": 0.99, "nonfinite": 0}),
        ("latency", {}),
        ("memory", {}),
    ):
        verdict = decide(suite, figures, gates, "host", "measured", flags)
        assert verdict.status == ERROR, suite
        assert "against the baseline base.json: its accuracy record failed" in verdict.reasons[0]
    # Too few samples to compare is inconclusive, not an error.
    unsure = decide("latency", {}, gates, "host", "measured", Flags(flags, inconclusive="n=1"))
    assert unsure.status == INCONCLUSIVE
