"""harness.stats: known values, scipy cross-checks, coverage by simulation and properties."""

from __future__ import annotations

import itertools
import math
import statistics
import time
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import stats
from harness.stats import (
    Interval,
    RatioEstimate,
    Step,
    bootstrap_ci,
    decide_ratio,
    decide_threshold,
    detect_steps,
    min_rounds_for_ratio,
    min_samples_for_percentile,
    paired_ratio,
    percentile,
    percentile_ci,
    samples_needed_for_percentile,
    samples_needed_for_ratio,
    summary,
)


def _scipy() -> Any:
    """scipy.stats for the cross-checks; only those tests skip when scipy is not installed."""
    return pytest.importorskip("scipy.stats")


latencies = st.lists(
    st.floats(min_value=1e-3, max_value=1e6, allow_nan=False, allow_infinity=False),
    min_size=1,
    max_size=60,
)
quantiles = st.floats(min_value=0.0, max_value=100.0)
confidences = st.sampled_from([0.5, 0.8, 0.9, 0.95, 0.99])
METHODS: tuple[stats.RatioMethod, ...] = ("hodges-lehmann", "sign", "bootstrap")


def _lognormal_rounds(
    rng: np.random.Generator, n: int, slowdown: float
) -> tuple[np.ndarray, np.ndarray]:
    """Interleaved rounds with shared per-round drift, new slower by `slowdown`."""
    drift = rng.normal(0.0, 0.2, n)  # cancels in the per-round log-ratio
    base = np.exp(1.0 + drift + rng.normal(0.0, 0.05, n))
    new = slowdown * np.exp(1.0 + drift + rng.normal(0.0, 0.05, n))
    return base, new


# --- percentile / summary ---------------------------------------------------------------------


def test_percentile_known_values() -> None:
    data = [4.0, 1.0, 3.0, 2.0]
    assert percentile(data, 0) == 1.0
    assert percentile(data, 100) == 4.0
    assert percentile(data, 50) == 2.5
    assert percentile(data, 25) == pytest.approx(1.75)
    assert percentile([7.0], 90) == 7.0


@settings(max_examples=60)
@given(latencies, quantiles)
def test_percentile_matches_numpy(data: list[float], q: float) -> None:
    assert percentile(data, q) == pytest.approx(float(np.percentile(data, q)), rel=1e-12)


@settings(max_examples=60)
@given(latencies, quantiles, quantiles)
def test_percentile_monotone_in_q(data: list[float], q1: float, q2: float) -> None:
    lo, hi = sorted((q1, q2))
    assert percentile(data, lo) <= percentile(data, hi)


@pytest.mark.parametrize(
    ("data", "q"),
    [([], 50), ([1.0, math.nan], 50), ([1.0, math.inf], 50), ([1.0], -1), ([1.0], 100.5)],
)
def test_percentile_rejects_bad_input(data: list[float], q: float) -> None:
    with pytest.raises(ValueError):
        percentile(data, q)


def test_summary_known_values() -> None:
    data = [float(v) for v in range(1, 101)]
    s = summary(data)
    assert s.n == 100
    assert s.mean == 50.5
    assert s.p50 == 50.5
    assert s.p90 == pytest.approx(90.1)
    assert s.p99 == pytest.approx(99.01)
    assert (s.min, s.max) == (1.0, 100.0)
    assert s.stdev == pytest.approx(statistics.stdev(data))
    assert summary([3.0]).stdev == 0.0


# --- percentile_ci ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "q"), [(6, 50), (20, 50), (50, 90), (101, 25), (400, 99), (2000, 99)]
)
@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_percentile_ci_matches_scipy_quantile_test(n: int, q: float, confidence: float) -> None:
    sample = np.random.default_rng(n).exponential(size=n)
    ours = percentile_ci(sample, q, confidence)
    ref = _scipy().quantile_test(sample, q=0.0, p=q / 100).confidence_interval(confidence)
    assert (ours.low, ours.high) == (ref.low, ref.high)


