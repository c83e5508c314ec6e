"""Config of language models (`task = "generate"`): the `[models.generate]` settings, the text
file perplexity is measured on and the prompt set, parsed and checked once.

A prompt set is JSON lines, one object per line: {"prompt": ..., "expected": ..., "match": "exact" |
"contains" | "regex"} (match defaults to "exact"). Mistakes name the file, the line and the fix.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, check_keys, expect_type

MATCHES = ("exact", "contains", "regex")
KV_CACHE_TYPES = ("f16", "q8_0", "q4_0", "f32")  # llama.cpp's KV-cache types (GGUF models)
GENAI_CONFIG = "genai_config.json"  # what makes a folder an ONNX Runtime GenAI model
GGUF_SUFFIX = ".gguf"  # a llama.cpp model file


@dataclass(frozen=True)
class GenerateSettings:
    prompt_tokens: int = 32  # the prompt length time to first token is measured at
    new_tokens: int = 16  # tokens generated per prompt (answers) and per timed run
    context_tokens: int = 128  # peak memory is read after generating to this length
    window: int = 64  # perplexity: tokens per window
    stride: int = 32  # perplexity: windows' ends move by `stride` (< window) tokens
    emulated_runs: int = 2  # timed runs on emulated devices (each: prefill + new_tokens steps)
    kv_cache: str = "f16"  # GGUF through llama.cpp: the KV cache's type (it moves answers)
    # Seconds of timed runs per generation item (latency.time_budget_s is the one-pass models'):
    # a p90 needs ~30 prefills, 0.2-0.5 s each for a 135M-500M decoder on one core. The item
    # stops as soon as its gates are decided, so a small model spends far less.
    time_budget_s: float = 30.0

    @property
    def runtime_context(self) -> int:
        """The context a runtime that allocates it at load (llama.cpp) is given: the longest any
        suite uses (llama.cpp rounds it up to a multiple of 256)."""
        return max(self.context_tokens, self.window, self.prompt_tokens + self.new_tokens)

    def text_options(self) -> dict[str, Any]:
        """The load request's runtime options (harness.runtimes.language.TextOptions)."""
        return {"context": self.runtime_context, "kv_cache": self.kv_cache}


@dataclass(frozen=True)
class Prompt:
    prompt: str
    expected: str
    match: str = "exact"


def language_model_problem(path: Path) -> str | None:
    """Why `path` is not a language model harness runs (None: it is one): an ONNX Runtime GenAI
    folder (with genai_config.json) or a GGUF file (llama.cpp)."""
    if path.suffix.lower() == GGUF_SUFFIX:
        if not path.is_file():
            return f"GGUF file {path} does not exist"
        with open(path, "rb") as handle:
            if handle.read(4) != b"GGUF":
                return f"{path} is not a GGUF file (it does not start with the GGUF magic)"
        return None
    if not (path / GENAI_CONFIG).is_file():
        return (
            f"model folder {path} has no {GENAI_CONFIG} (a language model is an ONNX Runtime "
            "GenAI folder or a .gguf file)"
        )
    return None


def is_language_model(path: Path) -> bool:
    return language_model_problem(path) is None


def parse_generate(table: Any, where: str) -> GenerateSettings:
    expect_type(table, dict, where, "generate")
    check_keys(table, [f.name for f in fields(GenerateSettings)], f"{where}, generate")
    for key, value in table.items():
        if key == "time_budget_s":
            expect_type(value, (int, float), f"{where}, generate", key)
            if not value > 0:
                raise ConfigError(f"{where}: generate.time_budget_s = {value} must be positive")
            continue
        if key == "kv_cache":
            expect_type(value, str, f"{where}, generate", key)
            if value not in KV_CACHE_TYPES:
                raise ConfigError(
                    f"{where}: generate.kv_cache = {value!r} is not one of "
                    f"{', '.join(KV_CACHE_TYPES)} (llama.cpp's KV-cache types)"
                )
            continue
        expect_type(value, int, f"{where}, generate", key)
        if value < 1:
            raise ConfigError(f"{where}: generate.{key} = {value} must be a positive integer")
    settings = GenerateSettings(**table)
    if settings.new_tokens < 2:
        raise ConfigError(
            f"{where}: generate.new_tokens = {settings.new_tokens}: need at least 2 (the first "
            "token's time is the time to first token; decode steps come after it)"
        )
    if settings.stride >= settings.window or settings.window < 2:
        raise ConfigError(
            f"{where}: generate.window = {settings.window}, stride = {settings.stride}: need "
            "window >= 2 and stride < window (every token scored once, with context)"
        )
    if settings.prompt_tokens + settings.new_tokens > settings.context_tokens:
        raise ConfigError(
            f"{where}: generate.prompt_tokens + new_tokens = "
            f"{settings.prompt_tokens + settings.new_tokens} exceeds context_tokens = "
            f"{settings.context_tokens}; raise context_tokens or lower the others"
        )
    return settings


def load_prompts(path: Path) -> tuple[Prompt, ...]:
    """The prompt set at `path`; ConfigError naming the line for anything malformed."""
    prompts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: not a JSON object ({exc.msg})") from None
        expect_type(entry, dict, where, "each line")
        check_keys(entry, ["prompt", "expected", "match"], where)
        for key in ("prompt", "expected"):
            if key not in entry:
                raise ConfigError(f'{where}: missing "{key}"; each line needs prompt and expected')
            expect_type(entry[key], str, where, key)
        match = entry.get("match", "exact")
        if match not in MATCHES:
            raise ConfigError(f"{where}: match {match!r} is not one of {', '.join(MATCHES)}")
        if match == "regex":
            try:
                re.compile(entry["expected"])
            except re.error as exc:
                raise ConfigError(f"{where}: expected is not a valid regex: {exc}") from None
        prompts.append(Prompt(entry["prompt"], entry["expected"], match))
    if not prompts:
        raise ConfigError(f"{path}: no prompts; add JSON lines with prompt and expected")
    return tuple(prompts)
