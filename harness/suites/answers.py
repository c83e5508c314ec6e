"""Answers: the prompt set (`prompts`, JSON lines of prompt + expected + match) answered by
greedy decoding of up to `generate.new_tokens` tokens; the answer is the first line of the
continuation (generation stops once that line is complete), scored exact / contains / regex
(harness.language_scores). Figure: answer_accuracy.
Prompts are asked a few seconds' worth at a time, with progress lines between.

On an expensive (emulated) device (harness.suites.textwork): the whole set is answered natively
on the host, and the board answers a seeded sample of prompts that fits `plan.budget_s`; its
greedy tokens are compared with the host's (`host_agreement`, with its exact interval, decides
`device_top1_min`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

from harness import language_scores, stats
from harness.language_config import Prompt
from harness.pairs import Pair
from harness.results import Measurement
from harness.suites import textwork
from harness.worker.feeds import DataError

SHOWN = 20  # answers kept in the report


def _answered(
    request: Callable[..., dict[str, Any]],
    prompts: list[Prompt],
    new_tokens: int,
    progress: Callable[[str, int, int], None],
) -> list[dict[str, Any]]:
    """The worker's results for `prompts`, asked in requests of about REQUEST_S each."""
    results: list[dict[str, Any]] = []
    per_prompt = 0.0
    while len(results) < len(prompts):
        step = max(1, int(textwork.REQUEST_S / per_prompt)) if per_prompt else 1
        chunk = prompts[len(results) : len(results) + step]
        started = time.monotonic()
        reply = request("generate", prompts=[p.prompt for p in chunk], new_tokens=new_tokens,
                        first_line=True)  # fmt: skip
        per_prompt = (time.monotonic() - started) / len(chunk)
        results += reply["results"]
        progress("prompts", len(results), len(prompts))
    return results


def _scored(prompts: list[Prompt], results: list[dict[str, Any]]) -> dict[str, Any]:
    answers: list[dict[str, Any]] = []
    correct = refused = 0
    for prompt, result in zip(prompts, results, strict=True):
        if "error" in result:
            refused += 1
            answers.append({"prompt": prompt.prompt, "error": result["error"], "ok": False})
            continue
        answer = language_scores.answer_of(result["text"])
        ok = language_scores.matches(answer, prompt.expected, prompt.match)
        correct += ok
        answers.append(
            {"prompt": prompt.prompt, "expected": prompt.expected, "answer": answer, "ok": ok}
        )
    return {
        "answer_accuracy": correct / len(prompts),
        "n": len(prompts),
        "correct": correct,
        "refused": refused,
        "answers": sorted(answers, key=lambda a: bool(a["ok"]))[:SHOWN],  # wrong answers first
    }


def measure(pair: Pair) -> Measurement:
    pair.start()
    assert pair.target is not None and pair.model.generate is not None
    prompts = list(pair.model.prompts)
    if not prompts:
        raise DataError(
            f'model {pair.model.name!r} has no prompt set; add prompts = "data/prompts.jsonl"'
        )
    new = pair.model.generate.new_tokens
    if pair.profile.emulated:
        return _on_host_with_agreement(pair, prompts, new)
    scored = _scored(prompts, _answered(pair.request, prompts, new, pair.progress))
    shown = scored.pop("answers")
    return Measurement(scored, pair.target.fidelity, {"answers": shown})


def _board_answers(
    pair: Pair, prompts: list[Prompt], new: int
) -> tuple[dict[int, dict[str, Any]], list[int], float, int]:
    """The board's answers to its sample of prompts: (answers by prompt index, the sample, the
    price of a prompt, how many came from earlier sessions)."""
    identity = textwork.text_identity(pair.model) | {
        "prompts_sha256": hashlib.sha256(
            json.dumps([p.prompt for p in prompts]).encode()
        ).hexdigest()  # fmt: skip
    }
    kept = textwork.BoardAnswers(pair, "answers", **identity)
    if kept.cost_s is None:
        started = time.monotonic()
        first = pair.request("generate", prompts=[prompts[0].prompt], new_tokens=new,
                             first_line=True)["results"]  # fmt: skip
        kept.cost_s = time.monotonic() - started
        kept.parts[0] = first[0]
    chosen = textwork.board_sample(pair, len(prompts), kept.cost_s)
    missing = [i for i in chosen if i not in kept.parts]
    if missing:
        answered = _answered(pair.request, [prompts[i] for i in missing], new, pair.progress)
        kept.parts |= dict(zip(missing, answered, strict=True))
    kept.write()
    return kept.parts, chosen, kept.cost_s, len(chosen) - len(missing)


def _on_host_with_agreement(pair: Pair, prompts: list[Prompt], new: int) -> Measurement:
    assert pair.target is not None
    host = textwork.on_host(pair.model, pair)
    try:
        native = textwork.in_background(
            lambda: {
                "results": _answered(
                    lambda op, **a: host.request(op, **a), prompts, new, lambda *_: None
                )
            }  # fmt: skip
        )
        board, chosen, cost, from_cache = _board_answers(pair, prompts, new)
        reference = native.result()["results"]
    finally:
        host.close()
    scored = _scored(prompts, reference)
    shown = scored.pop("answers")
    same = sum(board[i].get("tokens") == reference[i].get("tokens") for i in chosen)
    confidence = pair.config.plan.confidence
    interval = stats.agreement_interval(same, len(chosen), confidence)
    figures = scored | {
        "answers_on": f"host (natively, all {len(prompts)} prompts)",
        "host_agreement": same / len(chosen),
        "host_agreement_low": interval.low,
        "host_agreement_high": interval.high,
        "host_disagreements": len(chosen) - same,
        "agreement_n": len(chosen),
        "agreement_confidence": confidence,
        "board_prompt_s": cost,
        "board_prompts_from_cache": from_cache,
    }
    return Measurement(figures, pair.target.fidelity, {"answers": shown, "board_prompts": chosen})
