"""Instructions: instructions executed per inference, counted by a QEMU plugin between the
worker's markers around the timed loop (fidelity `counted`, deterministic). On an emulated board
the timing model's estimate of its milliseconds stands beside the count, with its error band
(harness.timing; the same cached estimate the latency item's gate reads). Each model is counted
in a fresh worker: what a worker did before the loop moves the counts, so base and new are never
counted in the same one.

How many inferences to count is sized from a first counted inference in the counting worker
itself (its instructions, priced at QEMU_COUNTING_RATE), so this item never starts the device's
worker, and a model counts the same number of inferences in every session."""

from __future__ import annotations

from typing import Any

from harness.backends.base import BackendUnavailable
from harness.emulation_plan import make_plan
from harness.pairs import Pair, PairFailure
from harness.results import Measurement
from harness.suites.latency import board_estimate
from harness.worker.feeds import DataError

# Guest instructions per second that qemu-aarch64 7.2 runs with the counting plugin, to price a
# counted inference: 47 M/s (MobileNetV3-Small fp32) to 117 M/s (its int8 twin) measured on this
# 2-core VM; the slower end, so that the count stays within the plan's budget.
QEMU_COUNTING_RATE = 50e6


def _count(pair: Pair, model: Any, like: Any = None) -> Any:
    """`model`'s count; with `like` (a count already taken), as many samples and warm-ups (after
    the same probe, so that both workers made the same requests)."""
    from harness.backends.qemu import count_instructions
    from harness.counting import CountingError

    if model.problems:
        pair.start()  # raises the model's file problem as the item's failure

    def size(probe: Any) -> tuple[int, int]:
        """(samples, warmup) within the plan's counting budget, for an inference of as many
        instructions as the probe counted."""
        if like is not None:
            return like.samples, like.warmup
        seconds = probe.instructions_per_inference / QEMU_COUNTING_RATE
        plan = make_plan(pair.profile.name, True, seconds, 0, pair.config)
        return min(plan.counting_samples, pair.config.latency.samples), plan.counting_warmup

    try:
        return count_instructions(
            pair.profile,
            model.path,
            model.dataset,
            samples=size,
            output=model.output,
            input_shapes={k: list(v) for k, v in model.input_shapes.items()},
            input_values=dict(model.input_values),
            timeout=pair.config.timeout_s,
        )
    except CountingError as exc:
        raise DataError(f"counting on {pair.profile.name}: {exc}") from exc
    except BackendUnavailable as exc:
        raise PairFailure(str(exc), skip=exc.skip) from None


def _estimate(pair: Pair) -> dict[str, Any]:
    """The timing model's estimate for the board (emulated devices), or why there is none."""
    try:
        return board_estimate(pair)
    except ValueError as exc:  # a board CPU without a timing model: the count still stands
        return {"estimate_unavailable": f"no timing model estimate here ({exc})"}


def measure(pair: Pair) -> Measurement:
    counted = _count(pair, pair.model)
    figures: dict[str, Any] = {
        "instructions_per_inference": counted.instructions_per_inference,
        "n": counted.samples,
        "qemu": counted.qemu_version,
        "cpu": counted.cpu,
        "arch": counted.arch,
    }
    if pair.profile.emulated:
        figures |= _estimate(pair)
    base = None
    if pair.baseline.base is not None:
        base = _count(pair, pair.baseline.base, counted).instructions_per_inference
    elif "instructions" in pair.baseline.stored:
        base = pair.baseline.stored["instructions"]["figures"].get("instructions_per_inference")
    if base:
        figures["baseline_instructions_per_inference"] = base
        figures["instructions_ratio"] = counted.instructions_per_inference / base
    return Measurement(figures, "counted")
