"""The gate table printed in pytest's terminal summary."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.table import Table

from harness.results import HEADLINE

SUITE_ORDER = {
    "size": 0,
    "operators": 1,
    "accuracy": 2,
    "parity": 3,
    "latency": 4,
    "memory": 5,
    "robustness": 6,
    "instructions": 7,
    "perplexity": 2,  # language models
    "answers": 2,
    "token_parity": 3,
    "generation": 4,
    "prompt_robustness": 6,
}
STYLE = {
    "PASS": "green",
    "FAIL": "bold red",
    "ERROR": "bold red",
    "INCONCLUSIVE": "yellow",
    "SKIPPED": "yellow",
    "NO GATE": "dim",
    "NO BASELINE": "yellow",
}
UNITS = {"size_kb": " kB", "p90_ms": " ms", "peak_mb": " MB", "board_peak_mb": " MB"}


PERCENT_CHANGE = ("ratio",)  # shown as +x.x% change
PERCENT: tuple[str, ...] = ("memory_growth", "latency_max_regression", "memory_max_growth")
PERCENT += ("perplexity_growth", "perplexity_max_growth", "decode_max_regression")
GROWTH = ("memory_growth", "perplexity_growth")  # signed changes
FRACTIONS = ("accuracy", "mae", "accuracy_drop")  # four decimals, like the gate messages


def _number(value: Any, figure: str) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    if figure in PERCENT_CHANGE:
        return f"{value - 1:+.1%}"
    if figure in PERCENT:
        return f"{value:+.1%}" if figure in GROWTH else f"{value:.0%}"
    if figure not in UNITS and not figure.endswith("_ms") and figure not in FRACTIONS:
        return f"{value:.4g}"
    digits = 4 if figure in FRACTIONS else (3 if figure.endswith("_ms") else 1)
    return f"{value:.{digits}f}{UNITS.get(figure, '')}"


def rows(results: Iterable[dict[str, Any]]) -> list[tuple[str, ...]]:
    """One row per gate check; a suite without checks shows its headline figure."""
    table: list[tuple[str, ...]] = []
    ordered = sorted(
        results, key=lambda r: (r["device"], r["model"], SUITE_ORDER.get(r["suite"], 9))
    )
    for r in ordered:
        verdict = r["verdict"]
        status = verdict["status"]
        common = (r["device"], r["model"], r["suite"])
        if r.get("error"):
            table.append((*common, "-", "-", status, r["fidelity"], r["error"].splitlines()[0]))
            continue
        checks = verdict["checks"]
        if not checks:
            figure = HEADLINE.get(r["suite"], "")
            value = r["figures"].get(figure)
            note = "; ".join(verdict["reasons"]) or "no gate set"
            table.append(
                (*common, f"{figure} {_number(value, figure)}", "-", status, r["fidelity"], note)
            )
        for check in checks:
            if check["passed"] is None:
                shown = status if status in ("NO BASELINE", "INCONCLUSIVE") else "not applied"
            else:
                shown = "PASS" if check["passed"] else "FAIL"
            figure = f"{check['figure']} {_number(check['value'], check['figure'])}"
            gate = check["gate"]
            shown_as = gate if gate in PERCENT else check["figure"]
            threshold = f"{gate} {_number(check['threshold'], shown_as)}"
            note = check["message"] if check["passed"] is not True else ""
            table.append((*common, figure, threshold, shown, r["fidelity"], note))
        if checks and (status == "INCONCLUSIVE" or r["figures"].get("failure")):
            table.append((*common, "-", "-", status, r["fidelity"], "; ".join(verdict["reasons"])))
    return table


def gate_table(results: Iterable[dict[str, Any]], markup: bool) -> list[str]:
    table = Table(
        "device",
        "model",
        "suite",
        "figure",
        "threshold",
        "verdict",
        "fidelity",
        "note",
        box=None,
        pad_edge=False,
        show_edge=False,
    )
    for row in rows(results):
        verdict = row[5]
        style = STYLE.get(verdict, "red" if verdict == "FAIL" else "")
        table.add_row(*row[:5], f"[{style}]{verdict}[/]" if style else verdict, *row[6:])
    # Rows are never wrapped: one line per gate keeps logs greppable.
    width = max(shutil.get_terminal_size((140, 24)).columns, 300)
    buffer = io.StringIO()
    Console(
        file=buffer, width=width, force_terminal=markup, no_color=not markup, highlight=False
    ).print(table)
    return buffer.getvalue().rstrip("\n").splitlines()
