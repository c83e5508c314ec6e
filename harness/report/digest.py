"""What a reviewer reads first, for every report format: the items that need a look (failed,
errored, INCONCLUSIVE, or changed against the base beyond noise) and the model × device grid.

Pure functions over records; markdown.py and html.py only lay them out.

"Beyond noise" is the record's own evidence where it has some: latency's ratio interval excludes
no change. Size and accuracy on a fixed dataset are deterministic, so any change is real. Memory
growth and counted instructions carry no interval; they are listed from NOISE_FLOOR (relative),
the history's default smallest step (`harness report --min-change`), so the summary and the
nightly count the same moves. The gates, not this list, decide the verdict.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness import catalogue
from harness.registry import ORDER
from harness.report.figures import Headline, headline, number, percent_change
from harness.results import ERROR, FAIL, INCONCLUSIVE, STATUSES

__all__ = ["Cell", "Change", "Grid", "NOISE_FLOOR", "SEVERITY", "changes", "grid", "needs_a_look"]

NOISE_FLOOR = catalogue.NOISE_FLOOR
# Worst first (harness.results.Status): a grid cell shows the worst verdict among its items.
SEVERITY = STATUSES
NOT_PASSED = (ERROR, FAIL, INCONCLUSIVE)
# Which item's figure stands for a cell when verdicts tie: the one a reviewer asks about first.
KEY_SUITES = ("latency", "accuracy", "memory", "size")


@dataclass(frozen=True)
class Change:
    record: Mapping[str, Any]
    text: str  # `+7.9% [+5.1%, +10.6%]`, `0.9800 → 0.9733`
    worse: bool


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _latency(figures: Mapping[str, Any]) -> Change | None:
    ratio, low, high = (_number(figures.get(k)) for k in ("ratio", "ratio_low", "ratio_high"))
    if ratio is None or low is None or high is None or low <= 1.0 <= high:
        return None
    text = f"{percent_change(ratio)} [{percent_change(low)}, {percent_change(high)}]"
    return Change({}, text, worse=low > 1.0)


def _moved(
    figures: Mapping[str, Any], figure: str, floor: float, higher_is_better: bool
) -> Change | None:
    value, base = _number(figures.get(figure)), _number(figures.get(f"baseline_{figure}"))
    if value is None or base is None or value == base:
        return None
    relative = (value - base) / abs(base) if base else float("inf")
    if abs(relative) < floor:
        return None
    text = f"{number(base, figure)} → {number(value, figure)}"
    if base:
        text += f" ({percent_change(value / base)})"
    return Change({}, text, worse=(value < base) == higher_is_better)


def _memory(figures: Mapping[str, Any]) -> Change | None:
    growth = _number(figures.get("memory_growth"))
    if growth is None or abs(growth) < NOISE_FLOOR:
        return None
    share, base = figures.get("model_share_mb"), figures.get("baseline_model_share_mb")
    text = f"model share {number(base, 'model_share_mb')} → {number(share, 'model_share_mb')}"
    return Change({}, f"{text} ({number(growth, 'memory_growth')})", worse=growth > 0)


def change(record: Mapping[str, Any]) -> Change | None:
    """The record's move against the base, when it is beyond noise; else None."""
    figures = record.get("figures") or {}
    suite = record["suite"]
    found: Change | None = None
    if suite == "latency":
        found = _latency(figures)
    elif suite == "accuracy":
        found = _moved(figures, "accuracy", 0.0, True) or _moved(figures, "mae", 0.0, False)
    elif suite == "memory":
        found = _memory(figures)
    elif suite == "size":
        found = _moved(figures, "size_kb", 0.0, False)
    elif suite == "instructions":
        found = _moved(figures, "instructions_per_inference", NOISE_FLOOR, False)
    # Gate edits (policy items) have their own list: wording.gate_changes.
    return Change(record, found.text, found.worse) if found else None


def _rank(record: Mapping[str, Any]) -> int:
    status = str(record["verdict"]["status"])
    return SEVERITY.index(status) if status in SEVERITY else len(SEVERITY)


def _item_key(record: Mapping[str, Any]) -> tuple[str, str, int]:
    return (str(record["model"]), str(record["device"]), ORDER.get(record["suite"], len(ORDER)))


def needs_a_look(results: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Items that failed, errored or were INCONCLUSIVE, worst first."""
    listed = [r for r in results if r["verdict"]["status"] in NOT_PASSED]
    return sorted(listed, key=lambda r: (_rank(r), _item_key(r)))


def changes(results: Iterable[Mapping[str, Any]]) -> list[Change]:
    """Items that passed (or were not gated) but moved against the base beyond noise, worse
    ones first. Items that did not pass are listed by `needs_a_look` instead."""
    found = [
        c
        for r in results
        if r["verdict"]["status"] not in NOT_PASSED and (c := change(r)) is not None
    ]
    return sorted(found, key=lambda c: (not c.worse, _item_key(c.record)))


@dataclass(frozen=True)
class Cell:
    status: str  # the worst verdict of the model's items on the device
    suite: str  # the item whose figure the cell shows
    headline: Headline
    failing: int  # items that did not pass


@dataclass(frozen=True)
class Grid:
    models: tuple[str, ...]
    devices: tuple[str, ...]
    cells: Mapping[tuple[str, str], Cell]  # (model, device)


def _key_order(suite: str) -> tuple[int, int]:
    return (
        KEY_SUITES.index(suite) if suite in KEY_SUITES else len(KEY_SUITES),
        ORDER.get(suite, len(ORDER)),
    )


def grid(results: Sequence[Mapping[str, Any]], devices: Sequence[str] = ()) -> Grid:
    """One cell per model and device: the worst verdict and the headline of the item that has
    it (among equals, latency's, then accuracy's, memory's, size's); devices in the order
    given (the document's), then by name. Policy items (gate edits,
    for every device at once) are not in the grid."""
    by_cell: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for record in results:
        if record["suite"] == "policy":
            continue  # a policy item concerns the model's gates on every device: listed apart
        by_cell.setdefault((str(record["model"]), str(record["device"])), []).append(record)
    cells = {}
    for key, records in by_cell.items():
        worst = min(records, key=lambda r: (_rank(r), _key_order(r["suite"])))
        failing = sum(r["verdict"]["status"] in NOT_PASSED for r in records)
        cells[key] = Cell(str(worst["verdict"]["status"]), worst["suite"], headline(worst), failing)
    models = tuple(sorted({m for m, _ in by_cell}))
    seen = {d for _, d in by_cell}
    # The document's device order (the matrix's), then any other in name order.
    order = tuple(dict.fromkeys([*(d for d in devices if d in seen), *sorted(seen)]))
    return Grid(models, order, cells)
