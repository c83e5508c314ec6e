"""Generation latency: time to first token for a prompt of `generate.prompt_tokens` tokens, then
the time of each of the next `generate.new_tokens - 1` decode steps (KV cache), timed inside the
worker. Figures: ttft p50/p90, decode p50/p90 per token, tokens per second (1 / decode p50), and
as llama-bench reports them, prefill tokens per second (prompt tokens / ttft p50) beside decode
tokens per second.

Two kinds of run, in chunks of about CHUNK_SECONDS: full runs (prefill + new_tokens - 1 decode
steps) give decode steps and a time to first token; prefill-only runs (one token) give a time to
first token at a fraction of the cost, so that a model whose full run takes half a second (a 135M
decoder) still gathers the runs a p90 needs within the budget. Runs go on until every set gate
(ttft_p90_ms_max, decode_p90_ms_max, tokens_per_s_min) is decided by its distribution-free
interval at the configured confidence (looks at doubling counts, Bonferroni-spent, as the latency
suite), and at least `latency.min_samples` times to first token and decode steps are in, or
`generate.time_budget_s` ends (INCONCLUSIVE; 30 s by default: a p90 needs ~30 prefills).
With --baseline, base and new runs alternate in ABBA rounds in one worker and the per-round median
decode step gives a paired ratio with its interval (decode_max_regression).

On emulated boards only `generate.emulated_runs` runs are made (a few decode steps; minutes under
QEMU at 135M parameters) and their figures are labelled emulated. Where an absolute gate is set,
the gates read the timing model's estimate of the board instead
(harness.timing.estimate_generation: one greedy run counted under QEMU with the board CPU's
timing plugin, prefill and decode steps as two marked regions), decided on the CPU model's error
band: PASS when the whole band meets the gate, FAIL when none of it does, INCONCLUSIVE between;
then, without --baseline, no emulated run is made (as in the latency suite: nothing would read
them). Under --baseline the paired rounds run there too, within `generate.time_budget_s`,
labelled emulated; decode_max_regression is decided there, as the latency suite's regression, by
the ratio of the two models' estimated decode steps, and the emulated rounds' ratio is a note
(_board_ratio).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harness import language_scores, stats
from harness.gates import ABSOLUTE_TIME_FIDELITIES
from harness.pairs import Pair
from harness.results import Flags, Measurement

if TYPE_CHECKING:
    from harness.timing import GenerationEstimate

CHUNK_SECONDS = 0.5  # timed runs per worker request
EMULATED_NOTE = ("ratio", "ratio_low", "ratio_high")  # kept as emulated_* beside the estimate


def _bench(
    pair: Pair, runs: int, base: bool = False, prefill_only: bool = False
) -> tuple[list[int], list[int]]:
    settings = pair.model.generate
    assert settings is not None and pair.model.text is not None
    reply = pair.request(
        "decode_bench",
        base=base,
        text=pair.model.text.read_text(encoding="utf-8"),
        prompt_tokens=settings.prompt_tokens,
        new_tokens=1 if prefill_only else settings.new_tokens,
        repeats=runs,
    )
    steps = [ns for run in reply["step_ns"] for ns in run]
    return list(reply["first_token_ns"]), steps


def _figures(
    first_ns: list[int], step_ns: list[int], confidence: float, prompt_tokens: int
) -> dict[str, Any]:
    first = np.asarray(first_ns, dtype=np.float64) / 1e6
    steps = np.asarray(step_ns, dtype=np.float64) / 1e6
    figures: dict[str, Any] = {"runs": len(first), "n": len(steps), "prompt_tokens": prompt_tokens}
    for name, ms in (("ttft", first), ("decode", steps)):
        if ms.size == 0:
            continue
        summary = stats.summary(ms)
        figures.update({f"{name}_p50_ms": summary.p50, f"{name}_p90_ms": summary.p90})
        figures[f"{name}_mean_ms"] = summary.mean
        if ms.size >= 2:
            interval = stats.percentile_ci(ms, 90, confidence)
            figures.update(
                {f"{name}_p90_low_ms": interval.low, f"{name}_p90_high_ms": interval.high}
            )
    if first.size:  # llama-bench's pp: prompt tokens processed per second
        figures["prefill_tokens_per_s"] = prompt_tokens / (figures["ttft_p50_ms"] / 1000.0)
    if steps.size:
        figures["tokens_per_s"] = language_scores.tokens_per_second(figures["decode_p50_ms"])
        if steps.size >= 2:
            median = stats.percentile_ci(steps, 50, confidence)
            figures["tokens_per_s_low"] = language_scores.tokens_per_second(median.high)
            figures["tokens_per_s_high"] = language_scores.tokens_per_second(median.low)
    return figures


def _undecided(pair: Pair, first_ns: list[int], step_ns: list[int], confidence: float) -> list[str]:
    """The set absolute gates whose interval still contains their threshold."""
    gates = pair.model.gates_for(pair.profile.name)
    first = np.asarray(first_ns, dtype=np.float64) / 1e6
    steps = np.asarray(step_ns, dtype=np.float64) / 1e6
    checks = (
        ("ttft_p90_ms_max", first, 90, gates.ttft_p90_ms_max),
        ("decode_p90_ms_max", steps, 90, gates.decode_p90_ms_max),
        (
            "tokens_per_s_min",
            steps,
            50,
            None if not gates.tokens_per_s_min else 1000.0 / gates.tokens_per_s_min,
        ),
    )
    open_gates = []
    for gate, ms, q, threshold in checks:
        if threshold is None:
            continue
        if ms.size < 2:
            open_gates.append(gate)
            continue
        interval = stats.percentile_ci(ms, q, confidence)
        if stats.decide_threshold(interval, threshold) == "undecided":
            open_gates.append(gate)
    return open_gates


def _single(pair: Pair, emulated: bool) -> Measurement:
    assert pair.target is not None and pair.model.generate is not None
    settings = pair.config.latency
    confidence = stats.per_look_confidence(settings.confidence)
    prompt_tokens = pair.model.generate.prompt_tokens
    _bench(pair, 1)  # warm-up: first-run allocations are not a token's latency
    if emulated:
        few_first, few_steps = _bench(pair, pair.model.generate.emulated_runs)
        figures = _figures(few_first, few_steps, confidence, prompt_tokens)
        figures["interval_confidence"] = confidence
        raw = {"ttft_ns": few_first, "step_ns": few_steps}
        return Measurement(figures, pair.target.fidelity, raw)
    budget = pair.model.generate.time_budget_s
    gated = bool(_undecided(pair, [], [], confidence))
    wanted = max(settings.min_samples, stats.min_samples_for_percentile(90, confidence))
    looks = stats.look_schedule(wanted)
    first: list[int] = []
    steps: list[int] = []
    per_run = {True: 0.0, False: 0.0}  # wall seconds of one run of each kind, request included
    started = time.monotonic()
    while True:
        elapsed = time.monotonic() - started
        if elapsed >= budget or len(first) >= settings.samples:
            break
        open_gates = _undecided(pair, first, steps, confidence)
        decode_open = any(g != "ttft_p90_ms_max" for g in open_gates)
        # Full runs while decode steps are short or a decode gate is open; else prefill only.
        prefill_only = len(steps) >= wanted and not decode_open
        left = min(budget - elapsed, CHUNK_SECONDS)
        cost = per_run[prefill_only]
        runs = int(max(1, min(settings.samples - len(first), left / cost))) if cost else 1
        requested = time.monotonic()
        more_first, more_steps = _bench(pair, runs, prefill_only=prefill_only)
        per_run[prefill_only] = (time.monotonic() - requested) / runs
        first += more_first
        steps += more_steps
        if looks and len(first) >= looks[0]:
            while looks and len(first) >= looks[0]:
                looks.pop(0)
            if len(steps) >= wanted and not _undecided(pair, first, steps, confidence):
                break  # every set gate decided (or, without gates, enough runs for the report)
    figures = _figures(first, steps, confidence, prompt_tokens)
    figures["interval_confidence"] = confidence
    open_gates = _undecided(pair, first, steps, confidence)
    flags = Flags()
    if gated and (len(first) < settings.min_samples or len(steps) < settings.min_samples):
        flags["inconclusive"] = (
            f"generation: only {len(first)} times to first token and {len(steps)} decode steps "
            f"within the {budget:g} s budget; {settings.min_samples} of each needed (raise "
            "[models.generate] time_budget_s)"
        )
    elif open_gates:
        flags["inconclusive"] = (
            f"generation: {', '.join(open_gates)} undecided after {len(first)} runs "
            f"({len(steps)} decode steps): the interval still holds the threshold (raise "
            "latency.samples and [models.generate] time_budget_s)"
        )
    return Measurement(figures, pair.target.fidelity, {"ttft_ns": first, "step_ns": steps}, flags)


def _paired(pair: Pair, measurement: Measurement) -> Measurement:
    """Base and new alternate (ABBA) in one worker; per-round median decode steps are paired."""
    settings = pair.config.latency
    confidence = stats.per_look_confidence(settings.confidence)
    max_regression = pair.model.gates_for(pair.profile.name).decode_max_regression
    _bench(pair, 1, base=True)
    minimum = max(stats.min_rounds_for_ratio(confidence), 6)
    looks = stats.look_schedule(minimum)
    new_medians: list[float] = []
    base_medians: list[float] = []
    started = time.monotonic()
    estimate = None
    assert pair.model.generate is not None
    budget = pair.model.generate.time_budget_s
    while time.monotonic() - started < budget or len(new_medians) < 2:
        order = (False, True) if len(new_medians) % 2 else (True, False)
        for is_base in order:
            _, steps = _bench(pair, 1, base=is_base)
            (base_medians if is_base else new_medians).append(float(np.median(steps)))
        if looks and len(new_medians) >= looks[0]:
            looks.pop(0)
            estimate = stats.paired_ratio(base_medians, new_medians, confidence)
            if max_regression is None or stats.decide_ratio(estimate, max_regression) != (
                "undecided"
            ):
                break
    estimate = stats.paired_ratio(base_medians, new_medians, confidence)
    figures = measurement.figures | {
        "ratio": estimate.ratio,
        "ratio_low": estimate.low,
        "ratio_high": estimate.high,
        "rounds": len(new_medians),
        "paired": True,
        "baseline_decode_p50_ms": float(np.median(base_medians)) / 1e6,
    }
    flags = Flags(**measurement.flags)
    if max_regression is not None and stats.decide_ratio(estimate, max_regression) == "undecided":
        flags["inconclusive"] = (
            f"decode latency {estimate.ratio - 1:+.1%} [{estimate.low - 1:+.1%}, "
            f"{estimate.high - 1:+.1%}] straddles the {max_regression:.0%} gate after "
            f"{len(new_medians)} paired rounds (raise [models.generate] time_budget_s)"
        )
    raw = measurement.raw | {
        "round_medians_ns": new_medians,
        "baseline_round_medians_ns": base_medians,
    }
    return Measurement(figures, measurement.fidelity, raw, flags)


def _estimate(pair: Pair, path: Path) -> GenerationEstimate | str:
    """The timing model's estimate of the model at `path` (the pair's model or its base) on the
    board, for the pair's text and lengths; or why there is none."""
    from harness.backends.base import BackendUnavailable
    from harness.timing import estimate_generation, not_set_up
    from harness.timing.run import TimingRunError

    settings = pair.model.generate
    assert settings is not None and pair.model.text is not None
    if settings.new_tokens < 2:
        return (
            f"new_tokens = {settings.new_tokens}: no decode step to count; set "
            "[models.generate] new_tokens >= 2"
        )
    try:
        return estimate_generation(
            pair.profile,
            path,
            pair.model.text.read_text(encoding="utf-8"),
            settings.prompt_tokens,
            settings.new_tokens,
            timeout=pair.config.timeout_s,
        )
    except (BackendUnavailable, TimingRunError) as exc:
        return not_set_up(exc, pair.profile.name)
    except ValueError as exc:  # the board's CPU has no timing model (harness/timing/cpus)
        return f"no timing model for {pair.profile.name}: {exc}"


