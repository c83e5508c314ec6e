"""Memory of a language model, measured for what it claims: a fresh worker of its own loads the
model (`load_peak_mb`: VmHWM after loading and generating one token), then generates until the
sequence holds `generate.context_tokens` tokens (`peak_mb`, the gated figure: the KV cache at
that length). Nothing else ran in that process, so the figure is the model at its context, not
the lifetime peak of the pair's worker after scoring a text (a window's logits over the whole
vocabulary: +45-78% at SmolLM2-135M scale). llama.cpp allocates its KV cache for the whole
context at load (`TextOptions.context`), so there the load peak already holds it.

As for other models (suites/memory.py): a worker killed for memory under the board's RAM is a
failing figure naming the context length, and under emulation the gate reads `board_peak_mb`, the
model's share measured under QEMU plus the empty worker's peak measured natively (an estimate,
labelled so). A worker that lives on with its gated peak above the board's RAM fails too, with
the figure: the container's limit does not charge pages of a mmapped model file that the host's
page cache already holds (llama.cpp maps its GGUF file), so a model larger than the board can
run in its container, but not on the board.

Under --baseline the base model is filled to the same context, with the same text, in a worker
of its own too, and memory_max_growth compares their shares (peak - the empty worker's peak),
as the memory suite does for other models.

On an emulated board the fill is kept across sessions (`textwork.BoardAnswers`, under the key of
the board's answers plus the text and lengths): filling a SmolLM2-135M-shaped decoder's context
under QEMU took 8-14 minutes, most of a warm session, and the same model, text, image, emulator
and runtime fill to the same peak (tests/test_slm_example.py runs it twice). A later session
reads the figures and starts no fresh worker; the row says the figure came from the cache.
Measured devices fill every session: their memory belongs to the session.
"""

from __future__ import annotations

from typing import Any

from harness import answers_cache
from harness.backends.base import WorkerCrashed
from harness.config import ModelSpec
from harness.pairs import Pair, PairFailure, WorkerHandle
from harness.results import Flags, Measurement
from harness.runtimes import format_of
from harness.suites import textwork

KB_PER_MB = 1024.0


def _oom(pair: Pair, message: str) -> Measurement:
    figures = {"limit_mb": pair.profile.memory_mb}
    return Measurement(figures, pair.profile.fidelity, flags=Flags(failure=message, oom=True))


def _fill(pair: Pair, worker: WorkerHandle) -> dict[str, Any]:
    """`fill_context` of `worker`'s model with the pair's text and lengths."""
    settings = pair.model.generate
    assert settings is not None and pair.model.text is not None
    return worker.request(
        "fill_context",
        text=pair.model.text.read_text(encoding="utf-8"),
        context_tokens=settings.context_tokens,
        new_tokens=settings.new_tokens,
    )


def _kept(pair: Pair, fresh: WorkerHandle, base: bool) -> textwork.BoardAnswers:
    """The fill of `fresh`'s model (the pair's model, or with `base` its base) on an emulated
    board, kept across sessions as part 0 (inactive elsewhere: nothing is read or written).
    Keyed by the pair's worker where it runs already (a warm session then starts no other),
    else by `fresh`, started here: a load that fails for memory fails here, as the suite
    reports it."""
    settings = pair.model.generate
    assert settings is not None
    identity = textwork.text_identity(pair.model) | {"context_tokens": settings.context_tokens}
    if pair.worker.client is not None and pair.profile.emulated:
        return textwork.BoardAnswers(pair, "fill_context", base, **identity)
    fresh.start()
    return textwork.BoardAnswers(pair, "fill_context", worker=fresh, **identity)


def _keep(kept: textwork.BoardAnswers, worker: WorkerHandle, filled: dict[str, Any]) -> None:
    kept.parts[0] = {
        "peak_kb": int(filled["peak_kb"]),
        "empty_peak_kb": int(worker.hello["empty_peak_kb"]),
        "load_peak_kb": int(worker.loaded["peak_kb"]),
        "context_tokens": filled["context_tokens"],
        "runtime_context": worker.loaded.get("context_length"),
        "fill_s": filled.get("fill_s"),
    }
    kept.write()


def _base_share_kb(pair: Pair, base: ModelSpec) -> tuple[int, int]:
    """(peak, model share) of the base model filled to the same context with the same text, in
    a worker of its own (or as an earlier session on this emulated board left it)."""
    worker = pair.other(base)
    try:
        kept = _kept(pair, worker, base=True)
        if 0 not in kept.parts:
            worker.start()
            _keep(kept, worker, _fill(pair, worker))
    finally:
        worker.close()
    fill = kept.parts[0]
    return fill["peak_kb"], fill["peak_kb"] - fill["empty_peak_kb"]


