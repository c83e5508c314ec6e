"""Memory of a language model: the worker's peak RSS (VmHWM) after loading the model and running it
once, and after generating until the sequence holds `generate.context_tokens` tokens (the KV cache
grows with the context). The gate (memory_peak_mb_max) reads the peak at that context length.

As for other models (suites/memory.py): a worker killed for memory under the board's RAM is a
failing figure, and under emulation the gate reads `board_peak_mb`, the model's share measured
under QEMU plus the empty worker's peak measured natively (an estimate, labelled so).

Under --baseline the new and the base model are each filled to the same context, with the same
text, in a worker of their own, and memory_max_growth compares their shares (peak - the empty
worker's peak), as the memory suite does for other models.
"""

from __future__ import annotations

from typing import Any

from harness.backends.base import WorkerCrashed
from harness.config import ModelSpec
from harness.results import Flags, Measurement
from harness.runner import Pair, PairFailure, Worker

KB_PER_MB = 1024.0


def _oom(pair: Pair, message: str) -> Measurement:
    figures = {"limit_mb": pair.profile.memory_mb}
    return Measurement(figures, pair.profile.fidelity, flags=Flags(failure=message, oom=True))


def _fill(pair: Pair, worker: Worker) -> dict[str, Any]:
    """`fill_context` of `worker`'s model with the pair's text and lengths."""
    settings = pair.model.generate
    assert settings is not None and pair.model.text is not None
    return worker.request(
        "fill_context",
        text=pair.model.text.read_text(encoding="utf-8"),
        context_tokens=settings.context_tokens,
        new_tokens=settings.new_tokens,
    )


def _base_share_kb(pair: Pair, base: ModelSpec) -> tuple[int, int]:
    """(peak, model share) of the base model filled to the same context with the same text, in
    a worker of its own: the pair's worker holds both models, whose memory cannot be told apart
    inside one process."""
    worker = pair.other(base)
    try:
        worker.start()
        peak = int(_fill(pair, worker)["peak_kb"])
        return peak, peak - int(worker.hello["empty_peak_kb"])
    finally:
        worker.close()


def measure(pair: Pair) -> Measurement:
    settings = pair.model.generate
    assert settings is not None
    base = pair.baseline.base
    # Under --baseline the new model, too, gets a worker of its own (the pair's holds the base).
    worker = pair.other(pair.model) if base is not None else pair.worker
    try:
        return _measure(pair, worker, base)
    finally:
        if base is not None:
            worker.close()


def _measure(pair: Pair, worker: Worker, base: ModelSpec | None) -> Measurement:
    settings = pair.model.generate
    assert settings is not None
    try:
        worker.start()
    except PairFailure as failure:
        if not failure.oom:
            raise
        return _oom(pair, str(failure))
    assert worker.target is not None
    try:
        filled = _fill(pair, worker)
    except WorkerCrashed as crash:
        if "OOM-killed" not in str(crash):
            raise
        return _oom(pair, f"at a context of {settings.context_tokens} tokens: {crash}")
    empty = worker.hello["empty_peak_kb"] / KB_PER_MB
    peak = filled["peak_kb"] / KB_PER_MB
    figures: dict[str, Any] = {
        "peak_mb": peak,
        "load_peak_mb": worker.loaded["peak_kb"] / KB_PER_MB,
        "empty_peak_mb": empty,
        "model_share_mb": peak - empty,
        "context_tokens": filled["context_tokens"],
        "limit_mb": pair.profile.memory_mb,
    }
    if worker.target.fidelity == "emulated":
        native_empty = pair.shared.native_empty_peak_kb(("genai",)) / KB_PER_MB
        figures["native_empty_peak_mb"] = native_empty
        figures["emulated_peak_mb"] = peak
        figures["board_peak_mb"] = peak - empty + native_empty
        figures["gated_figure"] = (
            "board_peak_mb (estimated: model share under QEMU + native empty worker)"
        )
    if base is not None:
        base_peak, base_share = _base_share_kb(pair, base)
        figures["baseline_peak_mb"] = base_peak / KB_PER_MB
        figures["baseline_model_share_mb"] = base_share / KB_PER_MB
    else:
        stored = pair.baseline.stored_figures("memory")
        for figure in ("peak_mb", "model_share_mb"):
            if figure in stored:
                figures[f"baseline_{figure}"] = stored[figure]
    if figures.get("baseline_model_share_mb"):  # growth is the model's own share (gates.py)
        figures["memory_growth"] = (
            figures["model_share_mb"] / figures["baseline_model_share_mb"] - 1
        )
    return Measurement(figures, worker.target.fidelity)
