"""The worker's language-model operations on the example's real models (trained here, exported with
the ONNX Runtime GenAI model builder), through a real worker process."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import language_scores
from harness.backends.base import WorkerClient, WorkerError
from harness.backends.local import LocalBackend
from harness.devices import load_profiles
from harness.runtimes import format_of

TIMEOUT = 120.0


@pytest.fixture(scope="module")
def worker(slm_models: Path) -> Iterator[WorkerClient]:
    client = WorkerClient(LocalBackend().start(load_profiles()["host"], [], 1), "host")
    client.request("hello", TIMEOUT, formats=["genai"])
    for name in ("slm-float", "slm-int4", "slm-random"):
        client.request(
            "load", TIMEOUT, model_id=name, path=str(slm_models / "models" / name), threads=1
        )
    yield client
    client.close()


def test_a_genai_folder_is_its_own_format(slm_models: Path, tmp_path: Path) -> None:
    assert format_of(slm_models / "models" / "slm-float") == "genai"
    with pytest.raises(ValueError, match="GenAI model folders"):
        format_of(tmp_path)  # a folder without genai_config.json


def test_the_trained_model_is_far_better_than_random_weights(
    worker: WorkerClient, slm_models: Path
) -> None:
    text = (slm_models / "data" / "valid.txt").read_text()
    figures = {}
    for name in ("slm-float", "slm-random"):
        result = worker.request(
            "perplexity", TIMEOUT, model_id=name, text=text, window=64, stride=32
        )
        assert len(result["nll"]) == result["tokens"] - 1  # every token but the first, once
        figures[name] = language_scores.perplexity(result["nll"])
    # Random weights spread probability over the whole vocabulary (480 tokens): a perplexity of
    # hundreds. The generated world's facts leave little to guess once learnt.
    assert figures["slm-float"] * 20 < figures["slm-random"]


def test_greedy_answers_are_deterministic_and_mostly_right(
    worker: WorkerClient, slm_models: Path
) -> None:
    from harness.language_config import load_prompts

    prompts = load_prompts(slm_models / "data" / "prompts.jsonl")
    texts = [p.prompt for p in prompts]
    first = worker.request("generate", TIMEOUT, model_id="slm-float", prompts=texts, new_tokens=8)
    again = worker.request("generate", TIMEOUT, model_id="slm-float", prompts=texts, new_tokens=8)
    assert first == again
    right = sum(
        language_scores.matches(language_scores.answer_of(r["text"]), p.expected, p.match)
        for p, r in zip(prompts, first["results"], strict=True)
    )
    random = worker.request("generate", TIMEOUT, model_id="slm-random", prompts=texts, new_tokens=8)
    guessed = sum(
        language_scores.matches(language_scores.answer_of(r["text"]), p.expected, p.match)
        for p, r in zip(prompts, random["results"], strict=True)
    )
    assert right > guessed and right >= len(prompts) // 2


def test_an_answer_stops_once_its_first_line_is_complete(
    worker: WorkerClient, slm_models: Path
) -> None:
    """The answers suite asks for the first line only: the same answers, fewer tokens."""
    from harness.language_config import load_prompts

    texts = [p.prompt for p in load_prompts(slm_models / "data" / "prompts.jsonl")][:12]
    whole = worker.request("generate", TIMEOUT, model_id="slm-float", prompts=texts,
                           new_tokens=16)["results"]  # fmt: skip
    line = worker.request("generate", TIMEOUT, model_id="slm-float", prompts=texts,
                          new_tokens=16, first_line=True)["results"]  # fmt: skip
    for a, b in zip(whole, line, strict=True):
        assert language_scores.answer_of(a["text"]) == language_scores.answer_of(b["text"])
        assert b["tokens"] == a["tokens"][: len(b["tokens"])]
    assert sum(len(b["tokens"]) for b in line) * 2 < sum(len(a["tokens"]) for a in whole)
    assert {b["finish"] for b in line} == {"stop"}


def test_prompts_beyond_the_context_are_refused_per_prompt(worker: WorkerClient) -> None:
    results = worker.request(
        "generate", TIMEOUT, model_id="slm-int4", prompts=["7 " * 400, "", "\x00\x1b"], new_tokens=4
    )["results"]
    assert "context of 256 tokens" in results[0]["error"]
    assert "shorten it" in results[0]["error"]
    assert all(len(r["tokens"]) <= 4 for r in results[1:])  # the others still answered


def test_timings_and_the_context_fill_come_from_inside_the_worker(
    worker: WorkerClient, slm_models: Path
) -> None:
    text = (slm_models / "data" / "valid.txt").read_text()
    bench = worker.request(
        "decode_bench",
        TIMEOUT,
        model_id="slm-int4",
        text=text,
        prompt_tokens=32,
        new_tokens=5,
        repeats=3,
    )
    assert len(bench["first_token_ns"]) == 3
    assert [len(steps) for steps in bench["step_ns"]] == [4, 4, 4]  # EOS does not stop it
    assert all(ns > 0 for steps in bench["step_ns"] for ns in steps)
    filled = worker.request(
        "fill_context", TIMEOUT, model_id="slm-int4", text=text, context_tokens=200, new_tokens=8
    )
    assert filled["context_tokens"] == 200 and filled["peak_kb"] > 0
    with pytest.raises(WorkerError, match="exceeds the model's context of 256"):
        worker.request(
            "decode_bench",
            TIMEOUT,
            model_id="slm-int4",
            text=text,
            prompt_tokens=250,
            new_tokens=10,
            repeats=1,
        )


def test_a_broken_model_folder_is_a_load_error(slm_models: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(slm_models / "models" / "slm-int4", broken)
    (broken / "model.onnx").write_bytes(b"not onnx")
    client = WorkerClient(LocalBackend().start(load_profiles()["host"], [], 1), "host")
    try:
        with pytest.raises(WorkerError, match="onnxruntime-genai cannot load"):
            client.request("load", TIMEOUT, model_id="x", path=str(broken), threads=1)
        assert client.request("memory", TIMEOUT)["peak_kb"] > 0  # the worker lives on
    finally:
        client.close()
