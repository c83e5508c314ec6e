"""Perplexity: token-level, on the model's text file (`text`), with sliding windows of
`generate.window` tokens every `generate.stride` tokens; each token is scored once, in the window
that gives it the most context. Perplexity = exp(mean negative log-likelihood per token). Windows
are asked for a few seconds' worth at a time, with progress lines between.

Under --baseline the base model scores the same text in the same worker: `perplexity_growth` =
new / base - 1 (deterministic, so the gate needs no statistics).

On an expensive (emulated) device the plan applies (harness.suites.textwork): perplexity over the
whole text is computed natively on the host, and the board scores a seeded sample of windows that
fits `plan.budget_s`; at every position of them its greedy next token is compared with the
host's. That agreement, with its exact interval, decides `device_top1_min`; the largest
difference of a token's negative log-likelihood is reported beside it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness import language_scores, stats
from harness.pairs import Pair
from harness.results import Measurement
from harness.suites import textwork


def score(pair: Pair, base: bool = False, like: Pair | None = None) -> dict[str, Any]:
    """The worker's per-token NLL and greedy tokens on the model's text (or on the text, window
    and stride of the model of `like`), every window."""

    def request(op: str, **arguments: Any) -> dict[str, Any]:
        return pair.request(op, base=base, **arguments)

    return textwork.scored(request, "perplexity", (like or pair).model, None, pair.progress)


def measure(pair: Pair) -> Measurement:
    pair.start()
    assert pair.target is not None and pair.model.generate is not None
    if pair.profile.emulated:
        return _on_host_with_agreement(pair)
    result = score(pair)
    figures = _figures(pair, result)
    if pair.baseline.base is not None:
        figures["baseline_perplexity"] = language_scores.perplexity(score(pair, base=True)["nll"])
    _against_base(pair, figures)
    return Measurement(figures, pair.target.fidelity)


def _figures(pair: Pair, result: dict[str, Any]) -> dict[str, Any]:
    assert pair.model.generate is not None
    return {
        "perplexity": language_scores.perplexity(result["nll"]),
        "tokens_scored": len(result["nll"]),
        "text_tokens": result["tokens"],
        "windows": result["windows"],
        "window": pair.model.generate.window,
        "stride": pair.model.generate.stride,
    }


def _against_base(pair: Pair, figures: dict[str, Any]) -> None:
    if "baseline_perplexity" not in figures and "perplexity" in pair.baseline.stored:
        stored = pair.baseline.stored["perplexity"]["figures"].get("perplexity")
        if stored:
            figures["baseline_perplexity"] = stored
    if figures.get("baseline_perplexity"):
        figures["perplexity_growth"] = figures["perplexity"] / figures["baseline_perplexity"] - 1


def _board_windows(pair: Pair) -> tuple[dict[str, Any], list[int], float, int]:
    """The board's scores on its sample of windows: (nll and greedy of the sample in window
    order, the sample, the price of a window, how many came from earlier sessions)."""
    kept = textwork.BoardAnswers(pair, "perplexity", **textwork.text_identity(pair.model))

    def keep(reply: dict[str, Any]) -> None:
        bounds = np.cumsum([0, *reply["counts"]])
        for index, window in enumerate(reply["chosen"]):
            part = slice(int(bounds[index]), int(bounds[index + 1]))
            nll, greedy = np.asarray(reply["nll"])[part], np.asarray(reply["greedy"])[part]
            kept.parts[int(window)] = {"nll": nll.tolist(), "greedy": greedy.tolist()}

    if kept.cost_s is None or kept.count is None:
        kept.cost_s, first = textwork.first_window(pair.request, pair.model)
        kept.count = int(first["windows"])
        keep(first)
    chosen = textwork.board_sample(pair, kept.count, kept.cost_s)
    missing = [w for w in chosen if w not in kept.parts]
    if missing:
        keep(textwork.scored(pair.request, "perplexity", pair.model, missing, pair.progress))
    kept.write()
    board = {
        "nll": np.concatenate([np.asarray(kept.parts[w]["nll"]) for w in chosen]),
        "greedy": np.concatenate([np.asarray(kept.parts[w]["greedy"]) for w in chosen]),
    }
    return board, chosen, kept.cost_s, len(chosen) - len(missing)


def _on_host_with_agreement(pair: Pair) -> Measurement:
    assert pair.target is not None
    host = textwork.on_host(pair.model, pair)
    try:
        reference = textwork.in_background(
            lambda: textwork.scored(
                lambda op, **a: host.request(op, **a), "perplexity", pair.model, None,
                lambda *_: None,
            )
        )  # fmt: skip
        board, chosen, cost, from_cache = _board_windows(pair)
        native = reference.result()
        if pair.baseline.base is not None:
            base = textwork.on_host(pair.baseline.base, pair)
            try:
                based = textwork.scored(lambda op, **a: base.request(op, **a), "perplexity",
                                        pair.model, None, lambda *_: None)  # fmt: skip
            finally:
                base.close()
    finally:
        host.close()
    figures = _figures(pair, native)
    figures["perplexity_on"] = f"host (natively, all {native['windows']} windows)"
    figures |= _agreement(pair, native, board, chosen)
    figures["board_window_s"] = cost
    figures["board_windows_from_cache"] = from_cache
    if pair.baseline.base is not None:
        figures["baseline_perplexity"] = language_scores.perplexity(based["nll"])
    _against_base(pair, figures)
    return Measurement(figures, pair.target.fidelity, {"agreement_windows": chosen})


def _agreement(
    pair: Pair, native: dict[str, Any], board: dict[str, Any], chosen: list[int]
) -> dict[str, Any]:
    """The board's greedy tokens and NLLs on its windows against the host's on the same ones."""
    offsets = np.concatenate([[0], np.cumsum(native["counts"])])
    positions = np.concatenate([np.arange(offsets[w], offsets[w + 1]) for w in chosen])
    same = int((np.asarray(native["greedy"])[positions] == board["greedy"]).sum())
    n = len(positions)
    confidence = pair.config.plan.confidence
    interval = stats.agreement_interval(same, n, confidence)
    difference = np.abs(np.asarray(native["nll"])[positions] - board["nll"])
    return {
        "host_agreement": same / n,
        "host_agreement_low": interval.low,
        "host_agreement_high": interval.high,
        "host_disagreements": n - same,
        "agreement_n": n,
        "agreement_windows": len(chosen),
        "agreement_confidence": confidence,
        "host_nll_max_abs_diff": float(difference.max()) if n else 0.0,
        "board_perplexity_on_sample": language_scores.perplexity(board["nll"]),
        "host_perplexity_on_sample": language_scores.perplexity(
            np.asarray(native["nll"])[positions]
        ),
    }