def test_percentile_ci_falls_back_to_extremes_for_small_n() -> None:
    sample = [5.0, 1.0, 3.0, 2.0, 4.0]  # n = 5 < min_samples_for_percentile(50) == 6
    assert percentile_ci(sample, 50) == Interval(1.0, 5.0)
    # p99 needs 368 samples at 95%: with 367 no rank bounds it from above (u = n + 1) and the
    # upper end falls back to the maximum; with 368 the rank exists (it is the maximum itself).
    assert stats._order_statistic_ranks(367, 0.99, 0.95)[1] == 368
    assert stats._order_statistic_ranks(368, 0.99, 0.95)[1] == 368
    tail = np.random.default_rng(0).exponential(size=367)
    assert percentile_ci(tail, 99).high == tail.max()


def test_min_samples_for_percentile() -> None:
    assert min_samples_for_percentile(50) == 6
    assert min_samples_for_percentile(90) == 36
    assert min_samples_for_percentile(10) == 36
    assert min_samples_for_percentile(99) == 368
    assert min_samples_for_percentile(99, 0.9) == 299
    assert min_samples_for_percentile(0) == min_samples_for_percentile(100) == 1
    for q in (50.0, 90.0, 99.0):
        n = min_samples_for_percentile(q)
        assert stats._order_statistic_ranks(n, q / 100, 0.95)[1] <= n
        low, high = stats._order_statistic_ranks(n - 1, q / 100, 0.95)
        assert low < 1 or high > n - 1


def test_percentile_ci_coverage_by_simulation() -> None:
    rng = np.random.default_rng(42)
    true_p90 = -math.log(0.1)  # exponential(1)
    hits = sum(percentile_ci(rng.exponential(size=60), 90).contains(true_p90) for _ in range(400))
    assert hits / 400 >= 0.93  # the order-statistic interval is conservative: nominal 0.95


@settings(max_examples=60)
@given(latencies, quantiles, confidences)
def test_percentile_ci_contains_point_estimate(data: list[float], q: float, c: float) -> None:
    interval = percentile_ci(data, q, c)
    assert interval.low <= percentile(data, q) <= interval.high
    assert min(data) <= interval.low and interval.high <= max(data)


def test_percentile_ci_holds_the_estimate_where_the_rank_and_numpy_round_apart() -> None:
    """Found by Hypothesis on a fresh machine: the ranks' h rounded to 3.0, numpy's estimate to
    1.9999999999999998, and the interval was [2.0, 2.0]."""
    data, q = [1.0, 1.0, 2.0], 99.99999999999999
    interval = percentile_ci(data, q, 0.5)
    assert interval.low <= percentile(data, q) <= interval.high


@settings(max_examples=60)
@given(latencies, quantiles)
def test_percentile_ci_widens_with_confidence(data: list[float], q: float) -> None:
    narrow, wide = percentile_ci(data, q, 0.8), percentile_ci(data, q, 0.99)
    assert wide.low <= narrow.low and narrow.high <= wide.high


def test_samples_needed_for_percentile() -> None:
    pilot = np.random.default_rng(1).exponential(size=400)
    point, interval = percentile(pilot, 50), percentile_ci(pilot, 50)
    half_width = max(point - interval.low, interval.high - point)
    # Margin equal to the pilot's own half-width: the pilot is already enough.
    assert samples_needed_for_percentile(pilot, 50, half_width) == 400
    assert samples_needed_for_percentile(pilot, 50, half_width / 2) == 1600
    assert samples_needed_for_percentile(pilot, 50, 1e9) == min_samples_for_percentile(50)
    assert samples_needed_for_percentile([1.0] * 10, 99, 0.1) == 368
    with pytest.raises(ValueError):
        samples_needed_for_percentile(pilot, 50, 0.0)


# --- bootstrap --------------------------------------------------------------------------------


def test_bootstrap_ci_is_deterministic_per_seed() -> None:
    data = np.random.default_rng(3).lognormal(size=100)
    a = bootstrap_ci(data, np.median, seed=7, resamples=500)
    assert a == bootstrap_ci(data, np.median, seed=7, resamples=500)
    assert a != bootstrap_ci(data, np.median, seed=8, resamples=500)
    assert a.low < float(np.median(data)) < a.high


def test_bootstrap_ci_mean_close_to_normal_theory() -> None:
    data = np.random.default_rng(4).normal(10.0, 2.0, size=400)
    interval = bootstrap_ci(data, np.mean, confidence=0.95, resamples=4000)
    half = 1.96 * data.std(ddof=1) / math.sqrt(data.size)
    assert interval.low == pytest.approx(data.mean() - half, abs=0.1 * half)
    assert interval.high == pytest.approx(data.mean() + half, abs=0.1 * half)


