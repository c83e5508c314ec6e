"""Pure scoring of language-model results: answers against a prompt set, perplexity from
per-token negative log-likelihoods, agreement of greedy tokens, decode timing figures.

Nothing here measures or talks to a worker; the suites feed it what the worker returned.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = [
    "answer_of",
    "matches",
    "perplexity",
    "prefix_agreement",
    "token_agreement",
    "tokens_per_second",
]


def answer_of(generated: str) -> str:
    """The answer in a greedy continuation: its first line, without surrounding whitespace (a
    model goes on to the next line of text after answering)."""
    return generated.strip().split("\n", 1)[0].strip() if generated.strip() else ""


def matches(answer: str, expected: str, match: str) -> bool:
    """exact: the answer, or the answer without a final full stop, equals `expected`;
    contains: `expected` occurs in it; regex: re.search finds `expected` in it."""
    if match == "exact":
        return answer == expected or answer.rstrip(".") == expected
    if match == "contains":
        return expected in answer
    if match == "regex":
        return re.search(expected, answer) is not None
    raise ValueError(f"match {match!r} is not one of exact, contains, regex")


def perplexity(nll: npt.ArrayLike) -> float:
    """exp(mean negative log-likelihood per token), nll in nats."""
    values = np.asarray(nll, dtype=np.float64)
    if values.size == 0:
        raise ValueError("perplexity of no tokens")
    return math.exp(float(values.mean()))


def token_agreement(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Fraction of positions where two models' greedy next tokens agree, on the same context
    (teacher forcing: every position compares like with like)."""
    x, y = np.asarray(a), np.asarray(b)
    if x.shape != y.shape:
        raise ValueError(f"token sequences differ in length ({x.size} vs {y.size})")
    return float(np.mean(x == y)) if x.size else 1.0


def prefix_agreement(a: Sequence[Sequence[int]], b: Sequence[Sequence[int]]) -> float:
    """Over free-running greedy continuations: tokens in common before the first difference,
    over the tokens compared (the shorter of each pair). After a difference the contexts part,
    so later positions are not compared."""
    common = compared = 0
    for x, y in zip(a, b, strict=True):
        length = min(len(x), len(y))
        prefix = next((i for i in range(length) if x[i] != y[i]), length)
        common += prefix
        compared += length
    return common / compared if compared else 1.0


def tokens_per_second(step_ms: float) -> float:
    """Decode throughput from the per-token step time."""
    return 1000.0 / step_ms if step_ms > 0 else math.inf
