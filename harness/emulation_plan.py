"""The plan: how much each suite does on a device, sized by what one inference costs there.

Natively an inference costs micro- to milliseconds and every suite does what the config asks.
Under QEMU a real-scale model costs seconds per inference (MobileNetV2 fp32: ~6 s on rpi4), so a
suite that asks for 300 timed runs or 500 evaluated samples would take an hour. There the host
does what is the same everywhere (accuracy over the whole dataset, natively) and the device does
what can differ: the agreement of its kernels' answers with the host's on a budgeted, seeded
sample, a scaled latency sample, a few robustness examples, and the few inferences a count needs.

Pure: the cost and the settings in, the plan out. The pair computes it once, from the first
inference its worker ran at load.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from harness.config import HarnessConfig

MIN_AGREEMENT = 8  # fewer sampled inputs say nothing about agreement
MIN_LATENCY_SAMPLES = 3
INFERENCES_PER_EXAMPLE = 4  # a robustness example runs the input twice, and a batch
# Counting always runs under QEMU: a native inference costs a few hundred times more there
# (FACTS.md: 15-30x for a tiny MatMul model, 300-450x for a real network).
QEMU_SLOWDOWN = 300.0


@dataclass(frozen=True)
class Plan:
    device: str
    emulated: bool
    seconds_per_inference: float
    dataset_samples: int
    accuracy_on: str  # "device": the whole dataset there; "host": natively, plus agreement
    agreement_samples: int  # inputs the device answers for the agreement (0: none needed)
    latency_warmup: int
    latency_samples: int
    latency_min_samples: int
    robustness_examples: int
    counting_warmup: int
    counting_samples: int
    agreement_needed: int = 0  # what the agreement gate needs to be decided (0: no gate)
    agreement_cached: int = 0  # of those sampled, rows the board answered before (free)
    max_budget_s: float = 0.0  # the cap on what a gate's samples may cost (plan.max_budget_s)
    generative: bool = False  # a language model: the text suites' plan (harness.suites.textwork)
    budget_s: float = 0.0  # what each suite may spend on the device (plan.budget_s)

    def describe(self) -> str:
        """`rpi4: ~5.1 s per inference under QEMU; accuracy on the host, agreement on 12
        samples; latency 11 runs; robustness 2 examples; counting 3 runs`"""
        where = "under QEMU" if self.emulated else "natively"
        if self.generative:
            return self._describe_text(where)
        parts = [f"{self.device}: ~{_seconds(self.seconds_per_inference)} per inference {where}"]
        if self.dataset_samples:
            if self.accuracy_on == "host":
                parts.append(
                    f"accuracy on the host, agreement on {self.agreement_samples} of "
                    f"{self.dataset_samples} samples"
                )
            else:
                parts.append(f"accuracy on all {self.dataset_samples} samples")
            if self.agreement_needed and self.accuracy_on == "host":
                parts[-1] += (
                    f" (the gate needs {self.agreement_needed}, up to "
                    f"{self.max_budget_s:g} s: plan.max_budget_s; {self.agreement_cached} "
                    "answered before)"
                )
        parts.append(f"latency {self.latency_samples} runs")
        parts.append(f"robustness {self.robustness_examples} examples")
        return "; ".join(parts)

    @property
    def latency_budget_s(self) -> float:
        """Seconds the latency suite needs for the planned runs and warm-up (with room for runs
        slower than the first): a planned pair's latency budget is raised to it, so the record
        holds the runs the plan line states (not 2 of 135 within latency.time_budget_s)."""
        return 1.5 * self.seconds_per_inference * (self.latency_samples + self.latency_warmup)

    def _describe_text(self, where: str) -> str:
        """A language model: `rpi4: ~1.2 s for a one-token run under QEMU; perplexity, answers
        and token parity natively on the host, the board scoring a seeded sample of windows and
        prompts within ~60 s each; ...`"""
        head = f"{self.device}: ~{_seconds(self.seconds_per_inference)} for a one-token run {where}"
        examples = f"robustness {self.robustness_examples} examples"
        if not self.emulated:
            return f"{head}; every suite on the device; {examples}"
        return (
            f"{head}; perplexity, answers and token parity natively on the host, the board "
            f"scoring a seeded sample of windows and prompts within ~{self.budget_s:g} s each "
            "(its agreement with the host decides device_top1_min); generation: a few emulated "
            "runs beside the timing model's estimate; memory: a fresh worker filled to the "
            f"context; {examples}"
        )

    def as_json(self) -> dict[str, Any]:
        return asdict(self) | {"summary": self.describe()}


def _seconds(value: float) -> str:
    return f"{value:.2g} s" if value >= 0.1 else f"{value * 1000:.2g} ms"


def make_plan(
    device: str,
    emulated: bool,
    seconds_per_inference: float,
    dataset_samples: int,
    config: HarnessConfig,
    counting_samples: int = 200,
    counting_warmup: int = 20,
    agreement_min: float | None = None,
    cached: int = 0,
    generative: bool = False,
) -> Plan:
    """`agreement_min`: the device_top1_min gate, whose decision sizes the agreement sample;
    `cached`: how many rows of the seeded order (sample_indices) the board answered before."""
    latency, robustness, settings = config.latency, config.robustness, config.plan
    cost = max(seconds_per_inference, 1e-9)
    affordable = int(settings.budget_s / cost)  # inferences one suite may run on this device
    needed = needed_to_decide(agreement_min, settings.confidence, dataset_samples)
    agreement = (
        comparison_size(dataset_samples, cost, config, needed, cached)
        if emulated
        else dataset_samples
    )
    accuracy_on = "device" if agreement == dataset_samples else "host"
    counted_cost = cost if emulated else cost * QEMU_SLOWDOWN
    counted = max(1, min(counting_samples, int(settings.budget_s / counted_cost) // 2))
    counted_warmup = min(counting_warmup, max(1, math.ceil(counted / 10)))
    if not emulated:
        return Plan(
            device, emulated, seconds_per_inference, dataset_samples, accuracy_on, agreement,
            latency.warmup, latency.samples, latency.min_samples, robustness.examples,
            counted_warmup, counted, generative=generative, budget_s=settings.budget_s,
        )  # fmt: skip
    samples = max(MIN_LATENCY_SAMPLES, min(latency.samples, affordable))
    warmup = min(latency.warmup, max(1, samples // 10))
    examples = min(robustness.examples, max(2, affordable // INFERENCES_PER_EXAMPLE))
    return Plan(
        device,
        emulated,
        seconds_per_inference,
        dataset_samples,
        accuracy_on,
        agreement,
        warmup,
        samples,
        min(latency.min_samples, samples),
        examples if robustness.examples else 0,
        counted_warmup,
        counted,
        needed,
        min(cached, agreement),
        settings.max_budget_s,
        generative,
        settings.budget_s,
    )


def sample_order(count: int, seed: int) -> list[int]:
    """Every dataset index in a seeded order: a sample of n is its first n, so a larger sample
    extends a smaller one (the rows a board answered before stay in it, and cost nothing)."""
    import random

    return random.Random(seed).sample(range(count), count)


def sample_indices(count: int, wanted: int, seed: int) -> list[int]:
    """`wanted` of `count` dataset indices, seeded, in order (all of them when wanted >= count):
    the first `wanted` of sample_order."""
    if wanted >= count:
        return list(range(count))
    return sorted(sample_order(count, seed)[:wanted])


def cached_prefix(count: int, seed: int, answered: set[int] | dict[int, Any]) -> int:
    """How many leading rows of sample_order the board answered before."""
    found = 0
    for index in sample_order(count, seed):
        if index not in answered:
            break
        found += 1
    return found


def needed_to_decide(minimum: float | None, confidence: float, count: int) -> int:
    """The fewest sampled inputs whose exact interval can clear `minimum` (every one agreeing):
    what a share gate (device_top1_min) needs to be decided on a sample; 0 without a gate."""
    from harness import stats

    if minimum is None or count < 1:
        return 0
    low, high = 1, count
    if stats.agreement_interval(count, count, confidence).low < minimum:
        return count  # even the whole dataset cannot: take it all
    while low < high:  # the interval's low end grows with n when all agree
        middle = (low + high) // 2
        if stats.agreement_interval(middle, middle, confidence).low >= minimum:
            high = middle
        else:
            low = middle + 1
    return low


def comparison_size(
    count: int,
    seconds_per_sample: float,
    config: HarnessConfig,
    needed: int = 0,
    cached: int = 0,
) -> int:
    """How many of `count` inputs a comparison on an expensive device affords: all when they fit
    the budget, else the agreement sample (at least MIN_AGREEMENT); more where a gate `needs`
    more to be decided, their new rows costing up to plan.max_budget_s; and every row the board
    answered before (`cached`, leading rows of sample_order) at no cost."""
    settings = config.plan
    if count * seconds_per_sample <= settings.budget_s:
        return count
    cost = max(seconds_per_sample, 1e-9)
    affordable = int(settings.budget_s / cost)
    size = min(count, max(MIN_AGREEMENT, min(affordable, settings.agreement_samples)))
    if needed > size:
        capped = cached + max(affordable, int(settings.max_budget_s / cost))
        size = min(count, max(size, min(needed, capped)))
    return min(count, max(size, cached))