def test_bootstrap_ci_chunks_large_inputs() -> None:
    data = np.arange(5000, dtype=np.float64)
    # 5000 * 1000 elements is more than one chunk (2**22): every resample must still be filled.
    interval = bootstrap_ci(data, np.mean, resamples=1000)
    assert interval.low < 2499.5 < interval.high


def test_bootstrap_ci_rejects_non_reducing_statistic() -> None:
    with pytest.raises(ValueError, match="one value per row|reduce"):
        bootstrap_ci([1.0, 2.0, 3.0], lambda a, axis: a, resamples=10)
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, 2.0], np.mean, resamples=0)


# --- paired_ratio -----------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_paired_ratio_exact_multiple(method: stats.RatioMethod) -> None:
    base = np.random.default_rng(6).lognormal(size=30)
    est = paired_ratio(base, 2.0 * base, method=method)
    assert est.n == 30
    assert est.ratio == pytest.approx(2.0)
    assert est.low == pytest.approx(2.0) and est.high == pytest.approx(2.0)


@pytest.mark.parametrize("method", METHODS)
def test_paired_ratio_coverage_of_known_slowdown(method: stats.RatioMethod) -> None:
    rng = np.random.default_rng(2024)
    covered = 0
    for seed in range(200):
        base, new = _lognormal_rounds(rng, 30, 1.05)
        est = paired_ratio(base, new, seed=seed, resamples=500, method=method)
        covered += est.interval.contains(1.05)
    assert covered / 200 >= 0.9


def test_paired_ratio_detects_slowdown() -> None:
    base, new = _lognormal_rounds(np.random.default_rng(9), 40, 1.05)
    est = paired_ratio(base, new)
    assert est.low > 1.0
    assert decide_ratio(est, 0.0) == "fail"
    assert decide_ratio(est, 0.2) == "pass"


def test_paired_ratio_pairing_beats_unpaired_spread() -> None:
    # Shared per-round drift (sd 0.2) is 4x the measurement noise; pairing removes it.
    base, new = _lognormal_rounds(np.random.default_rng(10), 30, 1.0)
    est = paired_ratio(base, new)
    assert math.log(est.high / est.low) < 0.1


def test_paired_ratio_inverts_when_swapped() -> None:
    base, new = _lognormal_rounds(np.random.default_rng(11), 25, 1.1)
    forward, backward = paired_ratio(base, new), paired_ratio(new, base)
    assert forward.ratio == pytest.approx(1 / backward.ratio)
    assert forward.low == pytest.approx(1 / backward.high)
    assert forward.high == pytest.approx(1 / backward.low)


def test_paired_ratio_bootstrap_deterministic_per_seed() -> None:
    base, new = _lognormal_rounds(np.random.default_rng(12), 25, 1.0)
    a = paired_ratio(base, new, seed=1, method="bootstrap", resamples=300)
    assert a == paired_ratio(base, new, seed=1, method="bootstrap", resamples=300)
    # The seed reaches the bootstrap: same draws as bootstrap_ci on the log-ratios.
    d = np.log(new) - np.log(base)
    for seed in (1, 2):
        est = paired_ratio(base, new, seed=seed, method="bootstrap", resamples=300)
        ref = bootstrap_ci(d, np.median, seed=seed, resamples=300)
        assert est.low == pytest.approx(math.exp(min(ref.low, float(np.median(d)))))
        assert est.high == pytest.approx(math.exp(max(ref.high, float(np.median(d)))))
    # Rank-based methods do not use the seed.
    assert paired_ratio(base, new, seed=1) == paired_ratio(base, new, seed=2)


def test_paired_ratio_small_n_falls_back_to_extremes() -> None:
    base = [1.0, 1.0, 1.0, 1.0, 1.0]
    new = [1.1, 0.9, 1.3, 1.0, 1.2]
    assert min_rounds_for_ratio() == 6
    est = paired_ratio(base, new)
    assert est.low == pytest.approx(0.9) and est.high == pytest.approx(1.3)
    assert not est.nominal  # the range of the data, not a 95% interval