def _estimated(
    pair: Pair, measurement: Measurement, estimate: GenerationEstimate | str | None = None
) -> Measurement:
    """The board's time to first token and decode step from the timing model, with its band
    (figures `estimated_*`, which the gates read under emulation); the emulated wall clock, where
    it was measured, stays beside them, labelled emulated."""
    if estimate is None:
        estimate = _estimate(pair, pair.model.path)
    if isinstance(estimate, str):
        figures = measurement.figures | {"estimate_unavailable": estimate}
        return Measurement(figures, measurement.fidelity, measurement.raw, measurement.flags)
    figures = dict(measurement.figures)
    ttft, decode = estimate.ttft, estimate.decode
    figures |= {
        "estimated_ttft_ms": ttft.ms,
        "estimated_decode_ms": decode.ms,
        "estimated_tokens_per_s": estimate.tokens_per_s,
        "estimate_model": f"{decode.model_description}; for one intra-op thread, "
        f"{estimate.decode_steps} counted decode steps",
        "estimate_band": decode.band_fraction,
        "estimate_instructions_prefill": ttft.instructions_per_inference,
        "estimate_instructions_per_step": decode.instructions_per_inference,
    }
    if not (ttft.validated and decode.validated):  # the gates cannot decide on it
        figures["estimate_not_validated"] = "; ".join(
            f"{what} {e.not_validated}"
            for what, e in (("prefill", ttft), ("decode", decode))
            if e.not_validated
        )
    else:
        figures |= {
            "estimated_ttft_ms_low": ttft.low_ms,
            "estimated_ttft_ms_high": ttft.high_ms,
            "estimated_decode_ms_low": decode.low_ms,
            "estimated_decode_ms_high": decode.high_ms,
            "estimated_tokens_per_s_low": estimate.tokens_per_s_low,
            "estimated_tokens_per_s_high": estimate.tokens_per_s_high,
        }
    return Measurement(figures, measurement.fidelity, measurement.raw, measurement.flags)


