"""Instructions: instructions executed per inference, counted by a QEMU plugin between the
worker's markers around the timed loop (fidelity `counted`, deterministic), and device
milliseconds estimated from them with the profile's clock and cycles-per-instruction model
(fidelity `estimated`, the model stated). Each model is counted in a fresh worker: what a worker
did before the loop moves the counts, so base and new are never counted in the same one."""

from __future__ import annotations

from typing import Any

from harness.backends.base import BackendUnavailable
from harness.results import Measurement
from harness.runner import Pair, PairFailure
from harness.worker.feeds import DataError


def _count(pair: Pair, model: Any) -> Any:
    from harness.backends.qemu import count_instructions
    from harness.counting import CountingError

    if model.problems:
        pair.start()  # raises the model's file problem as the item's failure
    try:
        return count_instructions(
            pair.profile,
            model.path,
            model.dataset,
            samples=min(pair.plan.counting_samples, pair.config.latency.samples),
            warmup=pair.plan.counting_warmup,
            output=model.output,
            input_shapes={k: list(v) for k, v in model.input_shapes.items()},
            input_values=dict(model.input_values),
            timeout=pair.config.timeout_s,
        )
    except CountingError as exc:
        raise DataError(f"counting on {pair.profile.name}: {exc}") from exc
    except BackendUnavailable as exc:
        raise PairFailure(str(exc), skip=exc.skip) from None


def measure(pair: Pair) -> Measurement:
    from harness.counting import estimate_ms

    counted = _count(pair, pair.model)
    figures: dict[str, Any] = {
        "instructions_per_inference": counted.instructions_per_inference,
        "n": counted.samples,
        "qemu": counted.qemu_version,
        "cpu": counted.cpu,
        "arch": counted.arch,
    }
    if pair.profile.clock_mhz and pair.profile.cpi:
        estimate = estimate_ms(counted.instructions_per_inference, pair.profile)
        figures["estimated_ms"] = estimate.ms
        figures["estimate_model"] = estimate.model
    base = None
    if pair.baseline.base is not None:
        base = _count(pair, pair.baseline.base).instructions_per_inference
    elif "instructions" in pair.baseline.stored:
        base = pair.baseline.stored["instructions"]["figures"].get("instructions_per_inference")
    if base:
        figures["baseline_instructions_per_inference"] = base
        figures["instructions_ratio"] = counted.instructions_per_inference / base
    return Measurement(figures, "counted")
