"""harness.emulation_plan: how much each suite does, sized by one inference's cost; the agreement
interval that decides device_top1_min on a sample."""

from __future__ import annotations

from pathlib import Path

import pytest
from scipy import stats as scipy_stats

from harness import stats
from harness.config import GateSpec, HarnessConfig, LatencySettings, PlanSettings
from harness.emulation_plan import make_plan
from harness.gates import FAIL, INCONCLUSIVE, PASS, decide
from harness.results import Flags

CONFIG = HarnessConfig(source=Path("harness.toml"))


def test_native_devices_do_what_the_config_asks() -> None:
    plan = make_plan("host", False, 0.016, 500, CONFIG)
    assert plan.accuracy_on == "device" and plan.agreement_samples == 500
    latency = CONFIG.latency
    assert (plan.latency_warmup, plan.latency_samples) == (latency.warmup, latency.samples)
    assert plan.robustness_examples == CONFIG.robustness.examples


def test_a_cheap_emulated_model_runs_everything_on_the_device() -> None:
    """The digits example under QEMU: 450 samples at ~1 ms fit the budget, nothing changes."""
    plan = make_plan("rpi4", True, 0.001, 450, CONFIG)
    assert plan.accuracy_on == "device" and plan.agreement_samples == 450
    assert plan.latency_samples == CONFIG.latency.samples
    assert plan.latency_warmup == CONFIG.latency.warmup
    assert plan.robustness_examples == CONFIG.robustness.examples


def test_an_expensive_emulated_model_is_budgeted() -> None:
    """MobileNetV2 fp32 on rpi4: ~5 s per inference under QEMU, 500 samples."""
    plan = make_plan("rpi4", True, 5.0, 500, CONFIG)
    assert plan.accuracy_on == "host"
    assert plan.agreement_samples == 12  # 60 s / 5 s
    assert plan.latency_samples == 12 and plan.latency_warmup == 1
    assert plan.latency_min_samples <= plan.latency_samples  # never inconclusive for lack of time
    assert plan.robustness_examples == 3
    assert plan.counting_samples == 6
    assert "rpi4: ~5 s per inference under QEMU; accuracy on the host, agreement on 12 of 500" in (
        plan.describe()
    )


def test_the_agreement_sample_has_a_floor_and_a_cap() -> None:
    slow = make_plan("rpi4", True, 60.0, 500, CONFIG)
    assert slow.agreement_samples == 8  # fewer would say nothing
    generous = HarnessConfig(
        source=Path("h.toml"),
        plan=PlanSettings(budget_s=1000, agreement_samples=64),
        latency=LatencySettings(samples=50),
    )
    capped = make_plan("rpi4", True, 5.0, 500, generous)
    assert capped.agreement_samples == 64 and capped.latency_samples == 50


def test_counting_is_budgeted_even_on_a_native_device() -> None:
    """Counting always runs under QEMU, a few hundred times slower than natively."""
    assert make_plan("x86-64", False, 16e-6, 0, CONFIG).counting_samples == 200
    assert make_plan("x86-64", False, 0.016, 0, CONFIG).counting_samples == 6


@pytest.mark.parametrize(("agree", "n"), [(64, 64), (60, 64), (0, 10), (5, 9), (1, 1)])
def test_agreement_interval_is_clopper_pearson(agree: int, n: int) -> None:
    interval = stats.agreement_interval(agree, n, 0.95)
    low = 0.0 if agree == 0 else scipy_stats.beta.ppf(0.025, agree, n - agree + 1)
    high = 1.0 if agree == n else scipy_stats.beta.ppf(0.975, agree + 1, n - agree)
    assert interval.low == pytest.approx(low, abs=1e-9)
    assert interval.high == pytest.approx(high, abs=1e-9)


def test_samples_needed_for_agreement() -> None:
    n = stats.samples_needed_for_agreement(0.99, 0.95)
    assert stats.agreement_interval(n, n).low >= 0.99 > stats.agreement_interval(n - 1, n - 1).low


