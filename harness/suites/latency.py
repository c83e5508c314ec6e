"""Latency: warm-up, then timed runs inside the worker, in chunks, until the gate's question is
decided at the configured confidence, enough samples are in, or the time budget ends.

Alone, the p90 gate is decided on a distribution-free confidence interval of the p90. With a
baseline measured in the same worker, base and new run interleaved in rounds (ABBA order) and
the gate is decided on the paired ratio of per-round medians, so machine drift cancels. Raw
samples come back for the reports and for recomputing every statistic.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from harness import stats
from harness.gates import ABSOLUTE_TIME_FIDELITIES
from harness.pairs import Pair
from harness.results import Flags, Measurement

CHUNK_SECONDS = 0.5  # timed runs per worker request, in seconds (unpaired)
ROUND_SECONDS = 0.05  # per model and round (paired): many short rounds track drift best
MIN_PER_ROUND = 5
# Timed loops (worker requests) per session at least, when the sample cap binds: a stored
# baseline is compared on per-chunk medians (stats.unpaired_ratio). With 10 a side its false
# alarms reach ~6% in the worst case it is built for (tests/test_stats.py), with 20 ~4%.
MIN_CHUNKS = 20
# With a regression gate, timed loops start at least this far apart: chunks spread over a
# second show the machine's drift between them, which is what tells a stored baseline's session
# from this one (benchmarks/bench_stored_baseline.py: back-to-back chunks hide it).
CHUNK_SPACING_S = 0.05
# A stored baseline is another process: each process lands at its own level (memory layout,
# which core, the machine's load that minute) and keeps it, which no chunk within a session
# shows. The sd of a session's log level: 0.01-0.18 for the real-model corpus and examples/
# digits in benchmarks/bench_stored_baseline.py on this project's shared 2-core machine, median
# 0.10 (docs/measurement.md). Without it an identical model read as "better: -8.0% [-13.4%,
# -3.9%]"; with it a stored baseline tells changes beyond about +-30% (a git ref: far smaller).
STORED_SESSION_SD = 0.10


def _describe(ms: np.ndarray, prefix: str = "") -> dict[str, Any]:
    summary = stats.summary(ms)
    return {
        f"{prefix}n": summary.n,
        f"{prefix}p50_ms": summary.p50,
        f"{prefix}p90_ms": summary.p90,
        f"{prefix}p99_ms": summary.p99,
        f"{prefix}mean_ms": summary.mean,
        f"{prefix}min_ms": summary.min,
    }


def _single(pair: Pair, spread: bool = False) -> Measurement:
    """Timed loops until the p90 gate is decided or `samples` are in. With `spread` (a
    regression gate: this session is compared with a stored one, or may be stored and compared
    later) no early stop and loops spaced CHUNK_SPACING_S apart: the comparison reads chunks."""
    settings = pair.config.latency
    assert pair.target is not None
    threshold = pair.model.gates_for(pair.profile.name).latency_p90_ms_max
    gated = threshold is not None and pair.target.fidelity in ABSOLUTE_TIME_FIDELITIES
    started = time.monotonic()
    samples: list[int] = pair.request("bench", samples=1, warmup=settings.warmup)["samples_ns"]
    chunk_sizes = [len(samples)]  # where each timed loop starts: chunks for stored comparisons
    chunk_started = time.monotonic()
    decision = "undecided"
    confidence = stats.per_look_confidence(settings.confidence)
    first = max(settings.min_samples, stats.min_samples_for_percentile(90, confidence))
    looks = stats.look_schedule(first)
    largest = max(MIN_PER_ROUND, math.ceil(settings.samples / MIN_CHUNKS))
    while len(samples) < settings.samples:
        elapsed = time.monotonic() - started
        if elapsed >= settings.time_budget_s:
            break
        per_run = max(float(np.median(samples)) * 1e-9, 1e-6)
        left = min(settings.time_budget_s - elapsed, CHUNK_SECONDS)
        chunk = int(max(1, min(settings.samples - len(samples), left / per_run, largest)))
        if spread:
            time.sleep(max(0.0, chunk_started + CHUNK_SPACING_S - time.monotonic()))
        chunk_started = time.monotonic()
        timed = pair.request("bench", samples=chunk)["samples_ns"]
        samples += timed
        chunk_sizes.append(len(timed))
        if gated and not spread and looks and len(samples) >= looks[0]:
            assert threshold is not None
            while looks and len(samples) >= looks[0]:
                looks.pop(0)
            ms = np.asarray(samples, dtype=np.float64) / 1e6
            interval = stats.percentile_ci(ms, 90, confidence)
            decision = stats.decide_threshold(interval, threshold)
            if decision != "undecided":
                break  # decided: no need to spend the rest of the budget
    ms = np.asarray(samples, dtype=np.float64) / 1e6
    figures = _describe(ms)
    flags = Flags()
    interval = stats.percentile_ci(ms, 90, confidence)
    if gated and decision == "undecided" and len(samples) >= first:
        # The final look, when the sample cap or the budget ends between scheduled ones; never
        # below `first`, where one side of the interval is only the sample extreme.
        assert threshold is not None
        decision = stats.decide_threshold(interval, threshold)
    figures.update(
        p90_low_ms=interval.low,
        p90_high_ms=interval.high,
        threads=pair.profile.threads,
        interval_confidence=confidence,
    )
    gates = pair.model.gates_for(pair.profile.name)
    if len(samples) < settings.min_samples and (gated or gates.latency_max_regression is not None):
        flags["inconclusive"] = (
            f"latency: only n={len(samples)} samples within the {settings.time_budget_s:g} s "
            f"budget; {settings.min_samples} needed (raise latency.time_budget_s)"
        )
    elif gated and decision == "undecided" and len(samples) < first:
        flags["inconclusive"] = (
            f"latency p90 {figures['p90_ms']:.3f} ms from only n={len(samples)} samples within "
            f"the {settings.time_budget_s:g} s budget; a {confidence:.2%} interval of the p90 "
            f"needs at least {first} (raise latency.time_budget_s)"
        )
    elif gated and decision == "undecided":
        assert threshold is not None
        margin = max(abs(figures["p90_ms"] - threshold), 1e-9)
        needed = stats.samples_needed_for_percentile(ms, 90, margin, confidence)
        flags["inconclusive"] = (
            f"latency p90 {figures['p90_ms']:.3f} ms, {confidence:.2%} interval "
            f"[{interval.low:.3f}, {interval.high:.3f}] ms contains the {threshold:g} ms gate "
            f"after n={len(samples)} samples; about {needed} needed (raise latency.samples and "
            "latency.time_budget_s)"
        )
    raw = {"samples_ns": samples, "chunk_sizes": chunk_sizes}
    return Measurement(figures, pair.target.fidelity, raw, flags)


def _paired(pair: Pair, decide: bool = True) -> Measurement:
    """Base and new in the same worker, interleaved in rounds. Without `decide` the rounds are
    a note (an emulated board's wall clock): as many as the interval needs, no more, and no
    verdict on them."""
    settings = pair.config.latency
    assert pair.target is not None
    max_regression = pair.model.gates_for(pair.profile.name).latency_max_regression
    if not decide:
        max_regression = None
    pair.request("bench", samples=1, warmup=settings.warmup)
    pair.request("bench", base=True, samples=1, warmup=settings.warmup)
    probe = pair.request("bench", samples=MIN_PER_ROUND)["samples_ns"]
    per_round = max(MIN_PER_ROUND, int(ROUND_SECONDS / max(np.median(probe) * 1e-9, 1e-7)))
    confidence = stats.per_look_confidence(settings.confidence)
    minimum = max(stats.min_rounds_for_ratio(confidence), 6)
    looks = stats.look_schedule(minimum)
    # With a regression gate, rounds go on until it is decided or the budget ends; without one,
    # `samples` per model are enough for the report.
    max_rounds = (
        math.inf
        if max_regression is not None
        else max(minimum, math.ceil(settings.samples / per_round))
    )
    new: list[int] = []
    base: list[int] = []
    new_medians: list[float] = []
    base_medians: list[float] = []
    started = time.monotonic()
    decision = "undecided"
    estimate = None
    while len(new_medians) < max_rounds:
        if time.monotonic() - started >= settings.time_budget_s and len(new_medians) >= 2:
            break
        order = (False, True) if len(new_medians) % 2 else (True, False)  # ABBA: drift cancels
        for is_base in order:
            chunk = pair.request("bench", base=is_base, samples=per_round)["samples_ns"]
            (base if is_base else new).extend(chunk)
            (base_medians if is_base else new_medians).append(float(np.median(chunk)))
        if looks and len(new_medians) >= looks[0]:
            looks.pop(0)
            estimate = stats.paired_ratio(base_medians, new_medians, confidence)
            if max_regression is not None:
                decision = stats.decide_ratio(estimate, max_regression)
                if decision != "undecided":
                    break
    new_ms = np.asarray(new, dtype=np.float64) / 1e6
    base_ms = np.asarray(base, dtype=np.float64) / 1e6
    figures = _describe(new_ms) | _describe(base_ms, "baseline_")
    figures.update(
        rounds=len(new_medians), per_round=per_round, threads=pair.profile.threads, paired=True
    )
    flags = Flags()
    if len(new_medians) >= minimum and (estimate is None or estimate.n != len(new_medians)):
        # The final look, when the budget ends between scheduled ones; never from fewer rounds
        # than the interval needs at this confidence (it would be only the data's range).
        estimate = stats.paired_ratio(base_medians, new_medians, confidence)
        if max_regression is not None:
            decision = stats.decide_ratio(estimate, max_regression)
    if estimate is not None:
        figures.update(
            ratio=estimate.ratio,
            ratio_low=estimate.low,
            ratio_high=estimate.high,
            interval_confidence=confidence,
        )
    if max_regression is not None and decision == "undecided":
        if estimate is None:
            flags["inconclusive"] = (
                f"latency: only {len(new_medians)} paired rounds within the "
                f"{settings.time_budget_s:g} s budget; a {confidence:.2%} interval needs at "
                f"least {minimum} (raise latency.time_budget_s)"
            )
        else:
            logs = np.log(np.asarray(new_medians) / np.asarray(base_medians))
            margin = max(abs(math.log1p(max_regression) - math.log(estimate.ratio)), 1e-6)
            needed = stats.samples_needed_for_ratio(logs, margin, confidence)
            flags["inconclusive"] = (
                f"latency {estimate.ratio - 1:+.1%} [{estimate.low - 1:+.1%}, "
                f"{estimate.high - 1:+.1%}] straddles the {max_regression:.0%} gate after "
                f"{len(new_medians)} paired rounds; about {needed} rounds needed (raise "
                "latency.samples and latency.time_budget_s)"
            )
    raw = {
        "samples_ns": new,
        "baseline_samples_ns": base,
        "round_medians_ns": new_medians,
        "baseline_round_medians_ns": base_medians,
    }
    return Measurement(figures, pair.target.fidelity, raw, flags)


def session_chunks(raw: dict[str, Any]) -> np.ndarray:
    """Per-chunk medians (ns) of a session's raw figures. Records written before chunk sizes
    were kept are cut into up to MIN_CHUNKS consecutive blocks of at least MIN_PER_ROUND samples
    (samples are in time order)."""
    samples = raw["samples_ns"]
    blocks = max(1, min(MIN_CHUNKS, len(samples) // MIN_PER_ROUND))
    sizes = raw.get("chunk_sizes") or [
        len(block) for block in np.array_split(np.arange(len(samples)), blocks)
    ]
    medians = stats.chunk_medians(samples, sizes, min_size=MIN_PER_ROUND)
    return np.maximum(medians, 1.0)  # a timer tick below 1 ns is no time at all


def _stored(pair: Pair, measurement: Measurement) -> Measurement:
    """Compare with a stored baseline (another session: drift not cancelled) on per-chunk
    medians, with an interval as wide as the chunks of both sessions spread."""
    record = pair.baseline.stored.get("latency")
    if record is None:
        return measurement
    base = record["raw"].get("samples_ns") or []
    if len(base) < 2 or len(measurement.raw["samples_ns"]) < 2:
        return measurement
    settings = pair.config.latency
    base_chunks, new_chunks = session_chunks(record["raw"]), session_chunks(measurement.raw)
    base_ms = np.asarray(base, dtype=np.float64) / 1e6
    figures = measurement.figures | _describe(base_ms, "baseline_")
    flags = Flags(**measurement.flags)
    figures.update(paired=False, chunks=len(new_chunks), baseline_chunks=len(base_chunks))
    max_regression = pair.model.gates_for(pair.profile.name).latency_max_regression
    why = ""
    if min(len(base_chunks), len(new_chunks)) == 0:
        why = f"latency: no timed chunk of {MIN_PER_ROUND} or more runs in one of the sessions"
    else:
        estimate = stats.unpaired_ratio(
            base_chunks, new_chunks, settings.confidence, STORED_SESSION_SD
        )
        if estimate.nominal:
            figures.update(ratio=estimate.ratio, ratio_low=estimate.low, ratio_high=estimate.high)
            if max_regression is not None and stats.decide_ratio(estimate, max_regression) == (
                "undecided"
            ):
                why = (
                    f"latency {estimate.ratio - 1:+.1%} [{estimate.low - 1:+.1%}, "
                    f"{estimate.high - 1:+.1%}] straddles the {max_regression:.0%} gate (stored "
                    "baseline, unpaired: the interval is as wide as the drift between chunks; "
                    "compare with --baseline=<git ref> for a paired measurement)"
                )
        else:
            why = (
                f"latency: {len(base_chunks)} and {len(new_chunks)} timed chunks in the two "
                f"sessions are too few for an unpaired {settings.confidence:.0%} interval "
                "(raise latency.samples)"
            )
    if max_regression is not None and why:
        previous = flags.get("inconclusive")
        flags["inconclusive"] = f"{previous}; {why}" if previous else why
    raw = measurement.raw | {"baseline_samples_ns": base}
    return Measurement(figures, measurement.fidelity, raw, flags)


def board_estimate(pair: Pair, base: bool = False) -> dict[str, Any]:
    """The timing model's estimate of one inference on the pair's (emulated) board (of the
    pair's base model with `base`), with its band, as record figures; or `estimate_unavailable`
    where counting is not set up here. A board CPU with no timing model raises ValueError
    naming the known ones."""
    from harness.backends.base import BackendUnavailable
    from harness.timing import estimate_latency, not_set_up
    from harness.timing.run import TimingRunError

    model = pair.baseline.base if base and pair.baseline.base is not None else pair.model
    try:
        estimate = estimate_latency(
            pair.profile,
            model.path,
            model.dataset,
            input_shapes={k: list(v) for k, v in model.input_shapes.items()} or None,
            input_values=dict(model.input_values) or None,
            output=model.output,
            config_file=str(pair.config.source),
            timeout=pair.config.timeout_s,
        )
    except (BackendUnavailable, TimingRunError) as exc:
        return {"estimate_unavailable": not_set_up(exc, pair.profile.name)}
    figures: dict[str, Any] = {
        "estimated_ms": estimate.ms,
        "estimate_model": f"{estimate.model_description}; for one intra-op thread",
        "estimate_band": estimate.band_fraction,
        "estimate_instructions": estimate.instructions_per_inference,
    }
    if estimate.validated:
        figures["estimated_ms_low"] = estimate.low_ms
        figures["estimated_ms_high"] = estimate.high_ms
    else:  # outside the conditions its band was measured under: the gates cannot decide on it
        figures["estimate_not_validated"] = estimate.not_validated
    return figures


def _estimated(pair: Pair, measurement: Measurement) -> Measurement:
    """On an emulated board, an absolute latency gate reads the timing model's estimate of the
    board (harness.timing: counted under QEMU, one intra-op thread), with its measured error
    band; the emulated wall clock stays beside it, labelled emulated."""
    figures = dict(measurement.figures) | board_estimate(pair)
    return Measurement(figures, measurement.fidelity, measurement.raw, measurement.flags)


# The emulated wall clock's paired ratio, kept beside the deterministic one as a note.
EMULATED_NOTE = ("ratio", "ratio_low", "ratio_high", "interval_confidence")


def _board_ratio(pair: Pair, measurement: Measurement) -> Measurement:
    """On an emulated board, the regression against the base is decided from what is
    deterministic there: the timing model's estimates of base and new (instructions counted
    under QEMU, priced by the board CPU's model; the same counts give the same ratio on every
    run, so no interval). QEMU's wall clock measures the runner's load as much as the model:
    its paired ratio stays in the record as `emulated_ratio`, a note that decides nothing.
    Where counting is not set up, the gate is not applied and says how to set it up."""
    figures = {key: value for key, value in measurement.figures.items() if key not in EMULATED_NOTE}
    for key in EMULATED_NOTE:
        if key in measurement.figures:
            figures[f"emulated_{key}"] = measurement.figures[key]
    flags = Flags(**measurement.flags)
    flags.pop("inconclusive", None)
    new = board_estimate(pair)
    figures.update(new)
    if "estimate_unavailable" not in new:
        base = board_estimate(pair, base=True)
        if "estimate_unavailable" in base:
            figures["estimate_unavailable"] = base["estimate_unavailable"]
        else:
            if base.get("estimate_not_validated"):  # the ratio holds only where both do
                why = f"the base's {base['estimate_not_validated']}"
                mine = figures.get("estimate_not_validated")
                figures["estimate_not_validated"] = f"{mine}; {why}" if mine else why
            ratio = new["estimated_ms"] / base["estimated_ms"]
            figures.update(
                ratio=ratio,
                ratio_low=ratio,
                ratio_high=ratio,
                ratio_basis="estimated",
                baseline_estimated_ms=base["estimated_ms"],
                baseline_estimate_instructions=base["estimate_instructions"],
            )
    return Measurement(figures, measurement.fidelity, measurement.raw, flags)


def identical_to_base(pair: Pair) -> bool:
    """The model is its base byte for byte, fed the same inputs: no latency can differ."""
    from harness.identity import content_sha256, model_sha256

    base = pair.baseline.base
    if base is None or model_sha256(pair.model.path) != model_sha256(base.path):
        return False
    data = [content_sha256(d) if d else None for d in (pair.model.dataset, base.dataset)]
    if data[0] != data[1]:
        return False
    same = ("input_shapes", "input_values", "output")
    return all(getattr(pair.model, name) == getattr(base, name) for name in same)


def _identical(pair: Pair) -> Measurement:
    """The regression against an identical base is nothing, by identity (`ratio_basis`
    "identical"): a paired measurement there measures only the machine's noise, which on a
    loaded runner (parallel jobs on two cores) can leave even +0% undecided. The p90 gate is
    measured as without a base (on a board: the timing model)."""
    measurement = None
    if pair.profile.emulated:
        estimate = board_estimate(pair)
        if "estimate_unavailable" not in estimate:
            assert pair.target is not None
            estimate["emulated_runs"] = 0
            measurement = Measurement(estimate, pair.target.fidelity, {}, Flags())
        else:
            measurement = _estimated(pair, _single(pair))
    else:
        measurement = _single(pair)
    figures = dict(measurement.figures) | {
        "ratio": 1.0,
        "ratio_low": 1.0,
        "ratio_high": 1.0,
        "ratio_basis": "identical",
    }
    return Measurement(figures, measurement.fidelity, measurement.raw, measurement.flags)


def measure(pair: Pair) -> Measurement:
    pair.start()
    pair = pair.planned()  # an expensive (emulated) device runs the samples its plan affords
    gates = pair.model.gates_for(pair.profile.name)
    if gates.latency_max_regression is not None and identical_to_base(pair):
        return _identical(pair)
    if (
        pair.profile.emulated
        and pair.baseline.base is not None
        and gates.latency_max_regression is not None
    ):
        return _board_ratio(pair, _paired(pair, decide=False))
    gated = gates.latency_p90_ms_max is not None
    if pair.profile.emulated and gated and not pair.baseline.stored:
        # The gate reads the timing model and nothing compares this session's wall clock: no
        # emulated timed runs (seconds each at real scale) unless the estimate is missing.
        estimate = board_estimate(pair)
        if "estimate_unavailable" not in estimate:
            assert pair.target is not None
            estimate["emulated_runs"] = 0
            return Measurement(estimate, pair.target.fidelity, {}, Flags())
    measured = _measured(pair)
    return _estimated(pair, measured) if gated and pair.profile.emulated else measured


def _measured(pair: Pair) -> Measurement:
    if pair.baseline.base is not None:
        return _paired(pair)
    regression_gate = pair.model.gates_for(pair.profile.name).latency_max_regression
    measured = _single(pair, spread=regression_gate is not None)
    return _stored(pair, measured) if pair.baseline.stored else measured
