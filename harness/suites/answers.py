"""Answers: the prompt set (`prompts`, JSON lines of prompt + expected + match) answered by
greedy decoding of up to `generate.new_tokens` tokens; the answer is the first line of the
continuation, scored exact / contains / regex (harness.textscore). Figure: answer_accuracy.
"""

from __future__ import annotations

from typing import Any

from harness import textscore
from harness.results import Measurement
from harness.runner import Pair
from harness.worker.feeds import DataError

SHOWN = 20  # answers kept in the report


def measure(pair: Pair) -> Measurement:
    pair.start()
    assert pair.target is not None and pair.model.generate is not None
    prompts = pair.model.prompts
    if not prompts:
        raise DataError(
            f'model {pair.model.name!r} has no prompt set; add prompts = "data/prompts.jsonl"'
        )
    reply = pair.request(
        "generate", prompts=[p.prompt for p in prompts], new_tokens=pair.model.generate.new_tokens
    )
    answers: list[dict[str, Any]] = []
    correct = refused = 0
    for prompt, result in zip(prompts, reply["results"], strict=True):
        if "error" in result:
            refused += 1
            answers.append({"prompt": prompt.prompt, "error": result["error"], "ok": False})
            continue
        answer = textscore.answer_of(result["text"])
        ok = textscore.matches(answer, prompt.expected, prompt.match)
        correct += ok
        answers.append(
            {"prompt": prompt.prompt, "expected": prompt.expected, "answer": answer, "ok": ok}
        )
    figures: dict[str, Any] = {
        "answer_accuracy": correct / len(prompts),
        "n": len(prompts),
        "correct": correct,
        "refused": refused,
    }
    shown = sorted(answers, key=lambda a: bool(a["ok"]))[:SHOWN]  # wrong answers first
    return Measurement(figures, pair.target.fidelity, {"answers": shown})
