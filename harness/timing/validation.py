"""Statistics for validating estimates against measured latencies. Pure: no I/O.

- relative_errors: estimate / measured - 1, per model.
- leave_one_out_calibration: for each model, the scale fitted on all the *other* models
  (geometric mean of measured / raw estimate), so its error is held out, never in-sample.
- fit_nonnegative / leave_one_out_predictions: non-negative weights w (e.g. cycles per
  instruction of each class group) minimising the squared *relative* error of X @ w against the
  measurements, and each model's prediction from weights fitted without it.
- leave_group_out_predictions: the same with a whole group held out at a time (every model of
  one build recipe, or of one architecture), so a group's error is one no model of it was fitted
  on.
- spearman / kendall: whether the estimates order the models as the measurements do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ErrorSummary",
    "fit_nonnegative",
    "fit_scale",
    "kendall_tau",
    "leave_group_out_predictions",
    "leave_one_out_predictions",
    "leave_one_out_scales",
    "relative_errors",
    "spearman_rho",
    "summarize",
]


def relative_errors(estimated: Sequence[float], measured: Sequence[float]) -> list[float]:
    if len(estimated) != len(measured):
        raise ValueError("estimated and measured differ in length")
    if any(m <= 0 for m in measured):
        raise ValueError("measured latencies must be positive")
    return [e / m - 1.0 for e, m in zip(estimated, measured, strict=True)]


def fit_scale(raw: Sequence[float], measured: Sequence[float]) -> float:
    """The scale s minimising the squared log error of s x raw against measured: the geometric
    mean of measured / raw (errors are relative, so they are fitted in log space)."""
    if not raw or len(raw) != len(measured):
        raise ValueError("need as many raw estimates as measurements, at least one")
    if any(r <= 0 for r in raw) or any(m <= 0 for m in measured):
        raise ValueError("estimates and measurements must be positive")
    logs = [math.log(m / r) for r, m in zip(raw, measured, strict=True)]
    return math.exp(sum(logs) / len(logs))


def leave_one_out_scales(raw: Sequence[float], measured: Sequence[float]) -> list[float]:
    """For each i, fit_scale on every model but i."""
    if len(raw) < 2:
        raise ValueError("leave-one-out needs at least two models")
    return [
        fit_scale(
            [r for j, r in enumerate(raw) if j != i], [m for j, m in enumerate(measured) if j != i]
        )
        for i in range(len(raw))
    ]


def fit_nonnegative(features: Sequence[Sequence[float]], measured: Sequence[float]) -> list[float]:
    """Non-negative w minimising sum(((X @ w) / y - 1) ** 2): least squares on rows scaled by
    1 / y, dropping the most negative weight and refitting until none is negative (an active set
    that is exact for the few, nearly independent features used here)."""
    x = np.asarray(features, dtype=float)
    y = np.asarray(measured, dtype=float)
    if x.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError("need one row of features per measurement")
    if np.any(y <= 0):
        raise ValueError("measurements must be positive")
    scaled = x / y[:, None]
    active = list(range(x.shape[1]))
    weights = np.zeros(x.shape[1])
    while active:
        solution, *_ = np.linalg.lstsq(scaled[:, active], np.ones(len(y)), rcond=None)
        if np.all(solution >= 0):
            weights[active] = solution
            break
        active.pop(int(np.argmin(solution)))
    return [float(w) for w in weights]


def leave_one_out_predictions(
    features: Sequence[Sequence[float]], measured: Sequence[float]
) -> list[float]:
    """For each i: features[i] @ the weights fitted on every other row."""
    if len(measured) < 2:
        raise ValueError("leave-one-out needs at least two models")
    predictions = []
    for i in range(len(measured)):
        rest = [j for j in range(len(measured)) if j != i]
        weights = fit_nonnegative([features[j] for j in rest], [measured[j] for j in rest])
        predictions.append(float(np.dot(features[i], weights)))
    return predictions


def leave_group_out_predictions(
    features: Sequence[Sequence[float]], measured: Sequence[float], groups: Sequence[str]
) -> list[float]:
    """For each i: features[i] @ the weights fitted on every row of another group than i's."""
    if len(groups) != len(measured) or len(set(groups)) < 2:
        raise ValueError("need a group per measurement, and at least two groups")
    weights = {
        group: fit_nonnegative(
            [f for f, g in zip(features, groups, strict=True) if g != group],
            [m for m, g in zip(measured, groups, strict=True) if g != group],
        )
        for group in set(groups)
    }
    return [float(np.dot(f, weights[g])) for f, g in zip(features, groups, strict=True)]


def _ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 1, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return ranks


def spearman_rho(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson on ranks; ties get mean ranks)."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError("need two equally long sequences of at least two values")
    ra, rb = _ranks(a), _ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    va = sum((x - ma) ** 2 for x in ra)
    vb = sum((y - mb) ** 2 for y in rb)
    return cov / math.sqrt(va * vb) if va and vb else 0.0


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError("need two equally long sequences of at least two values")
    concordant = discordant = ties_a = ties_b = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif (da > 0) == (db > 0):
                concordant += 1
            else:
                discordant += 1
    n_a = concordant + discordant + ties_a
    n_b = concordant + discordant + ties_b
    return (concordant - discordant) / math.sqrt(n_a * n_b) if n_a and n_b else 0.0


@dataclass(frozen=True)
class ErrorSummary:
    count: int
    median_abs: float
    max_abs: float
    spearman: float
    kendall: float
    discordant_pairs: int  # pairs of models the estimates order the other way round
    # The largest measured gap (slower / faster - 1) of a pair out of order: every pair further
    # apart than this is in order. 0 when none is out of order.
    discordant_gap: float = 0.0

    def meets(self, median_goal: float, max_goal: float) -> bool:
        return (
            self.median_abs <= median_goal
            and self.max_abs <= max_goal
            and self.discordant_pairs == 0
        )


def summarize(estimated: Sequence[float], measured: Sequence[float]) -> ErrorSummary:
    errors = sorted(abs(e) for e in relative_errors(estimated, measured))
    middle = len(errors) // 2
    median = errors[middle] if len(errors) % 2 else (errors[middle - 1] + errors[middle]) / 2
    gaps = [
        max(measured[i], measured[j]) / min(measured[i], measured[j]) - 1
        for i in range(len(measured))
        for j in range(i + 1, len(measured))
        if (estimated[i] - estimated[j]) * (measured[i] - measured[j]) < 0
    ]
    return ErrorSummary(
        count=len(errors),
        median_abs=median,
        max_abs=errors[-1],
        spearman=spearman_rho(estimated, measured),
        kendall=kendall_tau(estimated, measured),
        discordant_pairs=len(gaps),
        discordant_gap=max(gaps, default=0.0),
    )
