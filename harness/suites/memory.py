"""Memory: the worker's peak RSS (VmHWM) after loading the model and running it once, next to the
peak of the same worker before any model was loaded; the difference is the model's share. The
model is measured in a worker of its own without the dataset (one generated input of the
dataset's shapes): the gate is about the model on the board, not the harness's test data.

Under emulation the worker's peak includes QEMU's own memory (its translated-code cache and
heap), which the board would not pay. There the gate reads `board_peak_mb`, an `estimated`
figure: the model's share measured under the emulator plus the empty worker's peak measured
natively on this host (the same Python, numpy and runtime, without an emulator). See
docs/memory.md.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from harness.config import ModelSpec
from harness.pairs import Pair, PairFailure
from harness.results import Flags, Measurement

KB_PER_MB = 1024.0


def _formats(pair: Pair) -> tuple[str, ...]:
    from harness.runtimes import format_of

    return (format_of(pair.model.path),)


def _alone(pair: Pair, model: ModelSpec) -> ModelSpec:
    """`model` without the dataset, fed one generated input of the shapes the dataset gave: the
    gate is about the model on the board, not the harness's copy of a test set (an image
    dataset of 500 samples is 300 MB)."""
    if model.dataset is None:
        return model
    shapes = {k: tuple(v) for k, v in pair.loaded["input_shapes"].items()}
    return replace(model, dataset=None, input_shapes=shapes | dict(model.input_shapes))


def measure(pair: Pair) -> Measurement:
    limit = pair.profile.memory_mb
    try:
        pair.start()
        empty_kb, peak_kb, rss_kb = pair.fresh_peak_kb(_alone(pair, pair.model))
    except PairFailure as failure:
        if not failure.oom:
            raise
        # Killed for memory: that is this suite's finding, a failing memory figure.
        return Measurement(
            {"limit_mb": limit},
            pair.profile.fidelity,
            flags=Flags(failure=str(failure), oom=True),
        )
    assert pair.target is not None
    empty, peak = empty_kb / KB_PER_MB, peak_kb / KB_PER_MB
    figures: dict[str, Any] = {
        "peak_mb": peak,
        "empty_peak_mb": empty,
        "model_share_mb": peak - empty,
        "rss_after_load_mb": rss_kb / KB_PER_MB,
        "limit_mb": limit,
        "inputs": "one generated input" if pair.model.dataset else "generated",
    }
    if pair.target.fidelity == "emulated":
        native_empty = pair.shared.native_empty_peak_kb(_formats(pair)) / KB_PER_MB
        figures["native_empty_peak_mb"] = native_empty
        figures["emulated_peak_mb"] = peak
        figures["board_peak_mb"] = peak - empty + native_empty
        figures["gated_figure"] = (
            "board_peak_mb (estimated: model share under QEMU + native empty worker)"
        )
    if pair.baseline.base is not None:
        # The pair's worker holds both models: the base gets a worker of its own.
        base_empty, base_peak, _ = pair.fresh_peak_kb(_alone(pair, pair.baseline.base))
        figures["baseline_peak_mb"] = base_peak / KB_PER_MB
        figures["baseline_model_share_mb"] = (base_peak - base_empty) / KB_PER_MB
    else:
        stored = pair.baseline.stored_figures("memory")
        for figure in ("peak_mb", "model_share_mb"):
            if figure in stored:
                figures[f"baseline_{figure}"] = stored[figure]
    # Growth is the model's own share: the worker's fixed cost would dilute it (a share that
    # grows 30% is a few percent of a whole process's peak).
    if figures.get("baseline_model_share_mb"):
        figures["memory_growth"] = (
            figures["model_share_mb"] / figures["baseline_model_share_mb"] - 1.0
        )
    return Measurement(figures, pair.target.fidelity)
