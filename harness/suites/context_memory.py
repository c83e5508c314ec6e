"""Memory of a language model: the worker's peak RSS (VmHWM) after loading the model and running it
once, and after generating until the sequence holds `generate.context_tokens` tokens (the KV cache
grows with the context). The gate (memory_peak_mb_max) reads the peak at that context length.

As for other models (suites/memory.py): a worker killed for memory under the board's RAM is a
failing figure, and under emulation the gate reads `board_peak_mb`, the model's share measured
under QEMU plus the empty worker's peak measured natively (an estimate, labelled so).
"""

from __future__ import annotations

from typing import Any

from harness.backends.base import WorkerCrashed
from harness.results import Flags, Measurement
from harness.runner import Pair, PairFailure

KB_PER_MB = 1024.0


def _oom(pair: Pair, message: str) -> Measurement:
    figures = {"limit_mb": pair.profile.memory_mb}
    return Measurement(figures, pair.profile.fidelity, flags=Flags(failure=message, oom=True))


def measure(pair: Pair) -> Measurement:
    settings = pair.model.generate
    assert settings is not None
    try:
        pair.start()
    except PairFailure as failure:
        if not failure.oom:
            raise
        return _oom(pair, str(failure))
    assert pair.target is not None and pair.model.text is not None
    try:
        filled = pair.request(
            "fill_context",
            text=pair.model.text.read_text(encoding="utf-8"),
            context_tokens=settings.context_tokens,
            new_tokens=settings.new_tokens,
        )
    except WorkerCrashed as crash:
        if "OOM-killed" not in str(crash):
            raise
        return _oom(pair, f"at a context of {settings.context_tokens} tokens: {crash}")
    empty = pair.hello["empty_peak_kb"] / KB_PER_MB
    peak = filled["peak_kb"] / KB_PER_MB
    figures: dict[str, Any] = {
        "peak_mb": peak,
        "load_peak_mb": pair.loaded["peak_kb"] / KB_PER_MB,
        "empty_peak_mb": empty,
        "model_share_mb": peak - empty,
        "context_tokens": filled["context_tokens"],
        "limit_mb": pair.profile.memory_mb,
    }
    if pair.target.fidelity == "emulated":
        native_empty = pair.shared.native_empty_peak_kb(("genai",)) / KB_PER_MB
        figures["native_empty_peak_mb"] = native_empty
        figures["emulated_peak_mb"] = peak
        figures["board_peak_mb"] = peak - empty + native_empty
        figures["gated_figure"] = (
            "board_peak_mb (estimated: model share under QEMU + native empty worker)"
        )
    stored = pair.baseline.stored_figures("memory")
    for figure in ("peak_mb", "model_share_mb"):
        if figure in stored:
            figures[f"baseline_{figure}"] = stored[figure]
    if figures.get("baseline_model_share_mb"):  # growth is the model's own share (gates.py)
        figures["memory_growth"] = (
            figures["model_share_mb"] / figures["baseline_model_share_mb"] - 1
        )
    return Measurement(figures, pair.target.fidelity)
