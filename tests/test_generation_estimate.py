"""Generation latency of a language model on an emulated board, from the timing model: the
runtime marks the prefill and the decode steps as two regions, the timing plugin counts them
under QEMU (cortex-a72 for rpi4), and the gates decide ttft, decode and tokens/s on the CPU
model's error band.

Counting needs qemu-user, the timing plugin's header (scripts/setup-counting.sh) and the rpi4
device trees (`python -m harness.counting prepare --device rpi4`); missing pieces skip here and
fail under CI=true."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import unavailable
from harness.backends.base import BackendUnavailable
from harness.config import GateSpec
from harness.devices import load_profiles
from harness.gates import FAIL, INCONCLUSIVE, NO_GATE, PASS, decide
from harness.runtimes.genai import GenaiRuntime
from harness.timing import estimate_generation, load_cpu_model
from harness.timing.model import OUTSIDE_MIX_BAND
from harness.timing.run import count_generation

PROMPT, NEW = 32, 6


def test_the_prefill_and_the_decode_steps_are_two_regions(slm_models: Path) -> None:
    runtime = GenaiRuntime(str(slm_models / "models" / "slm-int4"), 1)
    prompt = runtime.encode((slm_models / "data" / "valid.txt").read_text())[:PROMPT]
    events: list[str] = []
    out = runtime.generate(
        prompt, NEW, False, (lambda: events.append("begin"), lambda: events.append("end"))
    )
    assert events == ["begin", "end", "begin", "end"]
    assert len(out.tokens) == NEW and len(out.step_ns) == NEW - 1
    assert runtime.generate(prompt, NEW, False).tokens == out.tokens  # marks change nothing


@pytest.mark.usefixtures("counting_plugin")  # QEMU: the "qemu" marker
def test_rpi4_counts_and_estimate(slm_models: Path, tmp_path: Path) -> None:
    if shutil.which("qemu-aarch64") is None:
        unavailable("qemu-user is not installed: run scripts/setup-counting.sh as root")
    rpi4 = load_profiles()["rpi4"]
    folder = slm_models / "models" / "slm-int4"
    text = (slm_models / "data" / "valid.txt").read_text()
    cpu = load_cpu_model("cortex-a72")
    try:
        counts = count_generation(
            rpi4, folder, text, PROMPT, NEW, cpu=cpu.qemu_cpu, l1d=cpu.l1d, l2=cpu.l2
        )
    except BackendUnavailable as exc:
        unavailable(f"timing counts on rpi4: {exc}")
        raise
    assert counts.decode.samples == NEW - 1 and counts.prefill.samples == 1
    per_step = counts.decode.total_instructions / counts.decode.samples
    # A prompt of 32 tokens through every layer costs more than one token with the KV cache.
    assert counts.prefill.total_instructions > 2 * per_step > 0
    estimate = estimate_generation(rpi4, folder, text, PROMPT, NEW)
    assert estimate.decode_steps == NEW - 1
    assert estimate.ttft.ms > estimate.decode.ms > 0
    # Generation was never measured on a Pi: cpus/cortex-a72.toml carries the x86 checks'
    # generation band over, with no generation mix, so the estimate takes the wider of it and
    # the out-of-mix band, and says both.
    carried = load_cpu_model("cortex-a72").for_generation().band_fraction
    assert estimate.decode.band_fraction == max(carried, OUTSIDE_MIX_BAND)
    assert estimate.decode.validated
    assert "carried over" in str(estimate.decode) and "cortex-a72" in str(estimate.decode)
    assert "records no instruction mix" in str(estimate.decode)
    assert estimate.tokens_per_s_low < estimate.tokens_per_s < estimate.tokens_per_s_high
    assert estimate.tokens_per_s == pytest.approx(1000.0 / estimate.decode.ms)
    again = estimate_generation(rpi4, folder, text, PROMPT, NEW)
    assert again.decode.cached and again.decode.ms == estimate.decode.ms


def estimated(ttft: float, decode: float, band: float = 0.25) -> dict[str, object]:
    """Figures as the generation suite writes them from an estimate (pure): the device's figure
    lies in [estimate / (1 + band), estimate / (1 - band)]."""
    tokens = 1000.0 / decode
    return {
        "decode_p90_ms": 400.0,  # the emulated wall clock beside the estimate
        "estimated_ttft_ms": ttft,
        "estimated_ttft_ms_low": ttft / (1 + band),
        "estimated_ttft_ms_high": ttft / (1 - band),
        "estimated_decode_ms": decode,
        "estimated_decode_ms_low": decode / (1 + band),
        "estimated_decode_ms_high": decode / (1 - band),
        "estimated_tokens_per_s": tokens,
        "estimated_tokens_per_s_low": 1000.0 * (1 - band) / decode,
        "estimated_tokens_per_s_high": 1000.0 * (1 + band) / decode,
        "estimate_model": "cortex-a72 timing model at 1500 MHz; for one intra-op thread",
    }


@pytest.mark.parametrize(
    ("gates", "decode", "status"),
    [
        (GateSpec(ttft_p90_ms_max=10.0, decode_p90_ms_max=2.0, tokens_per_s_min=500), 1.0, PASS),
        (GateSpec(decode_p90_ms_max=0.9), 1.3, FAIL),  # 1.3 ms / 1.25 = 1.04 > 0.9
        (GateSpec(decode_p90_ms_max=1.1), 1.0, INCONCLUSIVE),  # [0.8, 1.33] holds 1.1
        (GateSpec(ttft_p90_ms_max=4.0), 1.0, FAIL),  # ttft 6 ms / 1.25 = 4.8 > 4
        (GateSpec(tokens_per_s_min=900), 1.0, INCONCLUSIVE),  # [750, 1250] tokens/s
        (GateSpec(tokens_per_s_min=1400), 1.0, FAIL),
    ],
)
def test_the_gates_decide_on_the_estimate_band(gates: GateSpec, decode: float, status: str) -> None:
    verdict = decide("generation", estimated(6.0, decode), gates, "rpi4", "emulated")
    assert verdict.status == status, verdict.reasons
    for check in verdict.checks:
        assert check.figure.startswith("estimated_")
        assert "(board estimate)" in check.message
        assert "(rpi4, estimated: cortex-a72 timing model" in check.message


def test_without_counting_the_row_says_how_to_set_it_up() -> None:
    figures = {
        "decode_p90_ms": 400.0,
        "estimate_unavailable": "no timing model here (qemu-aarch64 is missing); `bash "
        "scripts/setup-counting.sh` as root sets it up",
    }
    verdict = decide("generation", figures, GateSpec(decode_p90_ms_max=2.0), "rpi4", "emulated")
    assert verdict.status == NO_GATE
    (check,) = verdict.checks
    assert check.passed is None and "scripts/setup-counting.sh" in check.message


def test_a_board_cpu_without_a_timing_model_is_named(tmp_path: Path) -> None:
    """The suite's estimate step on a board whose CPU has no timing model: the gates are not
    applied and the row names the CPU models that exist (the pair is a stub around it)."""
    from dataclasses import replace
    from types import SimpleNamespace

    from harness.config import ModelSpec
    from harness.language_config import GenerateSettings
    from harness.results import Measurement
    from harness.suites import generation

    text = tmp_path / "valid.txt"
    text.write_text("a b c\n")
    model = ModelSpec("lm", tmp_path, task="generate", text=text, generate=GenerateSettings())
    profile = replace(load_profiles()["rpi4"], cpu="cortex-x925", timing_model=None)
    pair = SimpleNamespace(model=model, profile=profile, config=SimpleNamespace(timeout_s=10.0))
    measured = generation._estimated(pair, Measurement({}, "emulated"))  # type: ignore[arg-type]
    why = measured.figures["estimate_unavailable"]
    assert "no timing model for rpi4" in why and "'cortex-x925'" in why and "cortex-a72" in why
    verdict = decide("generation", measured.figures, GateSpec(ttft_p90_ms_max=50.0), "rpi4",
                     "emulated")  # fmt: skip
    assert verdict.status == NO_GATE and why in verdict.checks[0].message


@pytest.mark.parametrize("threshold", [1e6, 1e-6])
def test_an_estimate_outside_its_conditions_never_passes_or_fails(threshold: float) -> None:
    """An estimate whose band does not hold (harness.timing: its instruction mix, threads or
    machine differ from those the band was measured under) carries no bounds: the latency and
    generation gates on it are INCONCLUSIVE however far the point lies from the threshold."""
    why = "not validated: instruction mix outside the calibration set's: scalar 62.0% (its 3 models: 17.8%-20.1%)"  # noqa: E501
    latency = {
        "p90_ms": 400.0,
        "estimated_ms": 2.0,
        "estimate_not_validated": why,
        "estimate_model": "cortex-a72 timing model at 1500 MHz; for one intra-op thread",
    }
    verdict = decide("latency", latency, GateSpec(latency_p90_ms_max=threshold), "rpi4", "emulated")
    assert verdict.status == INCONCLUSIVE, verdict.reasons
    (check,) = verdict.checks
    assert check.passed is None and check.figure == "estimated_ms"
    assert why in check.message and "undecided" in check.message
    figures = estimated(6.0, 1.0) | {"estimate_not_validated": why}
    for name in ("ttft", "decode", "tokens_per_s", "low", "high"):  # no bounds travel with it
        (
            figures.pop(f"estimated_{name}_ms_low", None),
            figures.pop(f"estimated_{name}_ms_high", None),
        )
    gates = GateSpec(ttft_p90_ms_max=threshold, decode_p90_ms_max=threshold,
                     tokens_per_s_min=1 / threshold)  # fmt: skip
    verdict = decide("generation", figures, gates, "rpi4", "emulated")
    assert verdict.status == INCONCLUSIVE, verdict.reasons
    assert all(c.passed is None and why in c.message for c in verdict.checks)


def test_the_latency_suite_passes_on_why_an_estimate_is_not_validated(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """board_estimate (the latency and instructions suites' figures) carries no bounds for an
    estimate outside its conditions, and says why; a validated one carries its bounds."""
    from types import SimpleNamespace

    import harness.timing
    from harness.config import ModelSpec
    from harness.suites.latency import board_estimate
    from harness.timing import TimingEstimate

    def fake(outside: tuple[str, ...]) -> TimingEstimate:
        source = "cortex-a72 timing model at 1500 MHz, 3 Pi figures"
        return TimingEstimate(2.0, 0.25, source, (), 1e6, True, "rpi4", "cortex-a72",
                              "cortex-a72", outside=outside)  # fmt: skip

    model = ModelSpec("m", tmp_path / "m.onnx")
    pair = SimpleNamespace(
        model=model,
        profile=load_profiles()["rpi4"],
        config=SimpleNamespace(source=tmp_path / "harness.toml", timeout_s=10.0),
    )
    why = ("instruction mix outside the calibration set's: scalar 62.0% (its 3 models: "
           "17.8%-20.1%)")  # fmt: skip
    monkeypatch.setattr(harness.timing, "estimate_latency", lambda *a, **k: fake((why,)))
    figures = board_estimate(pair)  # type: ignore[arg-type]
    assert figures["estimate_not_validated"] == f"not validated: {why}"
    assert "estimated_ms_low" not in figures and "estimated_ms_high" not in figures
    verdict = decide("latency", figures, GateSpec(latency_p90_ms_max=1000.0), "rpi4", "emulated")
    assert verdict.status == INCONCLUSIVE
    monkeypatch.setattr(harness.timing, "estimate_latency", lambda *a, **k: fake(()))
    figures = board_estimate(pair)  # type: ignore[arg-type]
    assert "estimate_not_validated" not in figures
    assert (figures["estimated_ms_low"], figures["estimated_ms_high"]) == (2.0 / 1.25, 2.0 / 0.75)
    verdict = decide("latency", figures, GateSpec(latency_p90_ms_max=1000.0), "rpi4", "emulated")
    assert verdict.status == PASS


@pytest.mark.parametrize(
    ("base_path", "outside", "status", "said"),
    [
        ("base", (), PASS, "decode +2.6% ≤ 25% (3.9 → 4 ms) (rpi4, estimated"),
        ("base", ("instruction mix outside",), INCONCLUSIVE, "the base's decode not validated"),
        ("uncounted", (), NO_GATE, "not applied: the base: no timing model here (no qemu"),
    ],
)
def test_an_emulated_decode_regression_is_decided_on_the_estimates_not_the_clock(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    base_path: str,
    outside: tuple[str, ...],
    status: str,
    said: str,
) -> None:
    """decode_max_regression on an emulated board, as the latency suite's regression there: the
    ratio of the timing model's decode-step estimates of new and base (counted, the same every
    run) decides; the emulated rounds' ratio (+60% [+20%, +100%] here, which would fail) stays a
    note; an unvalidated base estimate leaves it undecided, a base with no estimate (it could not
    be counted) leaves it not applied. The pair is a stub; the estimates are faked, the decision
    is real."""
    from types import SimpleNamespace

    import harness.timing
    from harness.baseline import BaselineContext
    from harness.config import ModelSpec
    from harness.language_config import GenerateSettings
    from harness.results import Flags, Measurement
    from harness.suites import generation
    from harness.timing import GenerationEstimate, TimingEstimate

    def fake(ms: float) -> GenerationEstimate:
        def one(ms: float) -> TimingEstimate:
            return TimingEstimate(ms, 0.72, "cortex-a72 timing model at 1500 MHz", (), 1e6, True,
                                  "rpi4", "cortex-a72", "cortex-a72", outside=outside)  # fmt: skip

        return GenerationEstimate(ttft=one(10 * ms), decode=one(ms), prompt_tokens=32,
                                  decode_steps=15)  # fmt: skip

    def estimate(profile: object, path: Path, *args: object, **kwargs: object) -> object:
        if path.name == "uncounted":
            raise BackendUnavailable("no qemu-aarch64 here")
        return fake(3.9)

    monkeypatch.setattr(harness.timing, "estimate_generation", estimate)
    text = tmp_path / "valid.txt"
    text.write_text("a b c\n")
    settings = GenerateSettings()
    model = ModelSpec("lm", tmp_path / "new", task="generate", text=text, generate=settings)
    base = ModelSpec("lm", tmp_path / base_path, task="generate", text=text, generate=settings)
    pair = SimpleNamespace(
        model=model,
        profile=load_profiles()["rpi4"],
        config=SimpleNamespace(timeout_s=10.0),
        baseline=BaselineContext(label="HEAD", base=base),
    )
    emulated = {"ratio": 1.6, "ratio_low": 1.2, "ratio_high": 2.0, "paired": True, "rounds": 8}
    measured = Measurement(
        estimated(40.0, 4.0) | emulated,
        "emulated",
        flags=Flags(baseline="HEAD", inconclusive="decode latency straddles the 25% gate"),
    )
    measured = generation._board_ratio(pair, measured)  # type: ignore[arg-type]
    assert measured.figures["emulated_ratio"] == 1.6
    verdict = decide("generation", measured.figures, GateSpec(decode_max_regression=0.25),
                     "rpi4", "emulated", measured.flags)  # fmt: skip
    assert verdict.status == status, verdict.reasons
    (check,) = verdict.checks
    assert said in check.message
    if status == PASS:
        assert "note: emulated wall clock +60.0% [+20.0%, +100.0%], not a gate" in check.message


def test_a_board_makes_no_emulated_runs_where_the_estimate_decides(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """On an emulated board with an absolute gate and no baseline, the generation item asks the
    board for no timed run (a 135M decoder's run costs minutes under QEMU): the estimate is all
    the gates read, as in the latency suite. The pair is a stub that fails any request."""
    from types import SimpleNamespace

    import harness.timing
    from harness.baseline import BaselineContext
    from harness.config import ModelSpec
    from harness.language_config import GenerateSettings
    from harness.suites import generation
    from harness.timing import GenerationEstimate, TimingEstimate

    def one(ms: float) -> TimingEstimate:
        return TimingEstimate(ms, 0.72, "cortex-a72 timing model at 1500 MHz", (), 1e6, True,
                              "rpi4", "cortex-a72", "cortex-a72")  # fmt: skip

    estimate = GenerationEstimate(ttft=one(60.0), decode=one(4.0), prompt_tokens=32,
                                  decode_steps=15)  # fmt: skip
    monkeypatch.setattr(harness.timing, "estimate_generation", lambda *a, **k: estimate)
    text = tmp_path / "valid.txt"
    text.write_text("a b c\n")
    model = ModelSpec("lm", tmp_path / "lm", task="generate", text=text,
                      generate=GenerateSettings(),
                      gates=GateSpec(tokens_per_s_min=20))  # fmt: skip

    def no_request(*args: object, **kwargs: object) -> None:
        raise AssertionError("a timed run on the board")

    pair = SimpleNamespace(
        model=model,
        profile=load_profiles()["rpi4"],
        config=SimpleNamespace(timeout_s=10.0),
        baseline=BaselineContext(),
        target=SimpleNamespace(fidelity="emulated"),
        start=lambda: None,
        request=no_request,
    )
    measured = generation.measure(pair)  # type: ignore[arg-type]
    assert measured.figures["emulated_runs"] == 0
    assert measured.figures["estimated_decode_ms"] == 4.0
    verdict = decide("generation", measured.figures, model.gates, "rpi4", "emulated")
    assert verdict.status == PASS, verdict.reasons  # 250 tokens/s [70, 430] >= 20
