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
        ('kv_cache = "q5"\n', "kv_cache = 'q5' is not one of f16, q8_0, q4_0, f32"),
        ("kv_cache = 8\n", "kv_cache must be str"),
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


def test_a_gguf_file_is_a_language_model_and_a_stray_file_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "lm.gguf").write_bytes(b"GGUF" + bytes(60))
    (tmp_path / "fake.gguf").write_bytes(b"NOPE")
    (tmp_path / "valid.txt").write_text("1 plus 1 is 2.\n")
    config = tmp_path / "harness.toml"
    entries = "".join(
        f'[[models]]\nname = "{name}"\ntask = "generate"\npath = "{name}.gguf"\n'
        'text = "valid.txt"\n[models.generate]\nkv_cache = "q8_0"\n'
        for name in ("lm", "fake", "missing")
    )
    config.write_text(entries)
    lm, fake, missing = load_config(config).models
    assert lm.problems == () and lm.generate is not None and lm.generate.kv_cache == "q8_0"
    # llama.cpp is given the longest context any suite uses
    assert lm.generate.text_options() == {"context": 128, "kv_cache": "q8_0"}
    assert "not a GGUF file" in fake.problems[0]
    assert "does not exist" in missing.problems[0]
    assert [s.name for s in suites_for(lm, load_config(config))][:2] == ["size", "perplexity"]


def test_a_changed_kv_cache_is_a_change_the_policy_lists(tmp_path: Path) -> None:
    from harness.identity import model_sha256
    from harness.policy import config_changes

    def digest(path: Path) -> str:
        return model_sha256(path)  # files and model folders alike

    before = load_config(write(tmp_path, '[models.generate]\nkv_cache = "f16"\n'))
    after = load_config(write(tmp_path, '[models.generate]\nkv_cache = "q4_0"\n'))
    changes = config_changes(before, after, digest, digest)
    assert any("kv_cache" in str(c) and "q4_0" in str(c) for c in changes), changes
