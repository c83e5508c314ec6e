"""The prompt properties catch what they promise to catch. The worker's side is a stub here (the
real worker runs them in test_slm_example.py); what is tested is the checking around it."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings

from harness.backends.base import WorkerCrashed
from harness.suites.prompt_robustness import PropertyFailure, check_prompt, prompts_strategy

CONTEXT = 16


class StubPair:
    """Answers `generate` like a worker would, with one fault switched on."""

    def __init__(self, fault: str = "") -> None:
        self.fault = fault
        self.calls = 0

    def request(self, op: str, **arguments: Any) -> dict[str, Any]:
        self.calls += 1
        if self.fault == "crash":
            raise WorkerCrashed("worker on host: killed by SIGSEGV")
        results = []
        for index, prompt in enumerate(arguments["prompts"]):
            tokens = len(prompt.split()) or 1
            if tokens >= CONTEXT:
                error = "too long" if self.fault == "vague" else f"no room in {CONTEXT} tokens"
                results.append({"prompt_tokens": tokens, "error": error})
                continue
            out = [1] * arguments["new_tokens"]
            if self.fault == "random" and index == 1:
                out = [2] * arguments["new_tokens"]
            if self.fault == "overrun":
                out = [1] * (CONTEXT + 1)
            results.append({"prompt_tokens": tokens, "tokens": out, "text": "x"})
        return {"results": results}


@pytest.mark.parametrize(
    ("fault", "prompt", "name"),
    [
        ("crash", "hello", "answers"),
        ("random", "hello", "deterministic"),
        ("overrun", "hello", "context"),
        ("vague", "w " * 40, "context"),
    ],
)
def test_each_property_catches_its_fault(fault: str, prompt: str, name: str) -> None:
    with pytest.raises(PropertyFailure) as caught:
        check_prompt(StubPair(fault), prompt, 4, CONTEXT)  # type: ignore[arg-type]
    assert caught.value.name == name


@settings(max_examples=50, database=None)
@given(prompts_strategy(CONTEXT))
def test_a_well_behaved_worker_passes_every_generated_prompt(prompt: str) -> None:
    check_prompt(StubPair(), prompt, 4, CONTEXT)  # type: ignore[arg-type]
