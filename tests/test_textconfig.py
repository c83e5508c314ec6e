"""Config of language models: [models.generate], text, prompt sets, and their error messages."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from harness.config import GenerateSettings, RobustnessSettings, load_config
from harness.errors import ConfigError
from harness.registry import suites_for

MODEL = """
[[models]]
name = "lm"
task = "generate"
path = "lm"
text = "valid.txt"
prompts = "prompts.jsonl"
"""


def write(tmp_path: Path, extra: str = "", prompts: list[str] | None = None) -> Path:
    folder = tmp_path / "lm"
    folder.mkdir(exist_ok=True)
    (folder / "genai_config.json").write_text("{}")
    (tmp_path / "valid.txt").write_text("1 plus 1 is 2.\n")
    lines = (
        prompts if prompts is not None else [json.dumps({"prompt": "1 plus 1 is", "expected": "2"})]
    )
    (tmp_path / "prompts.jsonl").write_text("\n".join(lines) + "\n")
    config = tmp_path / "harness.toml"
    config.write_text(MODEL + extra)
    return config


def test_a_language_model_gets_its_text_prompts_settings_and_suites(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[models.generate]\nwindow = 32\nstride = 16\n"))
    model = config.models[0]
    assert model.problems == ()
    assert model.text == (tmp_path / "valid.txt").resolve()
    assert model.prompts[0].prompt == "1 plus 1 is" and model.prompts[0].match == "exact"
    assert model.generate == GenerateSettings(window=32, stride=16)
    with_examples = replace(config, robustness=RobustnessSettings(examples=5))
    assert [s.name for s in suites_for(model, with_examples)] == [
        "size",
        "operators",
        "perplexity",
        "answers",
        "generation",
        "memory",
        "prompt_robustness",
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", r"prompts.jsonl:1: not a JSON object"),
        (json.dumps({"prompt": "a"}), r'prompts.jsonl:1: missing "expected"'),
        (json.dumps({"prompt": "a", "expected": "b", "match": "fuzzy"}), "not one of exact"),
        (json.dumps({"prompt": "a", "expected": "(", "match": "regex"}), "not a valid regex"),
        (json.dumps({"prompt": "a", "expected": "b", "answer": "c"}), "unknown key 'answer'"),
    ],
)
def test_a_malformed_prompt_line_is_named(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, prompts=[line]))


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("window = 32\nstride = 32\n", "stride < window"),
        ("prompt_tokens = 100\nnew_tokens = 40\n", "exceeds context_tokens = 128"),
        ("new_tokens = 0\n", "must be a positive integer"),
        ("new_tokens = 1\n", "need at least 2"),
        ("windows = 3\n", "did you mean 'window'"),
    ],
)
def test_impossible_generate_settings_are_refused(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, "[models.generate]\n" + table))


def test_a_folder_without_genai_config_is_a_problem_of_that_model(tmp_path: Path) -> None:
    config = write(tmp_path)
    (tmp_path / "lm" / "genai_config.json").unlink()
    (problem,) = load_config(config).models[0].problems
    assert "has no genai_config.json" in problem


def test_text_settings_on_a_classifier_ask_for_the_task(tmp_path: Path) -> None:
    config = tmp_path / "harness.toml"
    config.write_text('[[models]]\nname = "m"\npath = "m.onnx"\ntext = "valid.txt"\n')
    with pytest.raises(ConfigError, match='add task = "generate"'):
        load_config(config)
