"""Pure scoring of language models: answers, perplexity, agreement, perplexity windows."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness import language_scores
from harness.worker.generate import TextRequestError, log_softmax_rows, windows


@pytest.mark.parametrize(
    ("generated", "expected", "match", "ok"),
    [
        (" 7.\n3 plus 4 is 7.", "7", "exact", True),  # first line, final full stop allowed
        (" 17.\n", "7", "exact", False),
        (" 17.\n", "7", "contains", True),
        (" Tesk.\nThe capital", "Tesk", "contains", True),
        (" Tesk.\nThe capital", "Kelm", "contains", False),
        (" 12.", r"^12\.?$", "regex", True),
        (" 121.", r"^12\.?$", "regex", False),
        ("", "7", "exact", False),
        ("\n\n", "", "exact", True),
    ],
)
def test_answers_are_the_first_line_matched_as_asked(
    generated: str, expected: str, match: str, ok: bool
) -> None:
    assert language_scores.matches(language_scores.answer_of(generated), expected, match) is ok


def test_an_unknown_match_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="exact, contains, regex"):
        language_scores.matches("a", "a", "fuzzy")


@given(st.integers(2, 5000))
def test_a_uniform_model_has_the_vocabulary_size_as_perplexity(vocab: int) -> None:
    logits = np.zeros((3, vocab))
    nll = -log_softmax_rows(logits)[np.arange(3), [0, 1, 1]]
    assert language_scores.perplexity(nll) == pytest.approx(vocab, rel=1e-9)


def test_perplexity_is_exp_of_the_mean_nll() -> None:
    assert language_scores.perplexity([0.5, 1.5]) == pytest.approx(math.e)
    with pytest.raises(ValueError, match="no tokens"):
        language_scores.perplexity([])


def test_log_softmax_rows_match_a_direct_computation() -> None:
    logits = np.random.default_rng(0).normal(size=(4, 7)) * 30
    direct = np.log(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True))
    assert np.allclose(log_softmax_rows(logits), direct)


def test_token_agreement_and_prefix_agreement() -> None:
    assert language_scores.token_agreement([1, 2, 3, 4], [1, 2, 0, 4]) == 0.75
    with pytest.raises(ValueError, match="differ in length"):
        language_scores.token_agreement([1], [1, 2])
    # Prefix: 2 of 3 in common before the first difference, then 0 of 2 (differs at once).
    assert language_scores.prefix_agreement([[1, 2, 3], [5, 6]], [[1, 2, 9], [6, 6, 6]]) == 2 / 5
    assert language_scores.prefix_agreement([], []) == 1.0


def test_tokens_per_second_from_the_step_time() -> None:
    assert language_scores.tokens_per_second(4.0) == 250.0
    assert language_scores.tokens_per_second(0.0) == math.inf


@given(st.integers(2, 400), st.integers(2, 80), st.data())
def test_every_token_but_the_first_is_scored_once_with_context(
    count: int, window: int, data: st.DataObject
) -> None:
    stride = data.draw(st.integers(1, window - 1))
    spans = windows(count, window, stride)
    scored: list[int] = []
    for begin, end, first in spans:
        assert end - begin <= window
        assert begin < first < end  # at least one token of context in its window
        if begin > 0:
            assert first - begin >= window - stride  # later windows: the promised context
        scored += range(first, end)
    assert scored == list(range(1, count))


def test_windows_refuse_impossible_settings() -> None:
    for stride in (0, 4, 5):
        with pytest.raises(TextRequestError, match="stride < window"):
            windows(10, 4, stride)


# -- quantization statistics (KL divergence, agreement, perplexity ratio) --------------------


def test_window_mean_interval_resamples_whole_windows() -> None:
    values = [0.0, 0.0, 1.0, 1.0, 1.0, 0.5]  # windows of 2, 3 and 1 positions
    mean, low, high = language_scores.window_mean_interval(values, [2, 3, 1], 0.95, seed=1)
    assert mean == pytest.approx(3.5 / 6)
    # Each resample is a mean of whole windows: it can only range over the windows' own means.
    assert 0.0 <= low <= mean <= high <= 1.0
    assert language_scores.window_mean_interval([0.25, 0.75], [2]) == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="do not split into windows"):
        language_scores.window_mean_interval(values, [2, 2])


@given(st.lists(st.floats(0, 5), min_size=20, max_size=60), st.integers(0, 10))
def test_a_window_mean_interval_holds_the_mean(values: list[float], seed: int) -> None:
    counts = [len(values) // 4] * 4
    counts[-1] += len(values) - sum(counts)
    mean, low, high = language_scores.window_mean_interval(values, counts, 0.9, seed)
    assert low - 1e-12 <= mean <= high + 1e-12


def test_a_model_against_itself_shows_no_divergence() -> None:
    rng = np.random.default_rng(0)
    nll = rng.uniform(0.1, 3.0, 40)
    greedy = rng.integers(0, 50, 40)
    same = language_scores.quantization_statistics(
        np.zeros(40), nll, nll, greedy, greedy, [10, 10, 10, 10]
    )
    figures = same.figures()
    assert figures["kld_mean"] == figures["kld_mean_high"] == 0.0
    assert figures["token_agreement"] == figures["token_agreement_low"] == 1.0
    assert figures["perplexity_ratio"] == pytest.approx(1.0)
    assert figures["perplexity"] == pytest.approx(figures["other_perplexity"])


def test_the_perplexity_ratio_is_exp_of_the_mean_nll_difference() -> None:
    nll = np.full(30, 1.0)
    reference = np.full(30, 0.9)
    greedy = np.arange(30)
    other = greedy.copy()
    other[:3] = -1  # three positions disagree
    kld = np.linspace(0, 0.2, 30)
    stats_ = language_scores.quantization_statistics(kld, nll, reference, greedy, other, [15, 15])
    assert stats_.ratio[0] == pytest.approx(math.exp(0.1))
    assert stats_.agreement[0] == pytest.approx(0.9)
    assert stats_.kld_mean[0] == pytest.approx(0.1)
    assert stats_.kld_p99[0] == pytest.approx(np.percentile(kld, 99))
    assert stats_.kld_p99[1] <= stats_.kld_p99[0] <= stats_.kld_p99[2]
    assert stats_.kld_max == pytest.approx(0.2)


def test_kl_divergence_rows_match_a_direct_computation() -> None:
    from harness.worker.generate import kl_divergence_rows

    rng = np.random.default_rng(3)
    p = log_softmax_rows(rng.normal(size=(5, 7)).astype(np.float32))
    q = log_softmax_rows(rng.normal(size=(5, 7)).astype(np.float32))
    pairs = zip(p, q, strict=True)
    direct = [sum(math.exp(a) * (a - b) for a, b in zip(x, y, strict=True)) for x, y in pairs]
    assert kl_divergence_rows(p, q) == pytest.approx(direct, rel=1e-5)
    assert np.all(kl_divergence_rows(p, p) == 0.0)  # clipped at 0, never -1e-9


def test_a_tail_percentile_interval_resamples_windows() -> None:
    values = np.concatenate([np.zeros(30), np.linspace(0, 1, 10)])  # the tail in one window
    point, low, high = language_scores.window_percentile_interval(values, [10, 10, 10, 10], 99)
    assert point == pytest.approx(np.percentile(values, 99))
    assert low == 0.0 or low <= point  # drawing no tail window is possible: the tail is rough
    assert high >= point
    assert language_scores.window_percentile_interval([1.0, 2.0], [2], 50) == (1.5, 1.5, 1.5)
