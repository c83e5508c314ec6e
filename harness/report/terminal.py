"""The gate table printed in pytest's terminal summary and by `harness merge`: one row per gate
check (greppable), each item's headline figure on its first row, figures written by figures.py."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterable, Mapping
from typing import Any

from rich.console import Console
from rich.table import Table

from harness.registry import ORDER
from harness.report.figures import fidelity_of, headline, message_line, shown, threshold

STYLE = {
    "PASS": "green",
    "FAIL": "bold red",
    "ERROR": "bold red",
    "INCONCLUSIVE": "yellow",
    "SKIPPED": "yellow",
    "NO GATE": "dim",
    "NO BASELINE": "yellow",
    "WARN": "yellow",
}


def rows(results: Iterable[Mapping[str, Any]]) -> list[tuple[str, ...]]:
    """One row per gate check; a suite without checks shows its headline figure."""
    table: list[tuple[str, ...]] = []
    ordered = sorted(
        results, key=lambda r: (r["device"], r["model"], ORDER.get(r["suite"], len(ORDER)))
    )
    for r in ordered:
        verdict = r["verdict"]
        status = verdict["status"]
        common = (r["device"], r["model"], r["suite"])
        if r.get("error"):
            table.append((*common, "-", "-", status, r["fidelity"], message_line(r["error"])))
            continue
        checks = verdict["checks"]
        top = headline(r)
        if not any(c["figure"] == top.figure for c in checks):
            # The suite's headline figure is on every item's first row, gated or not.
            note = "" if checks else "; ".join(verdict["reasons"]) or "no gate set"
            table.append((*common, top.text, "-", status, r["fidelity"], note))
        # Board answers from the answer cache: said on the item's first row with no other note.
        cached = str((r.get("figures") or {}).get("board_answers") or "")
        for position, check in enumerate(checks):
            if check["passed"] is None:
                outcome = status if status in ("NO BASELINE", "INCONCLUSIVE") else "not applied"
            else:
                outcome = "PASS" if check["passed"] else "FAIL"
            figure = shown(check["figure"], check["value"])
            gate = check["gate"]
            limit = f"{gate} {threshold(gate, check['threshold'], check['figure'])}"
            # A gate change is listed even when accepted: reviewers see every one.
            shown_always = r["suite"] == "policy"
            note = check["message"] if check["passed"] is not True or shown_always else ""
            note = note or (cached if position == 0 else "")
            table.append((*common, figure, limit, outcome, _fidelity(r, check), note))
        if checks and (status == "INCONCLUSIVE" or (r.get("flags") or {}).get("failure")):
            table.append((*common, "-", "-", status, r["fidelity"], "; ".join(verdict["reasons"])))
    return table


def gate_table(results: Iterable[Mapping[str, Any]], markup: bool) -> list[str]:
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


def _fidelity(record: Mapping[str, Any], check: Mapping[str, Any]) -> str:
    """The fidelity of the figure a check read: a board estimate is `estimated`."""
    return fidelity_of(record, str(check["figure"]))
