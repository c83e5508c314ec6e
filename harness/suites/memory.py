"""Memory: the worker's peak RSS (VmHWM) after loading the model and running it once, next to the
peak of the same worker before any model was loaded; the difference is the model's share.

Under emulation the worker's peak includes QEMU's own memory (its translated-code cache and
heap), which the board would not pay. There the gate reads `board_peak_mb`, an `estimated`
figure: the model's share measured under the emulator plus the empty worker's peak measured
natively on this host (the same Python, numpy and runtime, without an emulator). See
docs/memory.md.
"""

from __future__ import annotations

from typing import Any

from harness.runner import Pair, PairFailure
from harness.suites.base import Measurement

KB_PER_MB = 1024.0


def _formats(pair: Pair) -> tuple[str, ...]:
    from harness.runtimes import format_of

    return (format_of(pair.model.path),)


def measure(pair: Pair) -> Measurement:
    try:
        pair.worker()
    except PairFailure as failure:
        if not failure.oom:
            raise
        # Killed for memory: that is this suite's finding, a failing memory figure.
        limit = pair.profile.memory_mb
        return Measurement(
            {"failure": str(failure), "oom": True, "limit_mb": limit},
            pair.profile.fidelity,
        )
    assert pair.target is not None
    empty = pair.hello["empty_peak_kb"] / KB_PER_MB
    peak = pair.loaded["peak_kb"] / KB_PER_MB
    figures: dict[str, Any] = {
        "peak_mb": peak,
        "empty_peak_mb": empty,
        "model_share_mb": peak - empty,
        "rss_after_load_mb": pair.loaded["rss_kb"] / KB_PER_MB,
        "limit_mb": pair.profile.memory_mb,
    }
    if pair.target.fidelity == "emulated" and pair.pool is not None:
        native_empty = pair.pool.native_empty_peak_kb(_formats(pair)) / KB_PER_MB
        figures["native_empty_peak_mb"] = native_empty
        figures["emulated_peak_mb"] = peak
        figures["board_peak_mb"] = peak - empty + native_empty
        figures["gated_figure"] = (
            "board_peak_mb (estimated: model share under QEMU + native empty worker)"
        )
    if pair.base is not None:
        # The pair's worker holds both models: the base gets a worker of its own.
        base_empty, base_peak = pair.fresh_peak_kb(pair.base)
        figures["baseline_peak_mb"] = base_peak / KB_PER_MB
        figures["baseline_model_share_mb"] = (base_peak - base_empty) / KB_PER_MB
    elif "memory" in pair.stored:
        stored = pair.stored["memory"]["figures"]
        if "peak_mb" in stored:
            figures["baseline_peak_mb"] = stored["peak_mb"]
    if figures.get("baseline_peak_mb"):
        figures["memory_growth"] = peak / figures["baseline_peak_mb"] - 1.0
    return Measurement(figures, pair.target.fidelity)
