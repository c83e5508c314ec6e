"""Nights for the history tests: the digits example's real host results (tests/test_reports.py
measures them once per session) plus stand-ins for what a nightly adds that the host run has
not: a language model's generation and perplexity items (the generation suite's own figure
builder over decode timings) and a counted instructions item. Night 2 plants a 30% drop in
tokens per second (every decode step 10/7 as long) and a 2% rise in counted instructions;
everything timed moves by under the drift one run may show (3%)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np

from harness.suites.generation import _figures as generation_figures

INSTRUCTIONS = 1_250_000.0  # counted per inference on night 1
PERPLEXITY = 18.25


def _record(suite: str, model: str, device: str, fidelity: str, figures: dict[str, Any]) -> dict:
    return {
        "nodeid": f"harness.toml::{suite}[{model}@{device}]",
        "suite": suite,
        "model": model,
        "device": device,
        "model_path": None,
        "fidelity": fidelity,
        "verdict": {"status": "PASS", "checks": [], "reasons": []},
        "flags": {},
        "figures": figures,
        "raw": {},
        "worker": {"versions": {"onnxruntime-genai": "0.11.2"}, "limits": {}},
        "error": None,
    }


def language_model_records(night: int) -> list[dict[str, Any]]:
    """generation, perplexity (slm-int4 on the host) and instructions (digits-onnx on rpi4,
    counted) as their suites report them; night 2 with the planted moves."""
    rng = np.random.default_rng(7)  # the same draws each night: only the plant differs
    slow = 10 / 7 if night == 2 else 1.0
    first = [int(v) for v in rng.normal(31e6, 4e5, 12)]
    steps = [int(v * slow) for v in rng.normal(20e6, 2e5, 240)]
    generation = generation_figures(first, steps, 0.95, prompt_tokens=32)
    perplexity = {"perplexity": PERPLEXITY, "tokens_scored": 512, "window": 128, "stride": 64}
    counted = INSTRUCTIONS * (1.02 if night == 2 else 1.0)
    instructions = {"instructions_per_inference": counted, "n": 3}
    return [
        _record("generation", "slm-int4", "host", "measured", generation),
        _record("perplexity", "slm-int4", "host", "measured", perplexity),
        _record("instructions", "digits-onnx", "rpi4", "counted", instructions),
    ]


def night_document(example: Path, night: int, commit: str) -> dict[str, Any]:
    """The example's results as night `night` (1 or 2) at `commit`, with the stand-ins."""
    document: dict[str, Any] = json.loads(example.read_text())
    document = copy.deepcopy(document)
    document["created"] = f"2026-11-0{night}T03:17:00Z"
    document["git"] = {"commit": commit, "ref": "refs/heads/main"}
    wobble = 1.03 if night == 2 else 1.0  # within what one run may drift
    for record in document["results"]:
        for key in ("p50_ms", "p90_ms", "peak_mb", "board_peak_mb"):
            if isinstance(record["figures"].get(key), float):
                record["figures"][key] *= wobble
    document["results"] += language_model_records(night)
    return document
