"""Suites: what to ask the worker and which figures come back. One suite per file."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.config import ModelSpec
    from harness.runner import Pair
    from harness.suites.base import Measurement


def measure(suite: str, pair: Pair) -> Measurement:
    from harness.suites import (
        accuracy,
        answers,
        context_memory,
        generation,
        instructions,
        latency,
        memory,
        operators,
        parity,
        perplexity,
        prompt_robustness,
        robustness,
        size,
        token_parity,
    )

    if pair.model.task == "generate" and suite == "memory":
        return context_memory.measure(pair)  # language models: peak at the context length

    measures: dict[str, Callable[[Pair], Measurement]] = {
        "size": size.measure,
        "operators": operators.measure,
        "accuracy": accuracy.measure,
        "latency": latency.measure,
        "memory": memory.measure,
        "parity": parity.measure,
        "robustness": robustness.measure,
        "instructions": instructions.measure,
        "perplexity": perplexity.measure,
        "answers": answers.measure,
        "generation": generation.measure,
        "token_parity": token_parity.measure,
        "prompt_robustness": prompt_robustness.measure,
    }
    return measures[suite](pair)


def suites_for(model: ModelSpec, robustness_examples: int = 0, counting: bool = False) -> list[str]:
    """The suites that apply to `model`: accuracy needs a dataset, parity a configured
    comparison, robustness a number of examples."""
    from harness.config import DEVICE_PARITY_GATES

    if model.task == "generate":
        return generative_suites(model, robustness_examples)
    names = ["size", "operators"]
    if model.dataset is not None:
        names.append("accuracy")
    specs = [model.gates, *model.device_gates.values()]
    if model.parity_with or any(
        getattr(s, g) is not None for s in specs for g in DEVICE_PARITY_GATES
    ):
        names.append("parity")
    names.append("latency")
    if counting or any(s.instructions_max_regression is not None for s in specs):
        names.append("instructions")
    names.append("memory")
    return names + (["robustness"] if robustness_examples > 0 else [])


def generative_suites(model: ModelSpec, robustness_examples: int = 0) -> list[str]:
    """Language models: perplexity needs a text file, answers a prompt set, token parity a
    configured comparison; generation latency and memory always apply."""
    names = ["size"]
    if model.text is not None:
        names.append("perplexity")
    if model.prompts:
        names.append("answers")
    if model.parity_with and model.text is not None:
        names.append("token_parity")
    if model.text is not None:
        names += ["generation", "memory"]
    return names + (["prompt_robustness"] if robustness_examples > 0 else [])