def _board_ratio(pair: Pair, measurement: Measurement) -> Measurement:
    """On an emulated board decode_max_regression is decided from what is deterministic there,
    as the latency suite's is: the timing model's estimates of the base's and the new model's
    decode step (counted under QEMU, the same every run, so no interval). QEMU's wall clock
    measures the runner's load as much as the model: the paired rounds' ratio stays in the
    record as `emulated_ratio`, a note. Without an estimate of both the gate is not applied and
    says why; where either estimate is not validated the ratio is undecided."""
    assert pair.baseline.base is not None
    figures = {k: v for k, v in measurement.figures.items() if k not in EMULATED_NOTE}
    figures |= {f"emulated_{k}": measurement.figures[k] for k in EMULATED_NOTE}
    flags = Flags(**measurement.flags)
    flags.pop("inconclusive", None)  # the emulated rounds' straddle decides nothing here
    if "estimate_unavailable" not in figures:
        base = _estimate(pair, pair.baseline.base.path)
        if isinstance(base, str):
            figures["estimate_unavailable"] = f"the base: {base}"
        else:
            if base.decode.not_validated:  # the ratio holds only where both estimates do
                why = f"the base's decode {base.decode.not_validated}"
                mine = figures.get("estimate_not_validated")
                figures["estimate_not_validated"] = f"{mine}; {why}" if mine else why
            ratio = figures["estimated_decode_ms"] / base.decode.ms
            figures |= {
                "ratio": ratio,
                "ratio_low": ratio,
                "ratio_high": ratio,
                "ratio_basis": "estimated",
                "baseline_estimated_decode_ms": base.decode.ms,
            }
    return Measurement(figures, measurement.fidelity, measurement.raw, flags)


