"""examples/slm's quality gates against the spread of its figures over training draws.

torch CPU training is not reproducible across machines, so the example's model retrained on a
fresh machine is another draw of the same training (issue 26: token agreement 0.842 here, 0.793
there, under a 0.8 gate). examples/slm/spread.py trains the example with several seeds and torch
thread counts and records each draw's quality figures in spread.json; these tests hold
harness.toml to them: every draw passes every quality gate with a margin, and the gates still
tell a damaging quantization (2-bit GGUF) from a harmless one (int8, Q8_0) in every draw.
"""

from __future__ import annotations

import importlib.util
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "slm"
# How far inside every draw a gate must sit (interval ends: the gates decide on those).
MARGIN_FRACTION = 0.02  # agreement, answer accuracy: absolute
MARGIN_RATIO = 1.25  # KL divergence: the gate at least this many times the worst draw
MARGIN_PERPLEXITY = 1.05  # perplexity: the gate at least 5% above the worst draw
MARGIN_PPL_RATIO = 0.01  # perplexity ratio: absolute


def spread() -> dict[str, Any]:
    document: dict[str, Any] = json.loads((EXAMPLE / "spread.json").read_text())
    return document


def gates() -> dict[str, dict[str, float]]:
    config = tomllib.loads((EXAMPLE / "harness.toml").read_text())
    return {m["name"]: m.get("gates", {}) for m in config["models"]}


def test_the_spread_was_measured_on_this_training() -> None:
    spec = importlib.util.spec_from_file_location("spread", EXAMPLE / "spread.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    document = spread()
    assert document["training"] == module.training_digest(), (
        "examples/slm/train_model.py changed since spread.json was measured: run "
        "python examples/slm/spread.py and set harness.toml's gates from it"
    )
    seeds = {d["seed"] for d in document["draws"]}
    threads = {d["threads"] for d in document["draws"]}
    assert len(seeds) >= 3 and len(threads) >= 2  # several seeds and thread counts


def _meets(gate: str, threshold: float, figures: dict[str, float]) -> str | None:
    """Why `figures` do not meet `gate` with its margin (None: they do)."""
    checks = {
        "token_agreement_min": ("token_agreement_low", threshold + MARGIN_FRACTION, ">="),
        "answer_accuracy_min": ("answer_accuracy", threshold + MARGIN_FRACTION, ">="),
        "kld_mean_max": ("kld_mean_high", threshold / MARGIN_RATIO, "<="),
        "kld_p99_max": ("kld_p99_high", threshold / MARGIN_RATIO, "<="),
        "perplexity_max": ("perplexity", threshold / MARGIN_PERPLEXITY, "<="),
        "perplexity_ratio_max": ("perplexity_ratio_high", threshold - MARGIN_PPL_RATIO, "<="),
    }
    if gate not in checks:
        return None
    figure, bound, relation = checks[gate]
    value = figures[figure]
    held = value >= bound if relation == ">=" else value <= bound
    return None if held else f"{figure} {value:.4f} not {relation} {bound:.4f} ({gate})"


@pytest.mark.parametrize("model", ["slm-float", "slm-int4", "slm-f16", "slm-q4_k_m"])
def test_every_draw_passes_the_quality_gates_with_a_margin(model: str) -> None:
    problems = []
    for draw in spread()["draws"]:
        for gate, threshold in gates()[model].items():
            problem = _meets(gate, threshold, draw["figures"][model])
            if problem:
                problems.append(f"seed {draw['seed']}, {draw['threads']} threads: {problem}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(("model", "passes"), [("slm-int8", True), ("slm-q8_0", True),
                                               ("slm-q2_k", False)])  # fmt: skip
def test_the_gates_tell_a_damaging_quantization_from_a_harmless_one(
    model: str, passes: bool
) -> None:
    """The 4-bit GGUF model's quantization gates applied to the other variants, on their
    intervals as the gates decide: int8 and Q8_0 pass all three in every draw. Q2_K is never
    passed by the KL-divergence tail gate: its interval's high end lies above the gate in every
    draw (INCONCLUSIVE fails a session by default) and its low end too (FAIL) in all but one,
    where the 99th percentile from 80 windows is rough. Its mean and its top-1 agreement do not
    separate it from 4-bit on this model in every draw (docs/language-models.md)."""
    gates4 = gates()["slm-q4_k_m"]
    failed = 0
    for draw in spread()["draws"]:
        figures = draw["figures"][model]
        where = f"{model}, seed {draw['seed']}, {draw['threads']} threads: {figures}"
        if passes:
            assert figures["kld_mean_high"] <= gates4["kld_mean_max"], where
            assert figures["kld_p99_high"] <= gates4["kld_p99_max"], where
            assert figures["token_agreement_low"] >= gates4["token_agreement_min"], where
        else:
            assert figures["kld_p99_high"] > gates4["kld_p99_max"], where  # never a PASS
            failed += figures["kld_p99_low"] > gates4["kld_p99_max"]
    if not passes:
        assert failed >= len(spread()["draws"]) - 1
