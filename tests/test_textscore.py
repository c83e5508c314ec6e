"""Pure scoring of language models: answers, perplexity, agreement, perplexity windows."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness import textscore
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
    assert textscore.matches(textscore.answer_of(generated), expected, match) is ok


def test_an_unknown_match_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="exact, contains, regex"):
        textscore.matches("a", "a", "fuzzy")


@given(st.integers(2, 5000))
def test_a_uniform_model_has_the_vocabulary_size_as_perplexity(vocab: int) -> None:
    logits = np.zeros((3, vocab))
    nll = -log_softmax_rows(logits)[np.arange(3), [0, 1, 1]]
    assert textscore.perplexity(nll) == pytest.approx(vocab, rel=1e-9)


def test_perplexity_is_exp_of_the_mean_nll() -> None:
    assert textscore.perplexity([0.5, 1.5]) == pytest.approx(math.e)
    with pytest.raises(ValueError, match="no tokens"):
        textscore.perplexity([])


def test_log_softmax_rows_match_a_direct_computation() -> None:
    logits = np.random.default_rng(0).normal(size=(4, 7)) * 30
    direct = np.log(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True))
    assert np.allclose(log_softmax_rows(logits), direct)


def test_token_agreement_and_prefix_agreement() -> None:
    assert textscore.token_agreement([1, 2, 3, 4], [1, 2, 0, 4]) == 0.75
    with pytest.raises(ValueError, match="differ in length"):
        textscore.token_agreement([1], [1, 2])
    # Prefix: 2 of 3 in common before the first difference, then 0 of 2 (differs at once).
    assert textscore.prefix_agreement([[1, 2, 3], [5, 6]], [[1, 2, 9], [6, 6, 6]]) == 2 / 5
    assert textscore.prefix_agreement([], []) == 1.0


def test_tokens_per_second_from_the_step_time() -> None:
    assert textscore.tokens_per_second(4.0) == 250.0
    assert textscore.tokens_per_second(0.0) == math.inf


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