@pytest.mark.parametrize(
    ("base", "new"), [([1.0, 2.0], [1.0]), ([1.0, 0.0], [1.0, 1.0]), ([1.0, 1.0], [1.0, -1.0])]
)
def test_paired_ratio_rejects_bad_input(base: list[float], new: list[float]) -> None:
    with pytest.raises(ValueError):
        paired_ratio(base, new)


def test_paired_ratio_rejects_unknown_method() -> None:
    with pytest.raises(ValueError, match="method"):
        paired_ratio([1.0], [1.0], method="t-test")  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [1, 2, 5, 6, 7, 10, 12])
def test_wilcoxon_bound_rank_matches_brute_force(n: int) -> None:
    tail = 0.025
    counts: dict[int, int] = {}
    for signs in itertools.product((0, 1), repeat=n):
        t = sum(rank for rank, s in zip(range(1, n + 1), signs, strict=True) if s)
        counts[t] = counts.get(t, 0) + 1
    cdf, k = 0.0, 0
    for t in range(n * (n + 1) // 2 + 1):
        cdf += counts.get(t, 0) / 2**n
        if cdf <= tail:
            k = t + 1
    assert stats._wilcoxon_bound_rank(n, 0.95) == k


def test_signed_rank_normal_approximation_joins_exact() -> None:
    exact = stats._wilcoxon_bound_rank(200, 0.95)
    mean, sd = 200 * 201 / 4, math.sqrt(200 * 201 * 401 / 24)
    approx = math.floor(mean - 0.5 - 1.959963984540054 * sd) + 1
    assert abs(exact - approx) <= 2
    assert stats._wilcoxon_bound_rank(201, 0.95) > exact


def test_hodges_lehmann_ci_inverts_wilcoxon_test() -> None:
    # The CI is the set of shifts the exact two-sided signed-rank test does not reject at 5%.
    d = np.random.default_rng(13).normal(0.05, 0.1, size=15)
    est = paired_ratio(np.ones_like(d), np.exp(d))
    low, high, eps = math.log(est.low), math.log(est.high), 1e-9

    def p_value(shift: float) -> float:
        return float(_scipy().wilcoxon(d - shift, method="exact").pvalue)

    assert p_value(low + eps) > 0.05 and p_value(high - eps) > 0.05
    assert p_value(low - eps) <= 0.05 and p_value(high + eps) <= 0.05


def test_walsh_bisection_matches_direct() -> None:
    rng = np.random.default_rng(14)
    d = np.concatenate([rng.normal(size=300), np.zeros(20), rng.normal(size=5).repeat(4)])
    total = d.size * (d.size + 1) // 2
    ranks = [1, 2, 17, total // 3, total // 2, total // 2 + 1, total - 5, total]
    direct = stats._walsh_order_statistics(d, ranks, direct=True)
    bisected = stats._walsh_order_statistics(d, ranks, direct=False)
    assert bisected == pytest.approx(direct, rel=1e-12, abs=1e-15)


def test_paired_ratio_large_n_uses_bisection() -> None:
    base, new = _lognormal_rounds(np.random.default_rng(15), 3000, 1.02)
    est = paired_ratio(base, new)
    assert est.low < 1.02 < est.high
    assert est.high / est.low < 1.01


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(min_value=1e-3, max_value=1e6), min_size=1, max_size=40),
    st.sampled_from(METHODS),
)
def test_paired_ratio_of_identical_samples_is_one(
    data: list[float], method: stats.RatioMethod
) -> None:
    est = paired_ratio(data, data, method=method, resamples=200)
    assert est.ratio == 1.0 and est.low == 1.0 and est.high == 1.0
    # Even identical rounds decide only from enough of them.
    assert decide_ratio(est, 0.0) == ("pass" if est.nominal else "undecided")
    assert est.nominal == (len(data) >= min_rounds_for_ratio())


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(min_value=0.1, max_value=100.0), st.floats(0.1, 100.0)),
        min_size=1,
        max_size=40,
    ),
    st.sampled_from(METHODS),
    confidences,
)
def test_paired_ratio_interval_contains_estimate(
    pairs: list[tuple[float, float]], method: stats.RatioMethod, confidence: float
) -> None:
    base, new = zip(*pairs, strict=True)
    est = paired_ratio(base, new, confidence=confidence, method=method, resamples=200)
    assert est.low <= est.ratio <= est.high
    ratios = [n / b for b, n in pairs]
    assert min(ratios) * (1 - 1e-9) <= est.low and est.high <= max(ratios) * (1 + 1e-9)


