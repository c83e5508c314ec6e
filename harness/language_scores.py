"""Pure scoring of language-model results: answers against a prompt set, perplexity from
per-token negative log-likelihoods, agreement of greedy tokens, decode timing figures, and the
quantization statistics llama-perplexity reports (KL divergence of the next-token distributions,
top-1 agreement, perplexity ratio against the float base) with their intervals.

Nothing here measures or talks to a worker; the suites feed it what the worker returned.

Intervals over a text: the positions of one window share their context, so they are not
independent samples; `window_mean_interval` resamples whole windows (a block bootstrap), which
keeps that dependence, and states the text's own sampling error, not the error over other texts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "Quantization",
    "answer_of",
    "matches",
    "perplexity",
    "prefix_agreement",
    "quantization_statistics",
    "token_agreement",
    "tokens_per_second",
    "window_mean_interval",
    "window_percentile_interval",
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


def _windows(
    values: npt.ArrayLike, counts: Sequence[int], confidence: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Per-position values and the window sizes they split into, checked."""
    array = np.asarray(values, dtype=np.float64)
    sizes = np.asarray(counts, dtype=np.int64)
    if array.size == 0 or sizes.sum() != array.size or np.any(sizes < 1):
        raise ValueError(f"{array.size} values do not split into windows of {list(counts)}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    return array, sizes


def window_mean_interval(
    values: npt.ArrayLike,
    counts: Sequence[int],
    confidence: float = 0.95,
    seed: int = 0,
    resamples: int = 2000,
) -> tuple[float, float, float]:
    """(mean, low, high): the mean of per-position `values` laid out window by window
    (`counts[i]` positions in window i), with a percentile-bootstrap interval that resamples whole
    windows. With a single window the interval is the mean itself (nothing to resample)."""
    array, sizes = _windows(values, counts, confidence)
    sums = np.add.reduceat(array, np.concatenate([[0], np.cumsum(sizes)[:-1]]))
    mean = float(sums.sum() / sizes.sum())
    if sums.size < 2:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, sums.size, size=(resamples, sums.size))
    means = sums[picks].sum(axis=1) / sizes[picks].sum(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return mean, float(low), float(high)


def window_percentile_interval(
    values: npt.ArrayLike,
    counts: Sequence[int],
    q: float,
    confidence: float = 0.95,
    seed: int = 0,
    resamples: int = 1000,
) -> tuple[float, float, float]:
    """(percentile, low, high): the q-th percentile of per-position `values` laid out window by
    window, with a percentile-bootstrap interval that resamples whole windows (the positions of
    the drawn windows, pooled). A tail percentile from few windows is rough: the interval says
    how rough."""
    array, sizes = _windows(values, counts, confidence)
    point = float(np.percentile(array, q))
    if sizes.size < 2:
        return point, point, point
    parts = np.split(array, np.cumsum(sizes)[:-1])
    rng = np.random.default_rng(seed)
    drawn = np.empty(resamples)
    for index in range(resamples):
        picks = rng.integers(0, len(parts), size=len(parts))
        drawn[index] = np.percentile(np.concatenate([parts[i] for i in picks]), q)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(drawn, [tail, 1.0 - tail])
    return point, float(low), float(high)


@dataclass(frozen=True)
class Quantization:
    """A model against its reference (the float base) on the same text, as llama-perplexity
    reports a quantization: mean and 99th-percentile KL divergence of the next-token
    distributions (nats), top-1 agreement, perplexity ratio; intervals at `confidence`."""

    positions: int
    windows: int
    kld_mean: tuple[float, float, float]  # (mean, low, high)
    kld_p99: tuple[float, float, float]  # (99th percentile, low, high)
    kld_max: float
    agreement: tuple[float, float, float]
    perplexity: float
    reference_perplexity: float
    ratio: tuple[float, float, float]

    def figures(self) -> dict[str, float | int]:
        kld, same, ratio = self.kld_mean, self.agreement, self.ratio
        return {
            "n": self.positions,
            "windows": self.windows,
            "kld_mean": kld[0],
            "kld_mean_low": kld[1],
            "kld_mean_high": kld[2],
            "kld_p99": self.kld_p99[0],
            "kld_p99_low": self.kld_p99[1],
            "kld_p99_high": self.kld_p99[2],
            "kld_max": self.kld_max,
            "token_agreement": same[0],
            "token_agreement_low": same[1],
            "token_agreement_high": same[2],
            "perplexity": self.perplexity,
            "other_perplexity": self.reference_perplexity,
            "perplexity_ratio": ratio[0],
            "perplexity_ratio_low": ratio[1],
            "perplexity_ratio_high": ratio[2],
        }


def quantization_statistics(
    kld: npt.ArrayLike,
    nll: npt.ArrayLike,
    reference_nll: npt.ArrayLike,
    greedy: npt.ArrayLike,
    reference_greedy: npt.ArrayLike,
    counts: Sequence[int],
    confidence: float = 0.95,
    seed: int = 0,
) -> Quantization:
    """The statistics of a model against its reference from per-position values (the worker's
    `compare`): the perplexity ratio is exp(mean(nll - reference_nll)), so its interval is that
    of a mean, resampled by window like the others."""
    divergence = np.asarray(kld, dtype=np.float64)
    same = (np.asarray(greedy) == np.asarray(reference_greedy)).astype(np.float64)
    difference = np.asarray(nll, dtype=np.float64) - np.asarray(reference_nll, dtype=np.float64)
    mean_difference = window_mean_interval(difference, counts, confidence, seed)
    return Quantization(
        positions=int(divergence.size),
        windows=len(counts),
        kld_mean=window_mean_interval(divergence, counts, confidence, seed),
        kld_p99=window_percentile_interval(divergence, counts, 99, confidence, seed),
        kld_max=float(divergence.max()),
        agreement=window_mean_interval(same, counts, confidence, seed),
        perplexity=perplexity(nll),
        reference_perplexity=perplexity(reference_nll),
        ratio=(
            math.exp(mean_difference[0]),
            math.exp(mean_difference[1]),
            math.exp(mean_difference[2]),
        ),
    )
