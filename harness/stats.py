"""Statistics behind the latency and accuracy gates.

Latency samples are skewed, heavy-tailed and often multi-modal, and consecutive runs drift with
temperature, clocks and background load. So everything here is either distribution-free (order
statistics, ranks) or resampling-based, and comparisons work on rounds in which base and new were
measured back to back, so that slow drift cancels out.

Pure functions over sequences of floats in any unit (ns, ms); numpy and the standard library
only, no I/O, so they can run anywhere the harness runs. Invalid input (empty, NaN, infinite,
out-of-range parameters) raises ValueError.
"""

from __future__ import annotations

import functools
import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Literal, Protocol, TypeAlias

import numpy as np
import numpy.typing as npt

__all__ = [
    "Decision",
    "Interval",
    "RatioEstimate",
    "RatioMethod",
    "Step",
    "Summary",
    "VectorizedStatistic",
    "agreement_interval",
    "bootstrap_ci",
    "chunk_medians",
    "decide_ratio",
    "decide_threshold",
    "detect_steps",
    "min_rounds_for_ratio",
    "min_samples_for_percentile",
    "paired_ratio",
    "percentile",
    "percentile_ci",
    "samples_needed_for_agreement",
    "samples_needed_for_percentile",
    "samples_needed_for_ratio",
    "summary",
    "unpaired_ratio",
]

FloatArray: TypeAlias = npt.NDArray[np.float64]
Samples: TypeAlias = Sequence[float] | npt.NDArray[Any]
Decision: TypeAlias = Literal["pass", "fail", "undecided"]
RatioMethod: TypeAlias = Literal["hodges-lehmann", "sign", "bootstrap"]

