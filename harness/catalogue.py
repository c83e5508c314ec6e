"""The catalogue: every gate and every headline or gated figure, written once.

A gate is a config key under `gates` (and per-device overrides): the figure it reads, the suite
that reports it, whether the figure must stay at most (`max`) or at least (`min`) the threshold,
whether the threshold is a fraction in [0, 1], and whether it compares with a baseline
(`relative`). A figure is a number a suite reports: its unit, digits, label, and which way is
better (+1 higher, -1 lower, 0 not judged: a count of samples, say).

`config` (the gate keys it accepts and checks), `gates` (the rules' figures, units, digits and
comparisons), `policy` (whether a changed threshold is stricter), the history's trends and the
registry's headlines all read this module; tests/test_catalogue.py fails when a gate or a
headline figure is used without an entry here. Ground floor: it imports nothing of harness.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "FIGURES",
    "GATES",
    "HIGHER",
    "LOWER",
    "NOISE_FLOOR",
    "UNJUDGED",
    "Figure",
    "Gate",
    "VARY",
    "direction",
    "entry",
    "exact",
    "gate",
    "gates_of",
]

HIGHER, LOWER, UNJUDGED = 1, -1, 0  # which way a figure is better
# The smallest relative change a report calls a change, and the history a step: below it, two
# runs of the same model on a shared machine differ by noise alone.
NOISE_FLOOR = 0.02


@dataclass(frozen=True)
class Figure:
    name: str
    suite: str  # the suite whose records carry it
    better: int  # HIGHER, LOWER or UNJUDGED
    unit: str = ""  # "ms", "MB", "kB", "" (a plain number or a fraction)
    digits: int = 4  # decimals a gate message prints
    label: str = ""  # how messages name it (default: the name with spaces)

    @property
    def title(self) -> str:
        return self.label or self.name.replace("_", " ")


@dataclass(frozen=True)
class Gate:
    name: str  # the config key
    suite: str  # the suite whose items it decides
    figure: str  # the figure it reads (for a relative gate: the comparison's figure)
    bound: str  # "max": the figure must not exceed the threshold; "min": not fall below it
    fraction: bool = False  # the threshold is a fraction in [0, 1]
    relative: bool = False  # compares with a baseline (--baseline)
    meaning: str = ""  # what the threshold bounds, in a few words (config.GateSpec's help)
    default: float | None = None  # the threshold when the config sets none (None: not applied)

    @property
    def stricter(self) -> int:
        """Which way of changing the threshold lets less through: HIGHER for `min` gates,
        LOWER for `max` gates."""
        return HIGHER if self.bound == "min" else LOWER

    def tightened(self, before: float, after: float) -> bool:
        """True when `after` lets no more through than `before`."""
        return after >= before if self.bound == "min" else after <= before


def _figures(*entries: Figure) -> Mapping[str, Figure]:
    return {f.name: f for f in entries}


FIGURES: Mapping[str, Figure] = _figures(
    Figure("size_kb", "size", LOWER, "kB", 1, "size"),
    Figure("errors", "operators", LOWER, digits=0, label="operator errors"),
    Figure("accuracy", "accuracy", HIGHER),
    Figure("mae", "accuracy", LOWER, label="MAE"),
    Figure("nonfinite", "accuracy", LOWER, digits=0, label="samples with non-finite outputs"),
    Figure("accuracy_drop", "accuracy", LOWER, label="accuracy drop"),
    Figure("host_agreement", "accuracy", HIGHER, label="top-1 agreement with host"),
    Figure("p50_ms", "latency", LOWER, "ms", 3, "latency p50"),
    Figure("p90_ms", "latency", LOWER, "ms", 3, "latency p90"),
    Figure("p99_ms", "latency", LOWER, "ms", 3, "latency p99"),
    Figure("estimated_ms", "latency", LOWER, "ms", 3, "estimated latency"),
    Figure("ratio", "latency", LOWER, digits=4, label="latency ratio"),
    Figure("peak_mb", "memory", LOWER, "MB", 1, "memory peak"),
    Figure("board_peak_mb", "memory", LOWER, "MB", 1, "board memory peak"),
    Figure("model_share_mb", "memory", LOWER, "MB", 1, "model share"),
    Figure("memory_growth", "memory", LOWER, label="memory growth"),
    Figure("parity_top1", "parity", HIGHER, label="parity top-1 agreement"),
    Figure("parity_max_abs_error", "parity", LOWER, digits=5, label="parity max abs error"),
    Figure("parity_cosine_min", "parity", HIGHER, digits=5, label="parity cosine min"),
    Figure("device_top1", "parity", HIGHER, label="top-1 agreement with host"),
    Figure("device_max_abs_error", "parity", LOWER, digits=6, label="max abs error vs host"),
    Figure("device_cosine_min", "parity", HIGHER, digits=6, label="cosine min vs host"),
    Figure("examples", "robustness", UNJUDGED, digits=0, label="generated inputs"),
    Figure("instructions_per_inference", "instructions", LOWER, digits=1),
    Figure("instructions_ratio", "instructions", LOWER, label="instructions ratio"),
    Figure("loosened", "policy", LOWER, digits=0, label="gates loosened"),
    # language models (task = "generate")
    Figure("perplexity", "perplexity", LOWER, digits=3),
    Figure("perplexity_growth", "perplexity", LOWER, label="perplexity growth"),
    Figure("answer_accuracy", "answers", HIGHER, label="answer accuracy"),
    Figure("token_agreement", "token_parity", HIGHER, label="greedy token agreement"),
    Figure("perplexity_ratio", "token_parity", LOWER, label="perplexity ratio"),
    Figure("ttft_p90_ms", "generation", LOWER, "ms", 3, "time to first token p90"),
    Figure("decode_p90_ms", "generation", LOWER, "ms", 3, "decode p90 per token"),
    Figure("tokens_per_s", "generation", HIGHER, digits=1, label="tokens/s"),
    Figure("estimated_ttft_ms", "generation", LOWER, "ms", 3),
    Figure("estimated_decode_ms", "generation", LOWER, "ms", 3),
    Figure("estimated_tokens_per_s", "generation", HIGHER, digits=1),
    Figure("prefill_tokens_per_s", "generation", HIGHER, digits=1, label="prefill tokens/s"),
    Figure("kld_mean", "token_parity", LOWER, digits=5, label="KL divergence mean"),
    Figure("kld_p99", "token_parity", LOWER, digits=4, label="KL divergence p99"),
    # What else a record carries and the history keeps: the rest of a distribution, memory's
    # parts, sample counts and settings (UNJUDGED: neither better nor worse).
    Figure("n", "", UNJUDGED, digits=0, label="samples"),
    Figure("mean_ms", "latency", LOWER, "ms", 3, "latency mean"),
    Figure("min_ms", "latency", LOWER, "ms", 3, "latency min"),
    Figure("threads", "latency", UNJUDGED, digits=0),
    Figure("rounds", "latency", UNJUDGED, digits=0),
    Figure("interval_confidence", "", UNJUDGED, label="interval confidence"),
    Figure("size_bytes", "size", LOWER, digits=0, label="size in bytes"),
    Figure("empty_peak_mb", "memory", LOWER, "MB", 1, "empty worker peak"),
    Figure("native_empty_peak_mb", "memory", LOWER, "MB", 1, "native empty worker peak"),
    Figure("emulated_peak_mb", "memory", LOWER, "MB", 1, "emulated peak"),
    Figure("rss_after_load_mb", "memory", LOWER, "MB", 1, "RSS after load"),
    Figure("load_peak_mb", "memory", LOWER, "MB", 1, "peak after load"),
    Figure("limit_mb", "memory", UNJUDGED, "MB", 1, "device memory"),
    Figure("context_tokens", "memory", UNJUDGED, digits=0, label="context tokens"),
    Figure("agreement_n", "accuracy", UNJUDGED, digits=0, label="answers compared"),
    Figure("agreement_confidence", "accuracy", UNJUDGED, label="agreement confidence"),
    Figure("host_disagreements", "accuracy", LOWER, digits=0, label="disagreements with host"),
    Figure("host_max_abs_diff", "accuracy", LOWER, digits=6, label="max abs difference vs host"),
    Figure("max_abs_error", "accuracy", LOWER, digits=6, label="max abs error"),
    Figure("parity_n", "parity", UNJUDGED, digits=0, label="parity samples"),
    Figure("parity_cosine_mean", "parity", HIGHER, digits=5, label="parity cosine mean"),
    Figure("device_n", "parity", UNJUDGED, digits=0, label="samples vs host"),
    Figure("device_cosine_mean", "parity", HIGHER, digits=6, label="cosine mean vs host"),
    Figure("counterexamples", "robustness", LOWER, digits=0),
    Figure("tokens_scored", "perplexity", UNJUDGED, digits=0, label="tokens scored"),
    Figure("text_tokens", "perplexity", UNJUDGED, digits=0, label="text tokens"),
    Figure("window", "perplexity", UNJUDGED, digits=0),
    Figure("windows", "perplexity", UNJUDGED, digits=0),
    Figure("stride", "perplexity", UNJUDGED, digits=0),
    Figure("other_perplexity", "token_parity", LOWER, digits=3, label="base perplexity"),
    Figure("prompt_prefix_agreement", "token_parity", HIGHER, label="prompt prefix agreement"),
    Figure("runs", "generation", UNJUDGED, digits=0),
    Figure("prompt_tokens", "generation", UNJUDGED, digits=0, label="prompt tokens"),
    Figure("ttft_p50_ms", "generation", LOWER, "ms", 3, "time to first token p50"),
    Figure("ttft_mean_ms", "generation", LOWER, "ms", 3, "time to first token mean"),
    Figure("decode_p50_ms", "generation", LOWER, "ms", 3, "decode p50 per token"),
    Figure("decode_mean_ms", "generation", LOWER, "ms", 3, "decode mean per token"),
    Figure("estimate_instructions", "latency", LOWER, digits=0),
    Figure("estimate_instructions_prefill", "generation", LOWER, digits=0),
    Figure("estimate_instructions_per_step", "generation", LOWER, digits=0),
)

# Figures that move between two runs of one model on one testbed (wall-clock times, memory
# peaks): the history calls a move of theirs a level change only beyond that noise. Every other
# figure is exact: the same model, data and runtime give the same number (counts, accuracy on a
# fixed dataset, perplexity of a fixed text, estimates from counted instructions), so any move
# is one.
VARY: frozenset[str] = frozenset(
    {
        *("p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "ratio"),
        *("ttft_p50_ms", "ttft_p90_ms", "ttft_mean_ms", "decode_p50_ms", "decode_p90_ms"),
        *("decode_mean_ms", "tokens_per_s", "prefill_tokens_per_s"),
        *("peak_mb", "board_peak_mb", "model_share_mb", "memory_growth", "empty_peak_mb"),
        *("native_empty_peak_mb", "emulated_peak_mb", "rss_after_load_mb", "load_peak_mb"),
    }
)


def _gates(*entries: Gate) -> Mapping[str, Gate]:
    return {g.name: g for g in entries}


GATES: Mapping[str, Gate] = _gates(
    Gate(
        "accuracy_min",
        "accuracy",
        "accuracy",
        "min",
        fraction=True,
        meaning="fraction correct (top-1)",
    ),
    Gate(
        "accuracy_max_drop",
        "accuracy",
        "accuracy_drop",
        "max",
        fraction=True,
        relative=True,
        meaning="vs baseline, absolute fraction",
    ),
    Gate("mae_max", "accuracy", "mae", "max", meaning="regression outputs: mean absolute error"),
    Gate(
        "nonfinite_max",
        "accuracy",
        "nonfinite",
        "max",
        meaning="samples with NaN or infinite outputs (set by default: NaN fails)",
        default=0.0,
    ),
    Gate(
        "latency_p90_ms_max", "latency", "p90_ms", "max", meaning="measured/estimated figures only"
    ),
    Gate(
        "latency_max_regression",
        "latency",
        "ratio",
        "max",
        relative=True,
        meaning="vs baseline, fraction (0.05 = +5%)",
    ),
    Gate(
        "memory_peak_mb_max",
        "memory",
        "peak_mb",
        "max",
        meaning="peak memory of the model's worker",
    ),
    Gate(
        "memory_max_growth",
        "memory",
        "memory_growth",
        "max",
        relative=True,
        meaning="vs baseline, fraction",
    ),
    Gate(
        "instructions_max_regression",
        "instructions",
        "instructions_ratio",
        "max",
        relative=True,
        meaning="vs baseline, counted: no statistics",
    ),
    Gate("size_kb_max", "size", "size_kb", "max", meaning="the model's files on disk"),
    Gate(
        "parity_top1_min",
        "parity",
        "parity_top1",
        "min",
        fraction=True,
        meaning="vs parity_with: fraction of samples with the same top-1 class",
    ),
    Gate(
        "parity_max_abs_error",
        "parity",
        "parity_max_abs_error",
        "max",
        meaning="vs parity_with: largest absolute difference of any score",
    ),
    Gate(
        "parity_cosine_min",
        "parity",
        "parity_cosine_min",
        "min",
        fraction=True,
        meaning="vs parity_with: smallest per-sample cosine similarity",
    ),
    Gate(
        "device_top1_min",
        "parity",
        "device_top1",
        "min",
        fraction=True,
        meaning="this device's outputs against the same model run natively on the host",
    ),
    Gate(
        "device_max_abs_error",
        "parity",
        "device_max_abs_error",
        "max",
        meaning="vs the host: largest absolute difference of any score",
    ),
    Gate(
        "device_cosine_min",
        "parity",
        "device_cosine_min",
        "min",
        fraction=True,
        meaning="vs the host: smallest per-sample cosine similarity",
    ),
    Gate(
        "perplexity_max",
        "perplexity",
        "perplexity",
        "max",
        meaning="token-level perplexity of the text file",
    ),
    Gate(
        "perplexity_max_growth",
        "perplexity",
        "perplexity_growth",
        "max",
        relative=True,
        meaning="vs baseline, fraction (0.10 = +10%)",
    ),
    Gate(
        "answer_accuracy_min",
        "answers",
        "answer_accuracy",
        "min",
        fraction=True,
        meaning="fraction of prompts answered as expected",
    ),
    Gate(
        "ttft_p90_ms_max",
        "generation",
        "ttft_p90_ms",
        "max",
        meaning="time to first token, measured/estimated only",
    ),
    Gate(
        "decode_p90_ms_max",
        "generation",
        "decode_p90_ms",
        "max",
        meaning="per generated token, measured/estimated only",
    ),
    Gate(
        "tokens_per_s_min",
        "generation",
        "tokens_per_s",
        "min",
        meaning="generated tokens per second (1 / median step)",
    ),
    Gate(
        "decode_max_regression",
        "generation",
        "ratio",
        "max",
        relative=True,
        meaning="vs baseline: paired ratio of decode steps",
    ),
    Gate(
        "perplexity_ratio_max",
        "token_parity",
        "perplexity_ratio",
        "max",
        meaning="vs parity_with: this perplexity / the other's",
    ),
    Gate(
        "token_agreement_min",
        "token_parity",
        "token_agreement",
        "min",
        fraction=True,
        meaning="vs parity_with: same greedy next token",
    ),
    Gate(
        "kld_mean_max",
        "token_parity",
        "kld_mean",
        "max",
        meaning="vs parity_with: mean KL divergence (nats) per token",
    ),
    Gate(
        "kld_p99_max",
        "token_parity",
        "kld_p99",
        "max",
        meaning="vs parity_with: its 99th percentile",
    ),
)


def gate(name: str) -> Gate:
    return GATES[name]


def gates_of(*, relative: bool | None = None, fraction: bool | None = None) -> tuple[str, ...]:
    """Gate names, in catalogue order, filtered by kind."""
    return tuple(
        g.name
        for g in GATES.values()
        if (relative is None or g.relative == relative)
        and (fraction is None or g.fraction == fraction)
    )


def entry(figure: str) -> Figure | None:
    """The catalogue's entry for a figure a record carries, or None. Derived names resolve to
    their figure's entry: a baseline's copy (`baseline_p90_ms`), an interval's ends
    (`tokens_per_s_low`, `estimated_ms_high`, `p90_low_ms`, `decode_p90_high_ms`)."""
    name = figure.removeprefix("baseline_")
    if name in FIGURES:
        return FIGURES[name]
    for end in ("_low", "_high"):
        if name.endswith(end) and name.removesuffix(end) in FIGURES:
            return FIGURES[name.removesuffix(end)]
        for unit in ("_ms", "_mb", "_kb"):
            if name.endswith(end + unit):
                stem = name.removesuffix(end + unit) + unit
                if stem in FIGURES:
                    return FIGURES[stem]
    return None


def direction(figure: str) -> int:
    """+1: higher is better, -1: lower is better, 0: not judged (or not catalogued). A
    baseline's copy of a figure (`baseline_<figure>`) goes the same way."""
    known = entry(figure)
    return known.better if known is not None else UNJUDGED


def exact(figure: str, fidelity: str = "measured") -> bool:
    """True when two runs of one model on one testbed give the same value (see VARY); a
    counted figure is exact whatever it is."""
    known = entry(figure)
    name = known.name if known is not None else figure
    return fidelity == "counted" or name not in VARY
