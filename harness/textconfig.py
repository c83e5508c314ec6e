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


@dataclass(frozen=True)
class GenerateSettings:
    prompt_tokens: int = 32  # the prompt length time to first token is measured at
    new_tokens: int = 16  # tokens generated per prompt (answers) and per timed run
    context_tokens: int = 128  # peak memory is read after generating to this length
    window: int = 64  # perplexity: tokens per window
    stride: int = 32  # perplexity: windows' ends move by `stride` (< window) tokens
    emulated_runs: int = 2  # timed runs on emulated devices (each: prefill + new_tokens steps)


@dataclass(frozen=True)
class Prompt:
    prompt: str
    expected: str
    match: str = "exact"


def parse_generate(table: Any, where: str) -> GenerateSettings:
    expect_type(table, dict, where, "generate")
    check_keys(table, [f.name for f in fields(GenerateSettings)], f"{where}, generate")
    for key, value in table.items():
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