def measure(pair: Pair) -> Measurement:
    settings = pair.model.generate
    assert settings is not None
    # Always a worker of its own: the pair's has scored texts and held other models.
    worker = pair.other(pair.model)
    try:
        return _measure(pair, worker, pair.baseline.base)
    finally:
        worker.close()


def _over_the_board(pair: Pair, figures: dict[str, Any], when: str) -> Flags:
    """A failure where the gated peak (the board estimate under emulation) is above the board's
    RAM and the worker lives on: the container's limit does not charge pages of a mmapped model
    file that the host's page cache already holds (llama.cpp maps its GGUF file), which the board
    has no room for. The model does not fit there, whatever the gate's threshold."""
    limit = pair.profile.memory_mb
    gated = figures.get("board_peak_mb", figures["peak_mb"])
    if limit is None or gated <= limit:
        return Flags()
    return Flags(
        failure=f"peak {gated:.0f} MB {when} exceeds the {limit} MB of {pair.profile.name}: "
        "the model does not fit"
    )


def _peaks(pair: Pair, peak_kb: int, empty_peak_kb: int, fidelity: str) -> dict[str, Any]:
    """The peak and the model's share; under emulation also the board estimate (the model's
    share under QEMU + the empty worker's peak measured natively), which the gate reads."""
    empty = empty_peak_kb / KB_PER_MB
    peak = peak_kb / KB_PER_MB
    figures: dict[str, Any] = {
        "peak_mb": peak,
        "empty_peak_mb": empty,
        "model_share_mb": peak - empty,
        "limit_mb": pair.profile.memory_mb,
    }
    if fidelity == "emulated":
        fmt = format_of(pair.model.path)
        files = (pair.model.path,) if fmt == "gguf" else ()
        native_empty = pair.shared.native_empty_peak_kb((fmt,), files) / KB_PER_MB
        figures["native_empty_peak_mb"] = native_empty
        figures["emulated_peak_mb"] = peak
        figures["board_peak_mb"] = peak - empty + native_empty
        figures["gated_figure"] = (
            "board_peak_mb (estimated: model share under QEMU + native empty worker)"
        )
    return figures


def _measure(pair: Pair, worker: WorkerHandle, base: ModelSpec | None) -> Measurement:
    settings = pair.model.generate
    assert settings is not None
    try:
        kept = _kept(pair, worker, base=False)
        if 0 not in kept.parts:
            worker.start()  # a no-op where it keyed the cache
    except PairFailure as failure:
        if not failure.oom:
            raise
        return _oom(pair, f"loading the model: {failure}")
    if 0 in kept.parts:
        fill, fidelity = kept.parts[0], pair.profile.fidelity
        measured_in = (
            "a fresh worker: load, then generate to the context length, in an earlier session "
            f"({fill['fill_s'] or 0:.0f} s; {answers_cache.NOTE})"
        )
    else:
        assert worker.target is not None
        fidelity = worker.target.fidelity
        empty = int(worker.hello["empty_peak_kb"])
        loaded = _peaks(pair, worker.loaded["peak_kb"], empty, fidelity)
        flags = _over_the_board(pair, loaded, "after loading the model")
        if flags:
            # Filling the context only adds to it (the KV cache), and costs minutes under QEMU
            # at this scale: the load's peak decides.
            loaded["measured_in"] = "a fresh worker: load and one token (not filled to the context)"
            return Measurement(loaded, fidelity, flags=flags)
        try:
            _keep(kept, worker, _fill(pair, worker))
        except WorkerCrashed as crash:
            if "OOM-killed" not in str(crash):
                raise
            return _oom(pair, f"at a context of {settings.context_tokens} tokens: {crash}")
        fill = kept.parts[0]
        measured_in = "a fresh worker: load, then generate to the context length"
    figures = _peaks(pair, fill["peak_kb"], fill["empty_peak_kb"], fidelity) | {
        "load_peak_mb": fill["load_peak_kb"] / KB_PER_MB,
        "context_tokens": fill["context_tokens"],
        "runtime_context": fill["runtime_context"],
        "measured_in": measured_in,
    }
    flags = _over_the_board(pair, figures, f"at a context of {fill['context_tokens']} tokens")
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
    return Measurement(figures, fidelity, flags=flags)