def _absolute_gates(pair: Pair) -> bool:
    gates = pair.model.gates_for(pair.profile.name)
    return any(
        value is not None
        for value in (gates.ttft_p90_ms_max, gates.decode_p90_ms_max, gates.tokens_per_s_min)
    )


def measure(pair: Pair) -> Measurement:
    pair.start()
    assert pair.target is not None
    emulated = pair.target.fidelity not in ABSOLUTE_TIME_FIDELITIES
    board = emulated and pair.profile.emulated
    regression = (
        pair.baseline.base is not None
        and pair.model.gates_for(pair.profile.name).decode_max_regression is not None
    )
    estimate = None
    if board and (_absolute_gates(pair) or regression):
        estimate = _estimate(pair, pair.model.path)
        if not isinstance(estimate, str) and pair.baseline.base is None:
            # The gates read the estimate and nothing compares this session's emulated clock:
            # no emulated timed runs (minutes at 135M under QEMU), as in the latency suite.
            nothing = Measurement({"emulated_runs": 0}, pair.target.fidelity)
            return _estimated(pair, nothing, estimate)
    measured = _single(pair, emulated)
    if estimate is not None:
        measured = _estimated(pair, measured, estimate)
    if pair.baseline.base is None:
        return measured
    measured = _paired(pair, measured)  # on a board: emulated rounds, labelled emulated
    return _board_ratio(pair, measured) if board and regression else measured
