"""Perplexity: token-level, on the model's text file (`text`), with sliding windows of
`generate.window` tokens every `generate.stride` tokens; each token is scored once, in the window
that gives it the most context. Perplexity = exp(mean negative log-likelihood per token).

Under --baseline the base model scores the same text in the same worker: `perplexity_growth` =
new / base - 1 (deterministic, so the gate needs no statistics).
"""

from __future__ import annotations

from typing import Any

from harness import textscore
from harness.results import Measurement
from harness.runner import Pair
from harness.worker.feeds import DataError


def score(pair: Pair, base: bool = False, like: Pair | None = None) -> dict[str, Any]:
    """The worker's per-token NLL and greedy tokens on the model's text (or on the text, window
    and stride of the model of `like`)."""
    spec = (like or pair).model
    settings = spec.generate
    if spec.text is None or settings is None:
        raise DataError(
            f'model {spec.name!r} has no text file; add text = "data/valid.txt" to its '
            "[[models]] entry for perplexity"
        )
    return pair.request(
        "perplexity",
        base=base,
        text=spec.text.read_text(encoding="utf-8"),
        window=settings.window,
        stride=settings.stride,
    )


def measure(pair: Pair) -> Measurement:
    pair.start()
    assert pair.target is not None and pair.model.generate is not None
    result = score(pair)
    figures: dict[str, Any] = {
        "perplexity": textscore.perplexity(result["nll"]),
        "tokens_scored": len(result["nll"]),
        "text_tokens": result["tokens"],
        "windows": result["windows"],
        "window": pair.model.generate.window,
        "stride": pair.model.generate.stride,
    }
    if pair.baseline.base is not None:
        figures["baseline_perplexity"] = textscore.perplexity(score(pair, base=True)["nll"])
    elif "perplexity" in pair.baseline.stored:
        stored = pair.baseline.stored["perplexity"]["figures"].get("perplexity")
        if stored:
            figures["baseline_perplexity"] = stored
    if figures.get("baseline_perplexity"):
        figures["perplexity_growth"] = figures["perplexity"] / figures["baseline_perplexity"] - 1
    return Measurement(figures, pair.target.fidelity)
