"""How a figure is written, in every output: terminal, Markdown, HTML, JUnit properties, history.

One formatter (`number`), one label (`label`), and one headline per record (`headline`): the
suite's headline figure from the registry, else the first gated figure. A report that shows a
figure goes through here, so `p90 12.35 ms` reads the same in a log, a comment and a page.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.registry import headline_of

__all__ = [
    "ESTIMATED_FIGURES",
    "Headline",
    "bounds",
    "fidelity_of",
    "headline",
    "interval",
    "label",
    "message_line",
    "number",
    "percent_change",
    "shown",
    "shown_with_interval",
    "threshold",
]

UNITS = (("_ms", "ms"), ("_mb", "MB"), ("_kb", "kB"), ("_bytes", "B"))
FRACTIONS = ("accuracy", "mae", "accuracy_drop", "baseline_accuracy", "baseline_agreement")
RATIOS = ("ratio", "instructions_ratio", "ratio_low", "ratio_high")  # new / base: +x.x%
GROWTHS = ("memory_growth",)  # new / base - 1: +x.x%


def percent_change(ratio: float) -> str:
    """A ratio new / base as a signed change: 1.079 -> `+7.9%`."""
    return f"{(ratio - 1) * 100:+.1f}%"


def number(value: Any, figure: str) -> str:
    """A figure's value with its unit: `0.01794 ms`, `10.5 kB`, `0.9733`, `+7.9%`, `1.23 M`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "-" if not isinstance(value, str) else value
    if figure in RATIOS:
        return percent_change(value)
    if figure in GROWTHS:
        return percent_change(value + 1)
    unit = next((u for suffix, u in UNITS if figure.endswith(suffix)), "")
    if figure.endswith("_ms"):
        text = f"{value:,.0f}" if abs(value) >= 10_000 else f"{value:.4g}"
    elif unit:
        text = f"{value:,.1f}"
    elif figure in FRACTIONS or isinstance(value, float) and abs(value) < 10:
        text = f"{value:.4f}"
    elif abs(value) >= 1e6:
        text = f"{value / 1e6:,.2f} M"
    else:
        text = f"{value:,.0f}" if isinstance(value, float) else str(value)
    return f"{text} {unit}".strip()


def label(figure: str) -> str:
    """`p90_ms` -> `p90`, `board_peak_mb` -> `board peak`, `size_kb` -> `size`."""
    for suffix, _ in UNITS:
        if figure.endswith(suffix):
            return figure[: -len(suffix)].replace("_", " ")
    return figure.replace("_", " ")


def shown(figure: str, value: Any) -> str:
    """`p90 12.35 ms`: the label and the number, as every output writes a figure."""
    return f"{label(figure)} {number(value, figure)}"


def threshold(gate: str, value: Any, figure: str) -> str:
    """A gate's threshold: a share for regression/growth gates (`5%`), else the figure's unit."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "-"
    if gate.endswith(("_regression", "_growth")):
        return f"{value:.0%}"
    return number(value, figure)


def bounds(figures: Mapping[str, Any], figure: str) -> tuple[float, float] | None:
    """The figure's confidence interval (or error band) when the record carries it, as
    `p90_low_ms` / `p90_high_ms` for `p90_ms`, or `estimated_ms_low` / `estimated_ms_high`."""
    suffix = next((s for s, _ in UNITS if figure.endswith(s)), "")
    stem = figure[: len(figure) - len(suffix)]
    low, high = figures.get(f"{stem}_low{suffix}"), figures.get(f"{stem}_high{suffix}")
    if low is None and high is None:
        low, high = figures.get(f"{figure}_low"), figures.get(f"{figure}_high")
    if not isinstance(low, (int, float)) or not isinstance(high, (int, float)):
        return None
    if not _real(low) or not _real(high):
        return None
    return float(low), float(high)


def _real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def interval(figures: Mapping[str, Any], figure: str) -> str:
    """` [low, high]` when the record carries the figure's confidence interval; else empty."""
    found = bounds(figures, figure)
    if found is None:
        return ""
    return f" [{number(found[0], figure).split()[0]}, {number(found[1], figure).split()[0]}]"


def shown_with_interval(figure: str, value: Any, figures: Mapping[str, Any]) -> str:
    """`p90 9.3 ms [5.3, 9.3]`: the value as every report writes it, its bounds at the same
    precision (no bound looks more exact than the value: not `9.3 ms [5.311, 9.32]`)."""
    found = bounds(figures, figure)
    text = shown(figure, value)
    if found is None or not _real(value) or figure in RATIOS + GROWTHS:
        return text
    digits = number(value, figure).split()[0].replace(",", "")
    decimals = len(digits.split(".")[1]) if "." in digits else 0
    low, high = (f"{b:,.{decimals}f}" for b in found)
    return f"{text} [{low}, {high}]"


# Figures that stand for the board on an emulated device: estimated, not emulated.
ESTIMATED_FIGURES = (
    "estimated_ms",
    "board_peak_mb",
    "estimated_ttft_ms",
    "estimated_decode_ms",
    "estimated_tokens_per_s",
)
FIDELITY_WORDS = {
    "measured": "measured",
    "emulated": "emulated (QEMU wall-clock)",
    "estimated": "estimated (timing model)",
    "counted": "counted",
}


def fidelity_of(record: Mapping[str, Any], figure: str) -> str:
    """The fidelity of one figure of a record: a board estimate is `estimated` though the
    record (the worker that ran) is `emulated`, and so is the ratio of two estimates (an
    emulated board's regression against the base, harness.suites.latency: `ratio_basis`).
    Every report labels a figure by this."""
    if figure in ESTIMATED_FIGURES:
        return "estimated"
    if figure == "ratio" and (record.get("figures") or {}).get("ratio_basis") == "estimated":
        return "estimated"
    return str(record["fidelity"])


@dataclass(frozen=True)
class Headline:
    figure: str  # the figure's name, `-` when the record has none
    value: Any

    @property
    def text(self) -> str:
        """`p90 12.35 ms`, or `-` for a record without figures."""
        return shown(self.figure, self.value) if self.value is not None else "-"


def headline(record: Mapping[str, Any]) -> Headline:
    """The figure a record is summed up by: its suite's headline (the registry's), else the
    first gate's figure, else its first number."""
    figures = record.get("figures") or {}
    figure = headline_of(record)
    if figure is None:
        checked = [c["figure"] for c in record["verdict"].get("checks") or []]
        figure = next((str(f) for f in checked if f in figures), None)
    if figure is None:
        figure = next(
            (
                k
                for k, v in figures.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)
            ),
            "-",
        )
    return Headline(figure, figures.get(figure))


def message_line(text: str) -> str:
    """A multi-line message (a runtime's error says its cause on a later line) on one line,
    its lines joined with ` ⏎ `, up to a traceback (which stays in the JSON results)."""
    kept: list[str] = []
    for line in str(text).strip().splitlines():
        if line.strip().lower().startswith("traceback"):
            break
        if line.strip():
            kept.append(line.strip())
    return " ⏎ ".join(kept)
