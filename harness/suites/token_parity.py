"""Token parity: a language model against another variant of it (`parity_with`, e.g. int4 against
float), both on this device. On the text file: the perplexity ratio (this / the other) and the
fraction of positions where both pick the same greedy next token on the same context (teacher
forcing). On the prompt set, for the report: tokens in common before the greedy continuations
first differ.
"""

from __future__ import annotations

from typing import Any

from harness import textscore
from harness.results import Measurement
from harness.runner import Pair
from harness.suites import perplexity


def measure(pair: Pair) -> Measurement:
    assert pair.model.parity_with is not None
    pair.start()
    assert pair.target is not None and pair.model.generate is not None
    other_spec = pair.config.model(pair.model.parity_with)
    # The other variant is scored on this model's text and prompts, with this model's settings.
    other = pair.sibling(other_spec)
    try:
        return _compared(pair, other, other_spec.name)
    finally:
        other.worker.close()


def _compared(pair: Pair, other: Pair, other_name: str) -> Measurement:
    assert pair.target is not None and pair.model.generate is not None
    mine = perplexity.score(pair)
    theirs = perplexity.score(other, like=pair)
    figures: dict[str, Any] = {
        "parity_with": other_name,
        "perplexity": textscore.perplexity(mine["nll"]),
        "other_perplexity": textscore.perplexity(theirs["nll"]),
        "token_agreement": textscore.token_agreement(mine["greedy"], theirs["greedy"]),
        "n": len(mine["greedy"]),
    }
    figures["perplexity_ratio"] = figures["perplexity"] / figures["other_perplexity"]
    if pair.model.prompts:
        prompts = [p.prompt for p in pair.model.prompts]
        new = pair.model.generate.new_tokens
        a = pair.request("generate", prompts=prompts, new_tokens=new)["results"]
        b = other.request("generate", prompts=prompts, new_tokens=new)["results"]
        figures["prompt_prefix_agreement"] = textscore.prefix_agreement(
            [r.get("tokens", []) for r in a], [r.get("tokens", []) for r in b]
        )
    return Measurement(figures, pair.target.fidelity)
