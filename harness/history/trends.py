"""Trend judgement, pure: a figure's series over runs, the level changes in it, and which of
them are regressions. No storage here; every history backend hands its points to `trend`.

How a level change is found depends on the figure (harness.catalogue):

- An **exact** figure (counted instructions, size, accuracy on a fixed dataset, perplexity of a
  fixed text: `catalogue.exact`) gives the same number for the same model on the same testbed,
  so every change of value is a level change, from the run that first shows it.
- A figure that **varies** between runs (wall-clock times, tokens per second, memory peaks:
  `catalogue.VARY`) steps where `stats.detect_steps` finds a new level of at least two runs
  (asv's robust piecewise-constant fit). The newest run alone is a level change too when it
  moved further than that figure can drift between two runs: three robust standard deviations
  of the series' run-to-run differences when at least `NOISE_RUNS` runs came before it, else
  `SINGLE_RUN_DRIFT`. Such a step rests on one run and is marked so (`Trend.unconfirmed`).

A **regression** is a level change for the worse (the catalogue's direction), by at least
`min_change` relative to the level before it, whose first run is among the last `window` runs.
It is named with the commit range in which it stepped: the last commit at the old level and the
first at the new one (`git log OLD..NEW` lists the suspects).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from harness import catalogue
from harness.catalogue import NOISE_FLOOR

__all__ = [
    "NOISE_RUNS",
    "SINGLE_RUN_DRIFT",
    "Point",
    "Trend",
    "figure_direction",
    "find_steps",
    "trend",
]

# One run of a varying figure is not a level unless it moved more than this, relative, when
# the series is too short to measure its own noise: on these machines medians of one-threaded
# timings hold within ~10% between processes (docs/measurement.md); a 30% drop is news at once.
SINGLE_RUN_DRIFT = 0.10
NOISE_RUNS = 5  # runs before the newest one needed to measure the series' own drift
_NOISE_SDS = 3.0  # how many robust standard deviations of drift the newest run must exceed
_TOLERANCE = 1e-9  # relative: a planted 2% is 2%, whatever the last bit of a float says


def figure_direction(figure: str) -> int:
    """+1 higher is better, -1 lower is better, 0 not judged: the catalogue's."""
    return catalogue.direction(figure)


@dataclass(frozen=True)
class Point:
    """One stored figure of one run."""

    run_id: int
    created: str
    commit: str | None
    machine: str
    device: str
    model: str
    suite: str
    fidelity: str
    figure: str
    value: float
    verdict: str
    repository: str = ""


# (index into points of the first run at the new level, level before, level after)
Step = tuple[int, float, float]


@dataclass(frozen=True)
class Trend:
    """A figure's series over runs with the level changes found in it."""

    device: str
    model: str
    suite: str
    figure: str
    fidelity: str
    points: tuple[Point, ...]
    steps: tuple[Step, ...]
    unconfirmed: frozenset[int] = field(default=frozenset())  # steps resting on one run
    repository: str = ""

    @property
    def direction(self) -> int:
        """+1: higher is better, -1: lower is better, 0: not judged."""
        return figure_direction(self.figure)

    @property
    def item(self) -> str:
        """`suite[model@device]`, with the repository in front when the record names one."""
        where = f"{self.repository}: " if self.repository else ""
        return f"{where}{self.suite}[{self.model}@{self.device}]"

    def regressions(
        self, window: int = 3, min_change: float = NOISE_FLOOR
    ) -> list[tuple[int, float]]:
        """Steps for the worse whose first run is among the last `window` runs, by at least
        `min_change` (relative): (index, relative change). Older steps were reported on
        earlier nights."""
        found: list[tuple[int, float]] = []
        for index, before, after in self.steps:
            if index < len(self.points) - window or self.direction == 0 or before == 0:
                continue
            change = (after - before) / abs(before)
            if change * self.direction < 0 and abs(change) >= min_change * (1 - _TOLERANCE):
                found.append((index, change))
        return found

    def commit_range(self, index: int) -> str:
        """`OLD..NEW`: the last commit at the level before step `index` and the first at the
        new level, 10 digits each (one commit when both are the same or one is unknown)."""
        new = (self.points[index].commit or "?")[:10]
        old = (self.points[index - 1].commit or "?")[:10] if index > 0 else "?"
        return new if old in ("?", new) else f"{old}..{new}"


def _relative_noise(values: Sequence[float]) -> float | None:
    """A robust relative standard deviation of run-to-run drift (median absolute difference of
    neighbours, scaled to a normal sd), or None below NOISE_RUNS values."""
    if len(values) < NOISE_RUNS:
        return None
    level = statistics.median(values)
    if level == 0:
        return None
    diffs = [abs(b - a) for a, b in zip(values, values[1:], strict=False)]
    return 1.4826 * statistics.median(diffs) / math.sqrt(2) / abs(level)


def find_steps(
    values: Sequence[float], figure: str, fidelity: str = "measured", min_size: int = 2
) -> tuple[tuple[Step, ...], frozenset[int]]:
    """The level changes of a series (see the module's docstring) and which of them rest on
    the newest run alone."""
    from harness.stats import detect_steps

    if len(values) < 2:
        return (), frozenset()
    if catalogue.exact(figure, fidelity):
        changed = [i for i in range(1, len(values)) if values[i] != values[i - 1]]
        steps = tuple((i, values[i - 1], values[i]) for i in changed)
        return steps, frozenset()
    found = [(s.index, s.before, s.after) for s in detect_steps(values, min_size=min_size)]
    last = len(values) - 1
    level_start = found[-1][0] if found else 0
    before = values[level_start:last]
    if before and (not found or found[-1][0] != last):
        level = statistics.median(before)
        noise = _relative_noise(values[:last])
        drift = SINGLE_RUN_DRIFT if noise is None else _NOISE_SDS * noise
        if level and abs(values[last] - level) / abs(level) > drift:
            return (*found, (last, level, values[last])), frozenset({last})
    return tuple(found), frozenset()


def trend(
    points: Sequence[Point],
    *,
    device: str,
    model: str,
    suite: str,
    figure: str,
    fidelity: str,
    repository: str = "",
    min_size: int = 2,
) -> Trend:
    """A Trend over `points` (oldest first) with its level changes."""
    steps, unconfirmed = find_steps([p.value for p in points], figure, fidelity, min_size)
    return Trend(
        device, model, suite, figure, fidelity, tuple(points), steps, unconfirmed, repository
    )