_NORMAL = NormalDist()
# Above this many rounds the Walsh averages (n(n+1)/2 of them) are not materialised; their order
# statistics are found by bisection instead.
_WALSH_DIRECT_MAX = 1000
# The signed-rank null distribution is computed exactly up to this n, normally approximated above.
_SIGNED_RANK_EXACT_MAX = 200
# Elements per bootstrap chunk: bounds memory at ~32 MiB whatever resamples * n is.
_BOOTSTRAP_CHUNK = 1 << 22
# Per-step penalty of detect_steps, in units of noise_sd * ln(n); see detect_steps.
_STEP_PENALTY_FACTOR = 2.0


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A closed confidence interval [low, high]."""

    low: float
    high: float

    def contains(self, value: float) -> bool:
        """True when low <= value <= high."""
        return self.low <= value <= self.high

    @property
    def width(self) -> float:
        return self.high - self.low


@dataclass(frozen=True)
class Summary:
    """Descriptive statistics of one set of samples; stdev is the sample (n-1) one, 0 for n=1."""

    n: int
    mean: float
    p50: float
    p90: float
    p99: float
    min: float
    max: float
    stdev: float


@dataclass(frozen=True)
class RatioEstimate:
    """Estimated new/base ratio with its confidence interval, from n paired rounds."""

    ratio: float
    low: float
    high: float
    n: int
    # False when n is too small for the interval to reach its nominal coverage (it is then only
    # the data's range): decide_ratio never decides on such an estimate.
    nominal: bool = True

    @property
    def interval(self) -> Interval:
        return Interval(self.low, self.high)


@dataclass(frozen=True)
class Step:
    """A level change: values[index:] start a new segment; before/after are segment medians."""

    index: int
    before: float
    after: float


class VectorizedStatistic(Protocol):
    """A reduction such as numpy.median or numpy.mean, called as statistic(matrix, axis=-1)."""

    def __call__(self, a: FloatArray, /, *, axis: int) -> Any: ...


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _array(samples: Samples, name: str = "samples") -> FloatArray:
    arr = np.asarray(samples, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _check_q(q: float) -> None:
    if not 0.0 <= q <= 100.0:  # also rejects NaN
        raise ValueError(f"q must be in [0, 100], got {q}")


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _z(confidence: float) -> float:
    """Two-sided normal quantile: the z with P(|Z| <= z) = confidence."""
    return _NORMAL.inv_cdf(0.5 + confidence / 2.0)


# --------------------------------------------------------------------------------------------
# Percentiles
# --------------------------------------------------------------------------------------------


def percentile(samples: Samples, q: float) -> float:
    """The q-th percentile (q in [0, 100]) with linear interpolation, as numpy.percentile."""
    _check_q(q)
    return float(np.percentile(_array(samples), q, method="linear"))


def summary(samples: Samples) -> Summary:
    """n, mean, p50/p90/p99 (linear interpolation), min, max and sample stdev from one sort."""
    arr = np.sort(_array(samples))
    p50, p90, p99 = (float(v) for v in np.percentile(arr, [50.0, 90.0, 99.0], method="linear"))
    return Summary(
        n=int(arr.size),
        mean=float(arr.mean()),
        p50=p50,
        p90=p90,
        p99=p99,
        min=float(arr[0]),
        max=float(arr[-1]),
        stdev=float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
    )


def _binomial_cdf_window(n: int, p: float) -> tuple[int, FloatArray]:
    """(k0, F) with F[i] = P(Bin(n, p) <= k0 + i) on the window where the CDF is not 0 or 1.

    Outside [k0, k0 + len(F)) the CDF is 0 below and 1 above to well under 1e-20, which keeps
    the work O(sqrt(n)) instead of O(n) for large sample counts.
    """
    mean = n * p
    spread = 12.0 * math.sqrt(n * p * (1.0 - p)) + 12.0
    k0 = max(0, math.floor(mean - spread))
    k1 = min(n, math.ceil(mean + spread))
    ks = np.arange(k0, k1 + 1, dtype=np.float64)
    log_choose = np.array(
        [
            math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
            for k in range(k0, k1 + 1)
        ]
    )
    log_pmf = log_choose + ks * math.log(p) + (n - ks) * math.log1p(-p)
    cdf = np.cumsum(np.exp(log_pmf))
    if k1 == n:
        cdf[-1] = 1.0
    return k0, np.minimum(cdf, 1.0)


def _order_statistic_ranks(n: int, p: float, confidence: float) -> tuple[int, int]:
    """1-based ranks (l, u) with P(X(l) <= quantile_p <= X(u)) >= confidence, distribution-free.

    The count B of samples below the true p-quantile is Binomial(n, p), so the quantile lies in
    [X(l), X(u)) unless B < l or B >= u; l and u put at most (1-confidence)/2 in each tail.
    l == 0 or u == n + 1 means no order statistic achieves that tail (too few samples).
    """
    tail = (1.0 - confidence) / 2.0
    if p <= 0.0:
        return 0, 1  # B == 0 always: the 0-quantile is at or below the minimum
    if p >= 1.0:
        return n, n + 1  # B == n always: the 100-quantile is at or above the maximum
    k0, cdf = _binomial_cdf_window(n, p)
    # l - 1 = largest c with F(c) <= tail (F(-1) = 0).
    below = np.flatnonzero(cdf <= tail)
    c_low = k0 + int(below[-1]) if below.size else k0 - 1
    # u - 1 = smallest c with F(c) >= 1 - tail, i.e. P(B >= u) <= tail.
    above = np.flatnonzero(cdf >= 1.0 - tail)
    c_high = k0 + int(above[0]) if above.size else n
    return c_low + 1, c_high + 1


def percentile_ci(samples: Samples, q: float, confidence: float = 0.95) -> Interval:
    """Distribution-free confidence interval for the q-th percentile, from order statistics.

    The interval is [X(l), X(u)] with the ranks from the binomial distribution of the number of
    samples below the true percentile (no assumption on the latency distribution; coverage is
    at least `confidence`, conservative because ranks are discrete). When n is too small for a
    rank to exist on one side (see min_samples_for_percentile, e.g. 368 samples for a 95% CI on
    p99) that side falls back to the sample minimum or maximum: the interval is then the
    widest the data allow, but its coverage is below the nominal level. The interval is widened
    if needed so that it always contains percentile(samples, q).
    """
    _check_q(q)
    _check_confidence(confidence)
    arr = np.sort(_array(samples))
    n = int(arr.size)
    low_rank, high_rank = _order_statistic_ranks(n, q / 100.0, confidence)
    # The linear-interpolation estimate sits between ranks floor(h) and ceil(h), 1-based.
    h = (n - 1) * q / 100.0 + 1.0
    low_rank = min(max(low_rank, 1), math.floor(h))
    high_rank = max(min(high_rank, n), math.ceil(h))
    # The ranks come from h as computed here; the estimate (numpy's) rounds its own way, and at
    # q = 99.99999999999999 the two disagree in the last bit: widen to the estimate itself.
    point = percentile(arr, q)
    return Interval(min(float(arr[low_rank - 1]), point), max(float(arr[high_rank - 1]), point))


def min_samples_for_percentile(q: float, confidence: float = 0.95) -> int:
    """Fewest samples for which percentile_ci uses order statistics on both sides.

    Below this, one side of the interval is the sample extreme and the nominal coverage is not
    reached; the tail percentiles need many samples (p99 at 95%: 368, p90: 36, p50: 6).
    """
    _check_q(q)
    _check_confidence(confidence)
    p = q / 100.0
    worst = max(p, 1.0 - p)
    if worst >= 1.0:
        return 1
    tail = (1.0 - confidence) / 2.0
    # Smallest n with worst**n <= tail; the float estimate is corrected by exact checks.
    n = max(1, math.ceil(math.log(tail) / math.log(worst)))
    while n > 1 and worst ** (n - 1) <= tail:
        n -= 1
    while worst**n > tail:
        n += 1
    return n


def samples_needed_for_percentile(
    pilot: Samples, q: float, margin: float, confidence: float = 0.95
) -> int:
    """Estimated sample count for the q-th percentile CI to be within `margin` of the estimate.

    margin is the distance (in sample units) between the observed percentile and the gate
    threshold. The CI half-width shrinks as 1/sqrt(n), so n = m * (w / margin)^2 where w is the
    wider half of the pilot's own percentile_ci and m the pilot size. A planning figure, not a
    guarantee; never below min_samples_for_percentile(q, confidence).
    """
    _check_q(q)
    _check_confidence(confidence)
    if not margin > 0.0 or not math.isfinite(margin):
        raise ValueError(f"margin must be a positive finite number, got {margin}")
    arr = _array(pilot, "pilot")
    point = percentile(arr, q)
    interval = percentile_ci(arr, q, confidence)
    half_width = max(point - interval.low, interval.high - point)
    floor = min_samples_for_percentile(q, confidence)
    needed = math.ceil(arr.size * (half_width / margin) ** 2) if half_width > 0 else 0
    return max(needed, floor)


# --------------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------------


def bootstrap_ci(
    values: Samples,
    statistic: VectorizedStatistic,
    confidence: float = 0.95,
    seed: int = 0,
    resamples: int = 2000,
) -> Interval:
    """Percentile-bootstrap confidence interval for statistic(values).

    statistic must be vectorised like numpy.median: it is called on a (chunk, n) matrix of
    resamples with axis=-1 and must return one value per row: 2000 resamples of 500 values
    take ~20 ms with numpy.median. Deterministic for a given seed. The percentile bootstrap assumes
    the statistic's sampling distribution is roughly symmetric; it under-covers for very small
    n (below ~10) and for extreme quantiles, where percentile_ci is the better tool.
    """
    _check_confidence(confidence)
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    arr = _array(values, "values")
    n = int(arr.size)
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOTSTRAP_CHUNK // n)
    # Narrow indices are cheaper to draw and gather; the draws depend on the dtype, so it is a
    # pure function of n to keep results reproducible.
    index_dtype = np.int16 if n <= np.iinfo(np.int16).max else np.int64
    stats = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, chunk):
        rows = min(chunk, resamples - start)
        idx = rng.integers(0, n, size=(rows, n), dtype=index_dtype)
        result = np.asarray(statistic(arr[idx], axis=-1), dtype=np.float64)
        if result.shape != (rows,):
            raise ValueError(
                f"statistic must reduce each row to one value; got shape {result.shape}"
            )
        stats[start : start + rows] = result
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(stats, [tail, 1.0 - tail])
    return Interval(float(low), float(high))


# --------------------------------------------------------------------------------------------
# Paired ratio
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _wilcoxon_bound_rank(n: int, confidence: float) -> int:
    """1-based rank k of the Walsh average that bounds the Wilcoxon CI, 0 if none exists.

    The CI is [W(k), W(N + 1 - k)] over the N = n(n+1)/2 sorted Walsh averages, with k - 1 the
    largest c such that P(T <= c) <= (1 - confidence)/2 for the signed-rank statistic T under
    the null. Exact distribution up to _SIGNED_RANK_EXACT_MAX, normal approximation above.
    """
    tail = (1.0 - confidence) / 2.0
    if n > _SIGNED_RANK_EXACT_MAX:
        mean = n * (n + 1) / 4.0
        sd = math.sqrt(n * (n + 1) * (2 * n + 1) / 24.0)
        return max(0, math.floor(mean - 0.5 - _z(confidence) * sd) + 1)
    total = n * (n + 1) // 2
    pmf = np.zeros(total + 1, dtype=np.float64)
    pmf[0] = 1.0
    for rank in range(1, n + 1):
        shifted = np.zeros_like(pmf)
        shifted[rank:] = pmf[:-rank]
        pmf = 0.5 * (pmf + shifted)
    cdf = np.cumsum(pmf)
    ok = np.flatnonzero(cdf <= tail)
    return int(ok[-1]) + 1 if ok.size else 0


def _walsh_rank_bisect(d: FloatArray, k: int) -> float:
    """k-th smallest (1-based) Walsh average of sorted d, in O(n log n) memory-light steps."""
    n = int(d.size)
    index = np.arange(n)

    def count_at_most(t: float) -> int:
        j = np.searchsorted(d, 2.0 * t - d, side="right")
        return int(np.maximum(j - index, 0).sum())

    lo, hi = float(d[0]), float(d[-1])
    if count_at_most(lo) >= k:
        return lo
    for _ in range(200):  # invariant: count(lo) < k <= count(hi)
        mid = lo + (hi - lo) / 2.0
        if mid <= lo or mid >= hi:
            break
        if count_at_most(mid) >= k:
            hi = mid
        else:
            lo = mid
    # hi is within a few ulps of the answer (the count compares d_j <= 2t - d_i, which rounds
    # differently from (d_i + d_j)/2 <= t); snap to the nearest actual Walsh average, looking at
    # the last pair at or below the threshold and the first above it in every row.
    first_above = np.searchsorted(d, 2.0 * hi - d, side="right")
    candidates = []
    for j in (first_above - 1, first_above):
        ok = (j >= index) & (j < n)
        candidates.append((d[ok] + d[j[ok]]) / 2.0)
    values = np.concatenate(candidates)
    return float(values[np.argmin(np.abs(values - hi))])


def _walsh_order_statistics(
    d: FloatArray, ranks: Sequence[int], direct: bool | None = None
) -> list[float]:
    """Order statistics (1-based ranks) of the Walsh averages (d_i + d_j)/2, i <= j, of d."""
    d = np.sort(d)
    n = int(d.size)
    if direct is None:
        direct = n <= _WALSH_DIRECT_MAX
    if not direct:
        return [_walsh_rank_bisect(d, k) for k in ranks]
    walsh = np.concatenate([(d[i] + d[i:]) / 2.0 for i in range(n)])
    positions = sorted({k - 1 for k in ranks})
    walsh.partition(positions)
    return [float(walsh[k - 1]) for k in ranks]


def _hodges_lehmann(d: FloatArray, confidence: float) -> tuple[float, float, float]:
    """Hodges-Lehmann estimate of the centre of d with its Wilcoxon signed-rank CI."""
    n = int(d.size)
    total = n * (n + 1) // 2
    k = _wilcoxon_bound_rank(n, confidence)
    mid = [(total + 1) // 2] if total % 2 else [total // 2, total // 2 + 1]
    bounds = [k, total + 1 - k] if k > 0 else [1, total]
    values = _walsh_order_statistics(d, mid + bounds)
    point = sum(values[: len(mid)]) / len(mid)
    return point, values[-2], values[-1]


def min_rounds_for_ratio(confidence: float = 0.95) -> int:
    """Fewest rounds for which paired_ratio's rank-based CIs do not fall back to the extremes.

    Both the signed-rank and the sign-test interval need 2**-n <= (1-confidence)/2 (6 rounds at
    95%, 8 at 99%).
    """
    _check_confidence(confidence)
    tail = (1.0 - confidence) / 2.0
    n = 1
    while 0.5**n > tail:
        n += 1
    return n


def paired_ratio(
    base: Samples,
    new: Samples,
    confidence: float = 0.95,
    seed: int = 0,
    resamples: int = 2000,
    method: RatioMethod = "hodges-lehmann",
) -> RatioEstimate:
    """Ratio new/base from interleaved rounds, with a CI that uses the pairing.

    base[i] and new[i] were measured in the same round, so d_i = log(new_i / base_i) cancels
    drift shared by the round (clock, thermal, load). The ratio is exp of the centre of d:

    - "hodges-lehmann" (default): the median of the Walsh averages (d_i + d_j)/2 with the
      Wilcoxon signed-rank confidence interval (exact null distribution up to 200 rounds).
      Distribution-free when d is symmetric about its centre, which holds whenever base and new
      noise have the same shape (the difference of two i.i.d. variables is symmetric); nearly
      as efficient as a t-interval on normal data and robust to outliers.
    - "sign": median of d with the sign-test (order-statistic) interval; no symmetry needed,
      wider.
    - "bootstrap": median of d with a percentile bootstrap over rounds (seed, resamples);
      under-covers for small n.

    With fewer than min_rounds_for_ratio(confidence) rounds the rank-based intervals fall back
    to the extremes of d and do not reach the nominal coverage: the estimate is then marked
    `nominal=False` and decide_ratio does not decide on it. The interval always contains the
    point estimate. Deterministic (seed only matters for "bootstrap").
    """
    _check_confidence(confidence)
    b = _array(base, "base")
    m = _array(new, "new")
    if b.size != m.size:
        raise ValueError(f"base and new must pair up round by round: {b.size} != {m.size}")
    if np.any(b <= 0) or np.any(m <= 0):
        raise ValueError("paired_ratio needs strictly positive samples")
    d = np.log(m) - np.log(b)
    if method == "hodges-lehmann":
        point, low, high = _hodges_lehmann(d, confidence)
    elif method == "sign":
        point = float(np.median(d))
        interval = percentile_ci(d, 50.0, confidence)
        low, high = interval.low, interval.high
    elif method == "bootstrap":
        point = float(np.median(d))
        interval = bootstrap_ci(d, np.median, confidence, seed=seed, resamples=resamples)
        low, high = interval.low, interval.high
    else:
        raise ValueError(f"unknown method {method!r}")
    low, high = min(low, point), max(high, point)
    return RatioEstimate(
        ratio=math.exp(point),
        low=math.exp(low),
        high=math.exp(high),
        n=int(d.size),
        nominal=int(d.size) >= min_rounds_for_ratio(confidence),
    )


def samples_needed_for_ratio(log_ratios: Samples, margin: float, confidence: float = 0.95) -> int:
    """Estimated rounds for the ratio CI to exclude a threshold `margin` away (log scale).

    margin is the distance on the log scale between the observed ratio and the gate threshold,
    e.g. abs(log(1 + max_regression) - log(estimate.ratio)) (about the relative distance for
    small margins). Normal approximation on the pilot's per-round log-ratios:
    n = (z * sd / margin)^2 with z the two-sided quantile for `confidence`. A planning figure:
    the rank-based intervals are slightly wider on normal data (Hodges-Lehmann ~5%) and
    narrower on heavy-tailed data. Never below min_rounds_for_ratio(confidence).
    """
    _check_confidence(confidence)
    if not margin > 0.0 or not math.isfinite(margin):
        raise ValueError(f"margin must be a positive finite number, got {margin}")
    d = _array(log_ratios, "log_ratios")
    if d.size < 2:
        raise ValueError("need at least 2 pilot log-ratios to estimate their spread")
    sd = float(d.std(ddof=1))
    needed = math.ceil((_z(confidence) * sd / margin) ** 2)
    return max(needed, min_rounds_for_ratio(confidence))


# --------------------------------------------------------------------------------------------
# Decisions
# --------------------------------------------------------------------------------------------


def decide_ratio(estimate: RatioEstimate, max_regression: float) -> Decision:
    """Gate on a ratio: pass when the whole CI is within 1 + max_regression, fail when the whole
    CI is above it, undecided (take more rounds) when the CI straddles it or comes from too few
    rounds to reach its coverage (estimate.nominal is False)."""
    if not estimate.nominal:
        return "undecided"
    return decide_threshold(estimate.interval, 1.0 + max_regression)


def decide_threshold(interval: Interval, threshold: float) -> Decision:
    """Gate on an absolute maximum: pass if high <= threshold, fail if low > threshold, else
    undecided (take more samples)."""
    if interval.high <= threshold:
        return "pass"
    if interval.low > threshold:
        return "fail"
    return "undecided"


# --------------------------------------------------------------------------------------------
# Step detection
# --------------------------------------------------------------------------------------------


def _prefix_l1_costs(values: Sequence[float]) -> list[float]:
    """costs[m-1] = sum |x - median| over values[:m], for every m, with two heaps."""
    low: list[float] = []  # max-heap (negated) of the lower half; len(low) - len(high) in {0, 1}
    high: list[float] = []  # min-heap of the upper half
    sum_low = sum_high = 0.0
    costs: list[float] = []
    for v in values:
        if len(low) == len(high):
            moved = heapq.heappushpop(high, v)
            sum_high += v - moved
            heapq.heappush(low, -moved)
            sum_low += moved
            cost = sum_high - sum_low - low[0]  # odd count: median is -low[0]
        else:
            moved = -heapq.heappushpop(low, -v)
            sum_low += v - moved
            heapq.heappush(high, moved)
            sum_high += moved
            cost = sum_high - sum_low
        costs.append(max(cost, 0.0))
    return costs


def _noise_sd(y: FloatArray) -> float:
    """Robust noise standard deviation from first differences (insensitive to a few steps)."""
    diffs = np.abs(np.diff(y))
    sd = 1.4826 * float(np.median(diffs)) / math.sqrt(2.0)
    if sd == 0.0:  # quantised data with mostly repeated values: use the mean absolute difference
        sd = float(diffs.mean()) * math.sqrt(math.pi) / 2.0
    return sd


def detect_steps(values: Samples, min_size: int = 2, penalty: float | None = None) -> list[Step]:
    """Level changes in a nightly series, by an exact piecewise-constant L1 fit.

    Minimises sum over segments of sum |y_i - median(segment)| + penalty * (segments - 1) by
    dynamic programming over segment ends (optimal partitioning, O(n^2) time and memory; the
    costs of all segments come from running medians in O(n^2 log n)). Segments have at least
    min_size points, so a lone outlier cannot become a level. The L1 cost makes the fit robust
    to outliers, as in asv's step detection.

    Default penalty, BIC-like: a step adds two parameters (position, level), and the Schwarz
    criterion charges (k/2) ln n each in log-likelihood units; with Laplace noise of scale b
    that is b * ln n per step in L1 units. Like asv (which charges 4x) we charge more than plain
    BIC to keep false alarms rare: penalty = 2 * sd * ln(n) (about 2.8 b ln n for Laplace
    noise), with sd a robust noise standard deviation from the first differences,
    1.4826 * median|diff| / sqrt(2). In simulations this flags no step in 97-100% of
    constant series with normal, Laplace, t3 or lognormal noise (n = 30-300) and finds a
    2-sd step in the middle of 100 points 95% of the time. Autocorrelated noise makes the
    differences understate sd, hence more steps. Pass penalty (units of values) to override.
    """
    if min_size < 1:
        raise ValueError(f"min_size must be >= 1, got {min_size}")
    if len(values) == 0:
        return []  # no history yet: nothing to detect
    y = _array(values, "values")
    n = int(y.size)
    if n < 2 * min_size or np.all(y == y[0]):
        return []
    if penalty is None:
        gamma = _STEP_PENALTY_FACTOR * _noise_sd(y) * math.log(n)
    elif penalty >= 0.0 and math.isfinite(penalty):
        gamma = float(penalty)
    else:
        raise ValueError(f"penalty must be a non-negative finite number, got {penalty}")

    centred = (y - np.median(y)).tolist()  # smaller magnitudes keep the running sums exact
    # cost_by_end[j, i] = L1 cost of y[i:j] (segment [i, j)); inf where shorter than min_size.
    cost_by_end = np.full((n + 1, n + 1), np.inf)
    for i in range(n - min_size + 1):
        costs = _prefix_l1_costs(centred[i:])
        cost_by_end[i + min_size :, i] = costs[min_size - 1 :]

    best = np.full(n + 1, np.inf)  # best[j]: optimal penalised cost of y[:j]
    best[0] = -gamma  # the first segment is free
    start = np.zeros(n + 1, dtype=np.int64)
    for j in range(min_size, n + 1):
        candidates = best[: j - min_size + 1] + cost_by_end[j, : j - min_size + 1]
        i = int(np.argmin(candidates))
        best[j] = candidates[i] + gamma
        start[j] = i

    bounds: list[int] = []
    j = n
    while j > 0:
        bounds.append(int(start[j]))
        j = int(start[j])
    bounds.reverse()  # segment starts, beginning with 0
    ends = [*bounds[1:], n]
    medians = [float(np.median(y[s:e])) for s, e in zip(bounds, ends, strict=True)]
    return [
        Step(index=bounds[r], before=medians[r - 1], after=medians[r])
        for r in range(1, len(bounds))
    ]


def unpaired_ratio(
    base_chunks: Samples,
    new_chunks: Samples,
    confidence: float = 0.95,
    session_sd: float = 0.0,
) -> RatioEstimate:
    """Ratio new/base from two sessions that were not interleaved (a stored baseline), given
    the per-chunk medians of each session (a chunk: one timed loop inside the worker).

    Two sessions differ by more than their samples say: another process, another hour, another
    load on the machine. An interval from resampling samples (or chunk medians) as if they
    scattered around one fixed level narrows with every sample while that session-to-session
    drift does not, so the drift would decide. This interval is instead as wide as the spread
    of new_i / base_j over every pair of chunks: a session's level is taken to move as much as
    its chunks move within it (so it covers when the drift between sessions is no larger than
    the drift between chunks of one session; benchmarks/bench_stored_baseline.py measures the
    false-alarm rate this gives on real sessions). The point estimate is the ratio of the
    median chunk medians. `nominal` is False when there are too few chunk pairs for the tail
    quantiles (n_base * n_new * (1 - confidence) / 2 < 1, or fewer than 3 chunks a side).

    `session_sd`: the standard deviation of a whole session's log level around the machine's,
    measured apart (benchmarks/bench_stored_baseline.py: a fresh process lands at another level
    and stays there, which no chunk of one session shows). Two sessions are one observation of
    it: each side of the interval widens to sqrt(side^2 + (z * sqrt(2) * session_sd)^2) in log
    terms, so an identical model does not read as a few percent better or worse.
    """
    _check_confidence(confidence)
    b = _array(base_chunks, "base_chunks")
    m = _array(new_chunks, "new_chunks")
    if np.any(b <= 0) or np.any(m <= 0):
        raise ValueError("unpaired_ratio needs strictly positive chunk medians")
    tail = (1.0 - confidence) / 2.0
    d = (np.log(m)[:, None] - np.log(b)[None, :]).ravel()
    point = float(np.log(np.median(m)) - np.log(np.median(b)))
    low, high = (float(v) for v in np.quantile(d, [tail, 1.0 - tail]))
    low, high = min(low, point), max(high, point)
    if session_sd < 0:
        raise ValueError(f"session_sd = {session_sd} must be >= 0")
    if session_sd > 0:
        spread = _NORMAL.inv_cdf(1.0 - tail) * math.sqrt(2.0) * session_sd
        low = point - math.hypot(point - low, spread)
        high = point + math.hypot(high - point, spread)
    return RatioEstimate(
        ratio=math.exp(point),
        low=math.exp(low),
        high=math.exp(high),
        n=int(m.size),
        nominal=min(b.size, m.size) >= 3 and d.size * tail >= 1.0,
    )


def chunk_medians(samples: Samples, sizes: Sequence[int], min_size: int = 1) -> FloatArray:
    """Median of each consecutive chunk of `samples` (sizes in order, summing to len(samples)),
    skipping chunks shorter than min_size."""
    arr = _array(samples)
    if sum(sizes) != arr.size or any(size < 0 for size in sizes):
        raise ValueError(f"chunk sizes sum to {sum(sizes)}, not to the {arr.size} samples")
    bounds = np.cumsum([0, *sizes])
    medians = [
        float(np.median(arr[start:stop]))
        for start, stop in zip(bounds[:-1], bounds[1:], strict=True)
        if stop - start >= max(min_size, 1)
    ]
    return np.asarray(medians, dtype=np.float64)


MAX_LOOKS = 8  # interim analyses of one adaptive measurement, the final one included


def per_look_confidence(confidence: float, looks: int = MAX_LOOKS) -> float:
    """Confidence for each of up to `looks` interim decisions so that the chance of any false
    decision over all of them stays within 1 - confidence (Bonferroni). Stopping as soon as one
    interval decides is a sequential test: without this, peeking after every round inflates the
    false-alarm rate many times over."""
    _check_confidence(confidence)
    return 1.0 - (1.0 - confidence) / looks


def look_schedule(first: int, looks: int = MAX_LOOKS - 1) -> list[int]:
    """Sample counts (or rounds) at which to look: first, 2 first, 4 first, ... (the final look,
    when the budget ends, is the last of MAX_LOOKS)."""
    if first < 1:
        raise ValueError(f"first look needs at least one sample, got {first}")
    return [first * 2**k for k in range(looks)]


def _binomial_tail_at_least(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed in log space (n up to thousands)."""
    if k <= 0:
        return 1.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p
        + (n - i) * log_q
        for i in range(k, n + 1)
    ]  # fmt: skip
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def agreement_interval(agree: int, n: int, confidence: float = 0.95) -> Interval:
    """Exact (Clopper-Pearson) two-sided interval of a proportion `agree` / `n`: the share of
    sampled inputs on which a device gives the host's answer."""
    _check_confidence(confidence)
    if n < 1 or not 0 <= agree <= n:
        raise ValueError(f"need 0 <= agree <= n and n >= 1, got {agree}/{n}")
    tail = (1.0 - confidence) / 2.0

    def solve(target: Callable[[float], float]) -> float:
        low, high = 0.0, 1.0
        for _ in range(60):  # bisection to ~1e-18
            middle = (low + high) / 2.0
            if target(middle) < 0:
                low = middle
            else:
                high = middle
        return (low + high) / 2.0

    lower = 0.0 if agree == 0 else solve(lambda p: _binomial_tail_at_least(agree, n, p) - tail)
    upper = (
        1.0
        if agree == n
        else solve(lambda p: tail - (1.0 - _binomial_tail_at_least(agree + 1, n, p)))
    )
    return Interval(low=lower, high=upper)


def samples_needed_for_agreement(threshold: float, confidence: float = 0.95) -> int:
    """Inputs a device must agree on, all of them, for the interval's lower bound to reach
    `threshold`: the least n with threshold**n <= (1 - confidence) / 2."""
    if not 0.0 < threshold < 1.0:
        return 1
    return math.ceil(math.log((1.0 - confidence) / 2.0) / math.log(threshold))
