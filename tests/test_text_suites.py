"""Language-model suites around a stub worker: the prompt properties catch what they promise, and an
OOM at the context length is a failing memory figure; a GenAI folder's operators are read from its
decoder graph. The real worker runs them in test_slm_example.py; what is tested here is the
checking around it."""

from __future__ import annotations

from pathlib import Path
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


def test_oom_while_filling_the_context_is_a_failing_memory_figure() -> None:
    """A worker killed for memory at the context length fails the memory gate with the reason
    (the pair around the worker is a stub; the decision is the real one)."""
    from dataclasses import replace
    from pathlib import Path

    from harness.baseline import BaselineContext
    from harness.config import GateSpec, ModelSpec
    from harness.devices import load_profiles
    from harness.gates import FAIL, decide
    from harness.language_config import GenerateSettings
    from harness.suites import context_memory

    profile = load_profiles()["rpi-zero-2w"]

    class OomPair:
        model = ModelSpec(
            "lm", Path("lm"), task="generate", text=Path(__file__), generate=GenerateSettings()
        )
        target = object()
        baseline = BaselineContext()

        def __init__(self) -> None:
            self.profile = profile
            self.worker = self  # the pair's worker: this stub answers for both

        def other(self, model: ModelSpec) -> OomPair:
            return self  # the fresh worker the memory suite fills: this stub too

        def start(self) -> None:
            return None

        def close(self) -> None:
            return None

        def request(self, op: str, **arguments: Any) -> dict[str, Any]:
            raise WorkerCrashed("worker on rpi-zero-2w OOM-killed at 512 MB (rpi-zero-2w)")

    measured = context_memory.measure(OomPair())  # type: ignore[arg-type]
    assert measured.flags["oom"] is True
    assert "at a context of 128 tokens" in measured.flags["failure"]
    gates = replace(GateSpec(), memory_peak_mb_max=300.0)
    verdict = decide(
        "memory", measured.figures, gates, profile.name, measured.fidelity, measured.flags
    )
    assert verdict.status == FAIL and "OOM-killed at 512 MB" in verdict.reasons[0]


def test_a_genai_folder_is_checked_through_its_decoder_graph(slm_models: Path) -> None:
    import onnxruntime

    from harness.operators import check, read_operators
    from harness.suites.operators import _graph

    folder = slm_models / "models" / "slm-int4"
    model = read_operators(_graph(folder))
    used = {(use.domain, use.name) for use in model.operators}
    # onnxruntime's own operators: contrib ones and one it defines in the standard domain.
    assert {("com.microsoft", "MatMulNBits"), ("", "SimplifiedLayerNormalization")} <= used
    assert check(model, "onnxruntime", onnxruntime.__version__) == []


def test_a_text_is_scored_in_requests_of_a_few_seconds_with_progress_between(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The suites ask for windows a few seconds' worth at a time (no request near timeout_s,
    a progress line between requests), and put the parts back together in window order."""
    import numpy as np

    from harness.config import ModelSpec
    from harness.language_config import GenerateSettings
    from harness.suites import textwork

    clock = [0.0]
    monkeypatch.setattr(textwork.time, "monotonic", lambda: clock[0])
    asked: list[list[int]] = []

    def request(op: str, **arguments: Any) -> dict[str, Any]:
        windows = arguments["windows"]
        asked.append(windows)
        clock[0] += 2.5 * len(windows)  # each window costs 2.5 s
        return {"tokens": 400, "windows": 12, "chosen": windows, "counts": [3] * len(windows),
                "nll": np.repeat(np.asarray(windows, dtype=float), 3)}  # fmt: skip

    model = ModelSpec("lm", Path("lm"), task="generate", text=Path(__file__),
                      generate=GenerateSettings())  # fmt: skip
    seen: list[tuple[str, int, int]] = []
    result = textwork.scored(request, "perplexity", model, None, lambda *a: seen.append(a))
    assert asked[0] == [0] and all(len(a) <= 4 for a in asked)  # 10 s / 2.5 s per window
    assert result["chosen"] == list(range(12)) and result["counts"] == [3] * 12
    assert list(result["nll"]) == [float(w) for w in range(12) for _ in range(3)]
    assert seen[-1] == ("windows", 12, 12) and len(seen) == len(asked) - 1
