"""What every report says, whatever its format: verdict icons, fidelity marks and footnotes, the
headline and change cells, a record's reasons, its item name, the gate changes, the level-change
rows. markdown.py, html.py, nightly.py and site.py lay these out; none takes its wording from
another format's module.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.registry import ORDER
from harness.report import digest
from harness.report.figures import (
    fidelity_of,
    headline,
    label,
    message_line,
    number,
    percent_change,
    shown_with_interval,
    threshold,
)
from harness.store import Trend

ICON = {
    "PASS": "✅",
    "FAIL": "❌",
    "ERROR": "💥",
    "INCONCLUSIVE": "⚠️",
    "NO BASELINE": "❔",
    "WARN": "🔶",
    "NO GATE": "➖",
    "SKIPPED": "⏭️",
}
MARK = {"emulated": "†", "estimated": "‡"}
FOOTNOTE = {
    "emulated": "† emulated: wall-clock time under QEMU on the CI machine, not device "
    "milliseconds; meaningful only against a baseline measured on the same emulator.",
    "estimated": "‡ estimated: device milliseconds computed from counted instructions by the "
    "device profile's stated clock and cycles-per-instruction model.",
}


def with_fidelity(figure: str, value: Any, fidelity: str, figures: Mapping[str, Any]) -> str:
    """`p90 12.3 ms [11.9, 12.8] · emulated†`: the fidelity stands beside every number."""
    mark = MARK.get(fidelity, "")
    return f"{shown_with_interval(figure, value, figures)} · {fidelity}{mark}"


def fidelities(results: Iterable[Mapping[str, Any]]) -> list[str]:
    """The fidelities the reports' figures have (a board estimate is `estimated`, not the
    `emulated` of the worker that ran): the footnotes a report needs."""
    used = {fidelity_of(r, headline_figure(r)) for r in results}
    return sorted(used & set(FOOTNOTE))


def headline_figure(record: Mapping[str, Any]) -> str:
    """The figure a row shows (figures.headline: the registry's, one definition)."""
    return headline(record).figure


def delta(record: Mapping[str, Any]) -> str:
    """The change against the baseline, from what the comparison left on the record: `ratio`
    with `ratio_low`/`ratio_high` (latency, paired over `rounds` or unpaired), else the
    headline figure against `baseline_<figure>`."""
    figures = record.get("figures") or {}
    ratio = figures.get("ratio")
    if isinstance(ratio, (int, float)) and not isinstance(ratio, bool):
        text = percent_change(ratio)
        low, high = figures.get("ratio_low"), figures.get("ratio_high")
        if isinstance(low, (int, float)) and isinstance(high, (int, float)):
            text += f" [{percent_change(low)}, {percent_change(high)}]"
        if figures.get("paired") is False:
            return text + " (unpaired)"
        n = figures.get("rounds")
        return text + (f" (paired n={n})" if n else "")
    growth, share = figures.get("memory_growth"), figures.get("baseline_model_share_mb")
    if isinstance(growth, (int, float)) and isinstance(share, (int, float)):
        # Memory compares the model's share: the worker's fixed cost would dilute a growth.
        return f"{number(growth, 'memory_growth')} share (base {number(share, 'model_share_mb')})"
    figure = headline_figure(record)
    value, base = figures.get(figure), figures.get(f"baseline_{figure}")
    if not isinstance(value, (int, float)) or not isinstance(base, (int, float)):
        return "no baseline" if (record.get("flags") or {}).get("baseline_missing") else "—"
    if figure in ("accuracy", "mae") or not base:
        return f"{value - base:+.4f} (base {number(base, figure)})"
    return f"{percent_change(value / base)} (base {number(base, figure)})"


def baseline_note(record: Mapping[str, Any], document: Mapping[str, Any]) -> str | None:
    """A warning when the record's baseline came from another machine fingerprint."""
    base = record.get("baseline")
    if not isinstance(base, Mapping):
        return None
    ours = (document.get("host") or {}).get("fingerprint")
    theirs = base.get("machine")
    if base.get("other_machine") or (ours and theirs and ours != theirs):
        return f"baseline measured on another machine ({theirs or '?'}, this run {ours or '?'})"
    return None


def gates(record: Mapping[str, Any]) -> str:
    """The gates applied: `size_kb_max 64.0 kB`, a failed one marked ✗; `-` when none."""
    listed = []
    for check in record["verdict"].get("checks") or []:
        mark = {False: " ✗", None: " (not applied)"}.get(check["passed"], "")
        value = threshold(check["gate"], check["threshold"], check["figure"])
        listed.append(f"{check['gate']} {value}{mark}")
    return ", ".join(listed) or "-"


@dataclass(frozen=True)
class Row:
    device: str
    model: str
    suite: str
    figure: str
    delta: str
    gates: str
    status: str
    fidelity: str


def figure_cell(record: Mapping[str, Any]) -> str:
    """The headline with its interval and fidelity: `p90 12.35 ms [11.9, 12.8] · emulated†`."""
    top = headline(record)
    if top.value is None:
        return "-"
    fidelity = fidelity_of(record, top.figure)
    return with_fidelity(top.figure, top.value, fidelity, record.get("figures") or {})


def rows(results: Iterable[Mapping[str, Any]]) -> list[Row]:
    ordered = sorted(
        results, key=lambda r: (r["device"], r["model"], ORDER.get(r["suite"], len(ORDER)))
    )
    table = []
    for r in ordered:
        table.append(
            Row(
                r["device"],
                r["model"],
                r["suite"],
                figure_cell(r),
                delta(r),
                gates(r),
                str(r["verdict"]["status"]),
                fidelity_of(r, headline_figure(r)),
            )
        )
    return table


def reasons(record: Mapping[str, Any]) -> list[str]:
    """Why a record did not pass: failing checks' messages, the verdict's reasons, the error."""
    found = [
        str(c["message"]) for c in record["verdict"].get("checks") or [] if c["passed"] is False
    ]
    found += [str(r) for r in record["verdict"].get("reasons") or []]
    if record.get("error"):
        # Whole (a runtime's error says its cause on a later line) and once: the item's reason
        # is usually the error itself.
        error = str(record["error"]).strip()
        found = [f for f in found if f.strip() != error]
        found.append(error)
    # On one line each; a failing check's message is often a reason too.
    return list(dict.fromkeys(message_line(f) for f in found))


def item_name(record: Mapping[str, Any]) -> str:
    return f"{record['suite']}[{record['model']}@{record['device']}]"


STEP_HEADER = ("item", "figure", "level", "change", "stepped in commits", "")


def step_rows(trends: Sequence[Trend], window: int = 3) -> list[tuple[str, ...]]:
    """Level changes in the history: where each figure moved, and whether that was for the
    worse within the last `window` runs (a regression the nightly fails on)."""
    body: list[tuple[str, ...]] = []
    for trend in trends:
        recent = {index for index, _ in trend.regressions(window)}
        for index, before, after in trend.steps:
            point = trend.points[index]
            previous = trend.points[index - 1] if index else point
            change = f"{(after - before) / abs(before) * 100:+.1f}%" if before else "-"
            machine = " (machine changed)" if previous.machine != point.machine else ""
            once = " (one run)" if index in trend.unconfirmed else ""
            body.append(
                (
                    trend.item,
                    f"{label(trend.figure)} ({trend.fidelity})",
                    f"{number(before, trend.figure)} → {number(after, trend.figure)}",
                    change + once,
                    f"{trend.commit_range(index)} ({point.created[:10]}){machine}",
                    "❌ regression" if index in recent else "",
                )
            )
    return body


def grid_cell(cell: digest.Cell | None) -> str:
    """`❌ latency: p90 12.35 ms (2)`: the worst verdict, and the figure of the item that has it."""
    if cell is None:
        return "·"
    quiet = cell.status in ("PASS", "NO GATE") or cell.headline.text.startswith(cell.suite)
    where = "" if quiet else f"{cell.suite}: "
    count = f" ({cell.failing})" if cell.failing > 1 else ""
    return f"{ICON.get(cell.status, cell.status)} {where}{cell.headline.text}{count}"


def gate_changes(results: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every gate this change edits against the base, accepted or not (policy records)."""
    listed = [
        f"- {r['model']}: {change}"
        + (" — accepted (--allow-gate-changes)" if r["figures"].get("allowed") else "")
        for r in results
        if r["suite"] == "policy"
        for change in r["figures"].get("changes", [])
        if "(loosened)" in change or "(tightened)" in change
    ]
    return ["### Gate changes in this change", "", *listed, ""] if listed else []
