"""Prompt robustness: hypothesis generates prompts (empty, unusual unicode, control characters,
longer than the model's context) and sends each twice to the worker. Properties:

- answers: the worker answers every prompt and stays alive (no crash, no hang);
- context: a prompt that does not fit the context is refused with a message naming the limit,
  and a prompt that fits is answered with at most `generate.new_tokens` tokens within it;
- deterministic: greedy decoding gives the same tokens for the same prompt twice.

The shrunk counterexample is saved as JSON and named in the failure. Bounded by
`robustness.examples` and `robustness.time_budget_s`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from harness.backends.base import WorkerFailure
from harness.links import refuse_links
from harness.pairs import Pair
from harness.results import Flags, Measurement


class PropertyFailure(AssertionError):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name


def prompts_strategy(context_length: int) -> Any:
    """Short text of any code point (control characters, surrogate-free unicode), the empty
    prompt, and repeated words running past the context."""
    from hypothesis import strategies as st

    anything = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
    controls = st.text(st.characters(max_codepoint=0x1F), max_size=10)
    too_long = st.builds(
        lambda word, extra: (word + " ") * (context_length + extra),
        st.sampled_from(["a", "the", "7", "é", "字"]),
        st.integers(1, 50),
    )
    return st.one_of(st.just(""), anything, controls, too_long)


def check_prompt(pair: Pair, prompt: str, new_tokens: int, context: int) -> None:
    try:
        first, second = pair.request("generate", prompts=[prompt, prompt], new_tokens=new_tokens)[
            "results"
        ]
    except WorkerFailure as exc:
        raise PropertyFailure("answers", f"the worker failed on this prompt: {exc}") from None
    if "error" in first:
        if first["prompt_tokens"] < context:
            raise PropertyFailure("context", f"a prompt that fits was refused: {first['error']}")
        if str(context) not in first["error"]:
            raise PropertyFailure(
                "context", f"the refusal does not name the limit: {first['error']}"
            )
    else:
        if len(first["tokens"]) > new_tokens:
            raise PropertyFailure("context", f"{len(first['tokens'])} tokens > {new_tokens}")
        if first["prompt_tokens"] + len(first["tokens"]) > context:
            raise PropertyFailure("context", "prompt + generated tokens exceed the context")
    if first != second:
        raise PropertyFailure("deterministic", "the same prompt gave different greedy results")


def _save(pair: Pair, prompt: str, failure: PropertyFailure) -> Path:
    folder = pair.config.root / ".harness" / "counterexamples"
    refuse_links(folder, pair.config.root, "a counterexample")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{pair.model.name}@{pair.profile.name}-{failure.name}.json"
    path.write_text(json.dumps({"prompt": prompt, "failure": str(failure)}))
    return path


def measure(pair: Pair) -> Measurement:
    from hypothesis import HealthCheck, Phase, given, settings

    pair.start()
    assert pair.target is not None and pair.model.generate is not None
    options = pair.config.robustness
    context = int(pair.loaded["context_length"])
    new_tokens = min(pair.model.generate.new_tokens, 4)  # properties, not quality: keep it short
    state: dict[str, Any] = {"examples": 0, "refused": 0, "last": None}
    deadline = time.monotonic() + options.time_budget_s

    @settings(
        max_examples=max(1, options.examples),
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
    )
    @given(prompts_strategy(context))
    def properties(prompt: str) -> None:
        if time.monotonic() > deadline and state["last"] is None:
            return  # out of budget: the remaining examples are not run
        state["examples"] += 1
        try:
            check_prompt(pair, prompt, new_tokens, context)
        except PropertyFailure as failure:
            state["last"] = (prompt, failure)
            raise

    figures: dict[str, Any] = {"examples": 0, "context_length": context}
    flags = Flags()
    try:
        properties()
    except PropertyFailure:
        prompt, failure = state["last"]
        path = _save(pair, prompt, failure)
        flags["failure"] = f"property {failure} (shrunk counterexample: {path})"
        figures["counterexample"] = str(path)
        figures["property"] = failure.name
    figures["examples"] = state["examples"]
    return Measurement(figures, pair.target.fidelity, flags=flags)