@pytest.mark.parametrize(
    ("agree", "n", "status"), [(64, 64, PASS), (40, 64, FAIL), (63, 64, INCONCLUSIVE)]
)
def test_device_agreement_decides_on_its_interval(agree: int, n: int, status: str) -> None:
    interval = stats.agreement_interval(agree, n)
    figures = {
        "accuracy": 0.9,
        "nonfinite": 0,
        "host_agreement": agree / n,
        "host_agreement_low": interval.low,
        "host_agreement_high": interval.high,
        "agreement_n": n,
    }
    flags = Flags(inconclusive="straddles") if status == INCONCLUSIVE else Flags()
    verdict = decide("accuracy", figures, GateSpec(device_top1_min=0.9), "rpi4", "emulated", flags)
    assert verdict.status == status
    (check,) = [c for c in verdict.checks if c.gate == "device_top1_min"]
    assert f"on {n} samples" in check.message


def test_progress_speaks_after_a_few_seconds_then_now_and_then() -> None:
    from harness.progress import Progress

    now = [0.0]
    lines: list[str] = []
    progress = Progress("accuracy[m@rpi4]", lines.append, clock=lambda: now[0])
    progress("agreement", 1, 64)  # at once: quiet
    now[0] = 6.0
    progress("agreement", 8, 64)
    now[0] = 7.0
    progress("agreement", 9, 64)  # too soon after the last line
    now[0] = 20.0
    progress("agreement", 32, 64)
    assert lines == [
        "  accuracy[m@rpi4] agreement 8/64, ~42 s left",
        "  accuracy[m@rpi4] agreement 32/64, ~20 s left",
    ]
    Progress("x", None)("agreement", 1, 2)  # no terminal (an xdist worker): nothing to do


# -- sized by what the gate needs, extended from what the board answered before (issue 22) --


def test_the_agreement_sample_is_what_the_gate_needs_to_decide() -> None:
    """MobileNetV2 fp32 on rpi4 (~3.5 s an answer, 500 samples, device_top1_min 0.9): the
    60 s budget buys 17 answers, too few for any interval to clear 0.9; the plan takes the
    fewest that can (every answer agreeing), up to plan.max_budget_s, and says so."""
    confidence = CONFIG.plan.confidence
    needed = make_plan("rpi4", True, 3.5, 500, CONFIG, agreement_min=0.9).agreement_samples
    assert stats.agreement_interval(needed, needed, confidence).low >= 0.9
    assert stats.agreement_interval(needed - 1, needed - 1, confidence).low < 0.9
    assert needed > int(CONFIG.plan.budget_s / 3.5)
    plan = make_plan("rpi4", True, 3.5, 500, CONFIG, agreement_min=0.9)
    assert f"(the gate needs {needed}, up to 300 s: plan.max_budget_s; 0 answered before)" in (
        plan.describe()
    )
    # Capped: 0.99 needs hundreds of answers; at 10 s each the cap buys 30 new ones.
    strict = make_plan("rpi4", True, 10.0, 500, CONFIG, agreement_min=0.99)
    assert strict.agreement_samples == int(CONFIG.plan.max_budget_s / 10.0)


def test_a_warm_run_extends_the_answers_it_has_instead_of_asking_them_again() -> None:
    from harness.emulation_plan import cached_prefix, sample_indices, sample_order

    cold = make_plan("rpi4", True, 3.5, 500, CONFIG)
    first = sample_indices(500, cold.agreement_samples, CONFIG.seed)
    answered = set(first)
    cached = cached_prefix(500, CONFIG.seed, answered)
    assert cached == len(first)
    warm = make_plan("rpi4", True, 3.5, 500, CONFIG, agreement_min=0.9, cached=cached)
    second = sample_indices(500, warm.agreement_samples, CONFIG.seed)
    assert set(first) < set(second)  # the same rows, and more: only the new ones are asked
    new = len(second) - cached
    assert new * 3.5 <= CONFIG.plan.max_budget_s
    assert warm.agreement_cached == cached
    # Rows answered before beyond what a plan needs are used too: they cost nothing.
    everything = make_plan("rpi4", True, 3.5, 500, CONFIG, cached=120)
    assert everything.agreement_samples == 120
    assert sample_order(500, CONFIG.seed)[:17] == sample_order(500, CONFIG.seed)[:40][:17]