# --- sample sizing ----------------------------------------------------------------------------


def test_samples_needed_for_ratio_known_value() -> None:
    pilot = [-0.05, 0.05, -0.05, 0.05]
    sd = statistics.stdev(pilot)
    expected = math.ceil((1.959963984540054 * sd / 0.01) ** 2)
    assert samples_needed_for_ratio(pilot, 0.01) == expected
    assert samples_needed_for_ratio(pilot, 1.0) == min_rounds_for_ratio()
    assert samples_needed_for_ratio(pilot, 0.01, 0.99) > expected
    assert samples_needed_for_ratio([0.1, 0.1, 0.1], 0.01) == min_rounds_for_ratio()


def test_samples_needed_for_ratio_delivers_the_margin() -> None:
    rng = np.random.default_rng(16)
    sd, margin = 0.05, 0.02
    n = samples_needed_for_ratio(rng.normal(0.0, sd, size=200), margin)
    assert 20 <= n <= 30  # (1.96 * 0.05 / 0.02)^2 = 24
    halves = []
    for _ in range(200):
        d = rng.normal(0.0, sd, size=n)
        est = paired_ratio(np.ones(n), np.exp(d))
        halves.append(math.log(est.high / est.low) / 2)
    assert 0.8 * margin <= float(np.mean(halves)) <= 1.3 * margin


@pytest.mark.parametrize(("pilot", "margin"), [([0.1], 0.1), ([0.1, 0.2], 0.0), ([0.1, 0.2], -1)])
def test_samples_needed_for_ratio_rejects_bad_input(pilot: list[float], margin: float) -> None:
    with pytest.raises(ValueError):
        samples_needed_for_ratio(pilot, margin)


# --- decisions --------------------------------------------------------------------------------


def test_decide_known_cases() -> None:
    assert decide_threshold(Interval(1.0, 2.0), 2.0) == "pass"
    assert decide_threshold(Interval(2.0, 3.0), 2.0) == "undecided"
    assert decide_threshold(Interval(2.5, 3.0), 2.0) == "fail"
    assert decide_ratio(RatioEstimate(1.02, 1.01, 1.05, 30), 0.05) == "pass"
    assert decide_ratio(RatioEstimate(1.06, 1.04, 1.08, 30), 0.05) == "undecided"
    assert decide_ratio(RatioEstimate(1.10, 1.06, 1.14, 30), 0.05) == "fail"


@given(st.floats(-1e6, 1e6), st.floats(0, 1e6), st.floats(-1e6, 1e6))
def test_decide_threshold_consistent_with_interval(
    low: float, width: float, threshold: float
) -> None:
    interval = Interval(low, low + width)
    decision = decide_threshold(interval, threshold)
    assert (decision == "pass") == (interval.high <= threshold)
    assert (decision == "fail") == (interval.low > threshold)
    assert (decision == "undecided") == (interval.low <= threshold < interval.high)


@given(st.floats(0.5, 2.0), st.floats(0.0, 0.5), st.floats(0.0, 1.0), st.floats(-0.5, 1.0))
def test_decide_ratio_consistent_with_interval(
    ratio: float, below: float, above: float, max_regression: float
) -> None:
    estimate = RatioEstimate(ratio, ratio - below * ratio, ratio + above, 10)
    decision = decide_ratio(estimate, max_regression)
    limit = 1.0 + max_regression
    assert (decision == "pass") == (estimate.high <= limit)
    assert (decision == "fail") == (estimate.low > limit)
    assert decision == decide_threshold(estimate.interval, limit)


# --- Mann-Whitney -----------------------------------------------------------------------------


# --- detect_steps -----------------------------------------------------------------------------


def _penalised_cost(y: list[float], starts: list[int], gamma: float) -> float:
    ends = [*starts[1:], len(y)]
    total = gamma * (len(starts) - 1)
    for s, e in zip(starts, ends, strict=True):
        m = float(np.median(y[s:e]))
        total += sum(abs(v - m) for v in y[s:e])
    return total


