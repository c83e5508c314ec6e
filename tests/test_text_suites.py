"""Language-model suites around a stub worker: the prompt properties catch what they promise, and an
OOM at the context length is a failing memory figure; a GenAI folder's operators are read from its
decoder graph. The real worker runs them in test_slm_example.py; what is tested here is the
checking around it."""

from __future__ import annotations

import time
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
    from types import SimpleNamespace

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
        target = SimpleNamespace(fidelity="measured")
        baseline = BaselineContext()
        hello = {"empty_peak_kb": 60 * 1024}
        loaded = {"peak_kb": 300 * 1024}  # loaded, within the board's RAM
        client = None  # the pair's worker is not running: the fresh one keys the cache

        def __init__(self) -> None:
            self.profile = profile
            self.worker = self  # the pair's worker: this stub answers for both

        def answer_key(self, base: bool) -> dict[str, Any]:
            return {"stub": id(self)}  # nothing kept from another test

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


MB = 1024  # kB


class EmulatedLmPair:
    """A language model's pair on an emulated board, as the memory suite sees it: the pair's
    worker and the fresh worker it fills are this one stub (an empty worker 60 MB under QEMU,
    40 MB natively); `key` keys the board's cache, `running` says whether the pair's worker
    runs (then it keys the cache, else the fresh worker, started first). Subclasses answer
    `request` (the fill)."""

    def __init__(
        self, device: str, path: str, load_mb: int, key: object, running: bool = False
    ) -> None:
        from types import SimpleNamespace

        from harness.baseline import BaselineContext
        from harness.config import ModelSpec
        from harness.devices import load_profiles
        from harness.language_config import GenerateSettings

        self.model = ModelSpec(
            "lm", Path(path), task="generate", text=Path(__file__), generate=GenerateSettings()
        )
        self.profile = load_profiles()[device]
        self.target = SimpleNamespace(fidelity="emulated")
        self.baseline = BaselineContext()
        self.shared = SimpleNamespace(native_empty_peak_kb=lambda formats, files: 40 * MB)
        self.hello = {"empty_peak_kb": 60 * MB}
        self.loaded = {"peak_kb": load_mb * MB, "context_length": 512}
        self.client = "running" if running else None
        self.key = key

    @property
    def worker(self) -> EmulatedLmPair:
        return self

    def answer_key(self, base: bool) -> dict[str, Any]:
        return {"stub": self.key}

    def other(self, model: object) -> EmulatedLmPair:
        return self

    def start(self) -> None:
        return None

    def close(self) -> None:
        return None


@pytest.mark.parametrize(
    ("load_mb", "filled_mb", "reason"),
    [
        (1000, None, "peak 980 MB after loading the model exceeds the 512 MB of rpi-zero-2w"),
        (300, 1060, "peak 1040 MB at a context of 128 tokens exceeds the 512 MB of rpi-zero-2w"),
        (300, 400, None),  # the board estimate, 380 MB, fits
    ],
)
def test_a_peak_above_the_boards_ram_fails_the_memory_gate_with_the_figure(
    load_mb: int, filled_mb: int | None, reason: str | None
) -> None:
    """A worker that lives on above the board's RAM (a mmapped GGUF file in the host's page
    cache is not charged to the container) fails the memory gate with its figure, whatever the
    gate's threshold: the model does not fit on the board. Above it after loading, the context
    is not filled (minutes under QEMU, and it only adds). The pair is a stub; emulated figures
    are QEMU's (an empty worker 60 MB there, 40 MB natively: the board estimate is 20 MB less)."""
    from dataclasses import replace

    from harness.config import GateSpec
    from harness.devices import load_profiles
    from harness.gates import FAIL, PASS, decide
    from harness.suites import context_memory

    profile = load_profiles()["rpi-zero-2w"]
    filled: list[int] = []

    class FitPair(EmulatedLmPair):
        def request(self, op: str, **arguments: Any) -> dict[str, Any]:
            assert filled_mb is not None, "filled the context above the board's RAM"
            filled.append(filled_mb)
            return {"peak_kb": filled_mb * MB, "context_tokens": 128}

    gates = replace(GateSpec(), memory_peak_mb_max=3500.0)  # a threshold far above the board
    stub = FitPair("rpi-zero-2w", "lm.gguf", load_mb, [load_mb, filled_mb, time.time_ns()])
    measured = context_memory.measure(stub)  # type: ignore[arg-type]
    assert measured.figures["board_peak_mb"] == (filled_mb or load_mb) - 20
    verdict = decide(
        "memory", measured.figures, gates, profile.name, measured.fidelity, measured.flags
    )
    if reason is None:
        assert verdict.status == PASS and not measured.flags
    else:
        assert verdict.status == FAIL
        assert verdict.reasons[0] == f"{reason}: the model does not fit"
    assert filled == ([] if filled_mb is None else [filled_mb])


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


def test_the_board_sample_holds_the_window_that_priced_it() -> None:
    """The first window (or prompt) prices the others and is answered before the sample is
    drawn: it is one of the sample, so the board answers `wanted` parts, not one more."""
    from types import SimpleNamespace

    from harness.suites.textwork import MIN_WINDOWS, board_sample

    def pair(budget_s: float, seed: int = 0) -> Any:
        config = SimpleNamespace(plan=SimpleNamespace(budget_s=budget_s), seed=seed)
        return SimpleNamespace(config=config)

    assert board_sample(pair(60), 5, 10.0) == [0, 1, 2, 3, 4]  # all fit
    for seed in range(20):
        chosen = board_sample(pair(30, seed), 40, 10.0)  # three fit
        assert chosen[0] == 0 and len(chosen) == len(set(chosen)) == 3
        assert all(0 < w < 40 for w in chosen[1:]) and chosen == sorted(chosen)
    assert board_sample(pair(60), 40, 457.0)[0] == 0  # none fit: the least that says anything
    assert len(board_sample(pair(60), 40, 457.0)) == MIN_WINDOWS
    assert {tuple(board_sample(pair(30, s), 40, 10.0)) for s in range(20)} != {(0, 1, 2)}


def test_an_emulated_boards_filled_context_is_kept_for_the_next_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Filling a field-scale context under QEMU costs minutes: the second session on the same
    emulated board (same key) reads the figures and starts no worker; another key fills again."""

    from harness.suites import context_memory

    monkeypatch.setenv("HARNESS_ANSWERS_CACHE", str(tmp_path))
    starts: list[object] = []

    class Board(EmulatedLmPair):
        def start(self) -> None:
            starts.append(self.key)

        def request(self, op: str, **arguments: Any) -> dict[str, Any]:
            return {"peak_kb": 300 * MB, "context_tokens": 128, "fill_s": 600.0}

    def session(key: str) -> Board:  # the pair's worker runs (other items started it)
        return Board("rpi4", "lm.onnx", 200, key, running=True)

    cold = context_memory.measure(session("a"))  # type: ignore[arg-type]
    warm = context_memory.measure(session("a"))  # type: ignore[arg-type]
    other = context_memory.measure(session("b"))  # type: ignore[arg-type]
    assert starts == ["a", "b"]  # the warm session started no fresh worker
    assert warm.figures["board_peak_mb"] == cold.figures["board_peak_mb"] == 280.0
    assert warm.figures["load_peak_mb"] == 200.0 and warm.fidelity == "emulated"
    assert "in an earlier session (600 s; from cache" in warm.figures["measured_in"]
    assert "earlier session" not in cold.figures["measured_in"] + other.figures["measured_in"]