def test_prefix_l1_costs_match_brute_force() -> None:
    values = np.random.default_rng(17).normal(size=25).round(1).tolist()
    costs = stats._prefix_l1_costs(values)
    for m in range(1, 26):
        med = float(np.median(values[:m]))
        assert costs[m - 1] == pytest.approx(sum(abs(v - med) for v in values[:m]), abs=1e-9)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("min_size", [1, 3])
def test_detect_steps_is_optimal_against_brute_force(seed: int, min_size: int) -> None:
    rng = np.random.default_rng(seed)
    y = (rng.normal(size=10) + np.repeat(rng.integers(0, 3, size=3) * 2.0, [4, 3, 3])).tolist()
    gamma = 1.5
    found = detect_steps(y, min_size=min_size, penalty=gamma)
    best = math.inf
    for k in range(len(y)):
        for cut in itertools.combinations(range(1, len(y)), k):
            starts = [0, *cut]
            lengths = np.diff([*starts, len(y)])
            if lengths.min() >= min_size:
                best = min(best, _penalised_cost(y, starts, gamma))
    ours = _penalised_cost(y, [0, *(s.index for s in found)], gamma)
    assert ours == pytest.approx(best, abs=1e-9)


def test_detect_steps_known_levels() -> None:
    y = [1.0] * 5 + [5.0] * 5 + [2.0] * 5
    assert detect_steps(y) == [Step(5, 1.0, 5.0), Step(10, 5.0, 2.0)]
    assert detect_steps(y, min_size=8) == []  # two segments of 8 do not fit in 15 points
    # A two-point blip survives min_size=2 but not min_size=3.
    blip = [10.0] * 10 + [30.0, 30.0] + [10.0] * 10
    assert [s.index for s in detect_steps(blip)] == [10, 12]
    assert detect_steps(blip, min_size=3) == []


def test_detect_steps_on_large_offsets() -> None:
    noise = np.random.default_rng(18).normal(0.0, 1e3, size=120)
    y = 1e9 + noise + np.where(np.arange(120) >= 70, 1e4, 0.0)
    steps = detect_steps(y)
    assert [s.index for s in steps] == [70]
    assert steps[0].after - steps[0].before == pytest.approx(1e4, rel=0.1)


def test_detect_steps_rarely_fires_on_noise() -> None:
    rng = np.random.default_rng(19)
    series = [rng.lognormal(3.0, 0.2, size=80) for _ in range(40)]
    assert sum(bool(detect_steps(y)) for y in series) <= 2


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.integers(8, 50),
    st.integers(8, 50),
    st.floats(4.0, 20.0),
    st.sampled_from([1.0, -1.0]),
)
def test_detect_steps_finds_planted_step(
    seed: int, before: int, after: int, height: float, sign: float
) -> None:
    rng = np.random.default_rng(seed)
    y = 100.0 + rng.normal(0.0, 1.0, size=before + after)
    y[before:] += sign * height
    steps = detect_steps(y)
    assert any(abs(s.index - before) <= 2 for s in steps)
    near = min(steps, key=lambda s: abs(s.index - before))
    assert (near.after - near.before) * sign > 0


@given(st.floats(1e-3, 1e9), st.integers(0, 200), st.integers(1, 5))
def test_detect_steps_none_on_constant(level: float, n: int, min_size: int) -> None:
    assert detect_steps([level] * n, min_size=min_size) == []


def test_detect_steps_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        detect_steps([1.0, 2.0], min_size=0)
    with pytest.raises(ValueError):
        detect_steps([1.0, 2.0, 3.0, 4.0], penalty=-1.0)
    with pytest.raises(ValueError):
        detect_steps([1.0, math.nan, 2.0, 3.0])
    assert detect_steps([]) == []


def test_detect_steps_is_fast_enough_for_nightly_series() -> None:
    y = np.random.default_rng(20).normal(size=300)
    y[150:] += 3
    start = time.perf_counter()
    steps = detect_steps(y)
    assert time.perf_counter() - start < 2.0
    assert [s.index for s in steps] == [150]


def test_per_look_confidence_spends_the_error_over_the_looks() -> None:
    assert stats.per_look_confidence(0.99, 8) == pytest.approx(1 - 0.01 / 8)
    assert stats.look_schedule(12, 3) == [12, 24, 48]
    with pytest.raises(ValueError):
        stats.look_schedule(0)


# --- too few rounds never decide (issue 9, item 5) ----------------------------------------------


def test_too_few_rounds_never_decide_a_true_regression_as_a_pass() -> None:
    """A true +12% against a 10% gate, per-round log-ratio noise 0.05, at the per-look confidence
    the latency item spends: below min_rounds_for_ratio the signed-rank interval would be the
    data's extremes (at n=2 it passes ~13% of such changes); it must not decide at all, and from
    there on it may pass at most the interval's one-sided error rate."""
    confidence = stats.per_look_confidence(0.95)
    minimum = min_rounds_for_ratio(confidence)
    tail = (1.0 - confidence) / 2.0
    rng = np.random.default_rng(9)
    trials = 2000
    for n in range(2, minimum + 4):
        d = rng.normal(math.log(1.12), 0.05, size=(trials, n))
        passed = sum(
            decide_ratio(paired_ratio(np.ones(n), np.exp(row), confidence), 0.10) == "pass"
            for row in d
        )
        if n < minimum:
            assert passed == 0, f"n={n}: {passed}/{trials} passed with too few rounds"
        else:  # binomial error of the simulated rate: 4 standard errors
            bound = tail + 4 * math.sqrt(tail * (1 - tail) / trials)
            assert passed / trials <= bound, f"n={n}: {passed}/{trials}"


def test_an_estimate_from_too_few_rounds_says_so() -> None:
    confidence = 0.95
    minimum = min_rounds_for_ratio(confidence)
    short = paired_ratio([1.0] * (minimum - 1), [2.0] * (minimum - 1), confidence)
    assert not short.nominal
    assert decide_ratio(short, 0.05) == "undecided"  # even though every round says +100%
    enough = paired_ratio([1.0] * minimum, [2.0] * minimum, confidence)
    assert enough.nominal and decide_ratio(enough, 0.05) == "fail"


# --- unpaired (stored baseline) comparisons: session drift (issue 9, item 6) ---------------------


def _session_chunks(rng: np.random.Generator, chunks: int, drift_sd: float) -> np.ndarray:
    """Per-chunk medians of one session: the session's level moves by drift_sd (another
    process, another hour) and each chunk by as much again around it."""
    level = rng.normal(0.0, drift_sd)
    return np.exp(1.0 + level + rng.normal(0.0, drift_sd, chunks))


def test_unpaired_ratio_keeps_false_alarms_within_5_percent_under_session_drift() -> None:
    """Two sessions of one identical model whose levels differ as much as their chunks vary
    (the worst case the interval is built for), with the latency item's 20 chunks a side: an
    interval that treats samples (or chunk medians) as independent draws around one level
    narrows with every sample and lets the drift decide (~23% here); this one stays within the
    issue's 5% goal, simulation error included (it measures ~4%; with 10 chunks a side ~6%,
    hence latency.MIN_CHUNKS = 20)."""
    rng = np.random.default_rng(6)
    trials, false_alarms = 4000, 0
    for _ in range(trials):
        base, new = _session_chunks(rng, 20, 0.05), _session_chunks(rng, 20, 0.05)
        estimate = stats.unpaired_ratio(base, new, 0.95)
        false_alarms += decide_ratio(estimate, 0.0) == "fail"  # any slowdown at all fails
    rate = false_alarms / trials
    upper = rate + 3 * math.sqrt(rate * (1 - rate) / trials)  # the simulation's own error
    assert upper <= 0.05, f"{false_alarms}/{trials}: up to {upper:.1%}"


def test_unpaired_ratio_finds_a_change_larger_than_the_drift() -> None:
    rng = np.random.default_rng(7)
    base, new = _session_chunks(rng, 12, 0.02), 1.5 * _session_chunks(rng, 12, 0.02)
    estimate = stats.unpaired_ratio(base, new, 0.95)
    assert estimate.nominal and estimate.low > 1.3
    assert decide_ratio(estimate, 0.10) == "fail"


def test_unpaired_ratio_from_too_few_chunks_decides_nothing() -> None:
    estimate = stats.unpaired_ratio([1.0, 1.0, 1.0], [2.0, 2.0, 2.0], 0.95)
    assert estimate.ratio == pytest.approx(2.0)
    assert not estimate.nominal and decide_ratio(estimate, 0.10) == "undecided"
