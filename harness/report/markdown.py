"""The Markdown report: what a pull request's comment and a job summary show.

One row per device × model × suite: the headline figure with its fidelity beside it, the change
against the baseline with its confidence interval where the record carries one, the gates and the
verdict; then why anything failed, level changes in the history, and the devices and runtimes.
Emulated times are QEMU wall-clock on the CI machine and are always labelled so, never as device
milliseconds. The helpers here (numbers, units, deltas) are shared with the HTML report.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.registry import ORDER, headline_of
from harness.store import Trend
from harness.verdict import Overall, overall

ICON = {
    "PASS": "✅",
    "FAIL": "❌",
    "ERROR": "💥",
    "INCONCLUSIVE": "⚠️",
    "NO BASELINE": "❔",
    "NO GATE": "➖",
    "SKIPPED": "⏭️",
}
UNITS = (("_ms", "ms"), ("_mb", "MB"), ("_kb", "kB"), ("_bytes", "B"))
MARK = {"emulated": "†", "estimated": "‡"}
FOOTNOTE = {
    "emulated": "† emulated: wall-clock time under QEMU on the CI machine, not device "
    "milliseconds; meaningful only against a baseline measured on the same emulator.",
    "estimated": "‡ estimated: device milliseconds computed from counted instructions by the "
    "device profile's stated clock and cycles-per-instruction model.",
}
COMMENT_LIMIT = 65_000  # GitHub rejects comment bodies over 65,536 characters


def number(value: Any, figure: str) -> str:
    """A figure's value with its unit: `0.01794 ms`, `10.5 kB`, `0.9733`, `1.23 M`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "-"
    unit = next((u for suffix, u in UNITS if figure.endswith(suffix)), "")
    if figure.endswith("_ms"):
        text = f"{value:,.0f}" if abs(value) >= 10_000 else f"{value:.4g}"
    elif unit:
        text = f"{value:,.1f}"
    elif figure in ("accuracy", "mae") or isinstance(value, float) and abs(value) < 10:
        text = f"{value:.4f}"
    elif abs(value) >= 1e6:
        text = f"{value / 1e6:,.2f} M"
    else:
        text = f"{value:,.0f}" if isinstance(value, float) else str(value)
    return f"{text} {unit}".strip()


def label(figure: str) -> str:
    """`p90_ms` -> `p90`, `peak_mb` -> `peak`, `size_kb` -> `size`."""
    for suffix, _ in UNITS:
        if figure.endswith(suffix):
            return figure[: -len(suffix)].replace("_", " ")
    return figure.replace("_", " ")


def interval(figures: Mapping[str, Any], figure: str) -> str:
    """` [low, high]` when the record carries the figure's confidence interval, as
    `p90_low_ms`/`p90_high_ms` for `p90_ms`; else empty."""
    suffix = next((s for s, _ in UNITS if figure.endswith(s)), "")
    stem = figure[: len(figure) - len(suffix)]
    low, high = figures.get(f"{stem}_low{suffix}"), figures.get(f"{stem}_high{suffix}")
    if not isinstance(low, (int, float)) or not isinstance(high, (int, float)):
        return ""
    return f" [{number(low, figure).split()[0]}, {number(high, figure).split()[0]}]"


def with_fidelity(figure: str, value: Any, fidelity: str, figures: Mapping[str, Any]) -> str:
    """`p90 12.3 ms [11.9, 12.8] · emulated†`: the fidelity stands beside every number."""
    shown = f"{label(figure)} {number(value, figure)}{interval(figures, figure)}"
    return f"{shown} · {fidelity}{MARK.get(fidelity, '')}"


def headline_figure(record: Mapping[str, Any]) -> str:
    """The figure a row shows: the suite's headline, else the first gate's figure."""
    figures = record.get("figures") or {}
    headline = headline_of(record)
    if headline is not None:
        return headline
    for check in record["verdict"].get("checks") or []:
        if check["figure"] in figures:
            return str(check["figure"])
    return next((k for k, v in figures.items() if isinstance(v, (int, float))), "-")


def _percent(ratio: float) -> str:
    return f"{(ratio - 1) * 100:+.1f}%"


def delta(record: Mapping[str, Any]) -> str:
    """The change against the baseline, from what the comparison left on the record: `ratio`
    with `ratio_low`/`ratio_high` (latency, paired over `rounds` or unpaired), else the
    headline figure against `baseline_<figure>`."""
    figures = record.get("figures") or {}
    ratio = figures.get("ratio")
    if isinstance(ratio, (int, float)) and not isinstance(ratio, bool):
        text = _percent(ratio)
        low, high = figures.get("ratio_low"), figures.get("ratio_high")
        if isinstance(low, (int, float)) and isinstance(high, (int, float)):
            text += f" [{_percent(low)}, {_percent(high)}]"
        if figures.get("paired") is False:
            return text + " (unpaired)"
        n = figures.get("rounds")
        return text + (f" (paired n={n})" if n else "")
    figure = headline_figure(record)
    value, base = figures.get(figure), figures.get(f"baseline_{figure}")
    if not isinstance(value, (int, float)) or not isinstance(base, (int, float)):
        return "no baseline" if (record.get("flags") or {}).get("baseline_missing") else "—"
    if figure in ("accuracy", "mae") or not base:
        return f"{value - base:+.4f} (base {number(base, figure)})"
    return f"{_percent(value / base)} (base {number(base, figure)})"


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


def threshold(gate: str, value: Any, figure: str) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    if gate.endswith(("_regression", "_growth")):
        return f"{value:.0%}"
    return number(value, figure)


def gates(record: Mapping[str, Any]) -> str:
    """The gates applied: `size_kb_max 64.0 kB`, a failed one marked ✗; `-` when none."""
    shown = []
    for check in record["verdict"].get("checks") or []:
        mark = {False: " ✗", None: " (not applied)"}.get(check["passed"], "")
        value = threshold(check["gate"], check["threshold"], check["figure"])
        shown.append(f"{check['gate']} {value}{mark}")
    return ", ".join(shown) or "-"


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


def rows(results: Iterable[Mapping[str, Any]]) -> list[Row]:
    ordered = sorted(
        results, key=lambda r: (r["device"], r["model"], ORDER.get(r["suite"], len(ORDER)))
    )
    table = []
    for r in ordered:
        figure = headline_figure(r)
        value = (r.get("figures") or {}).get(figure)
        figures = r.get("figures") or {}
        shown = with_fidelity(figure, value, r["fidelity"], figures) if value is not None else "-"
        table.append(
            Row(
                r["device"],
                r["model"],
                r["suite"],
                shown,
                delta(r),
                gates(r),
                str(r["verdict"]["status"]),
                str(r["fidelity"]),
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
        found.append(str(record["error"]).strip().splitlines()[0])
    return found


def item_name(record: Mapping[str, Any]) -> str:
    return f"{record['suite']}[{record['model']}@{record['device']}]"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>")


def _table(header: Sequence[str], body: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in body]
    return lines


STEP_HEADER = ("item", "figure", "level", "change", "first at commit", "")


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
            body.append(
                (
                    f"{trend.suite}[{trend.model}@{trend.device}]",
                    f"{label(trend.figure)} ({trend.fidelity})",
                    f"{number(before, trend.figure)} → {number(after, trend.figure)}",
                    change,
                    f"{(point.commit or '?')[:10]} ({point.created[:10]}){machine}",
                    "❌ regression" if index in recent else "",
                )
            )
    return body


def steps_table(trends: Sequence[Trend], window: int = 3) -> list[str]:
    body = step_rows(trends, window)
    if not body:
        return []
    return ["### Level changes in the history", "", *_table(STEP_HEADER, body), ""]


def render(
    document: Mapping[str, Any],
    *,
    verdict: Overall | None = None,
    trends: Sequence[Trend] = (),
    title: str = "harness model gate",
    limit: int | None = None,
) -> str:
    """The whole report. `limit` caps the length (a PR comment's), cutting the details first."""
    verdict = verdict or overall(document)
    results = document.get("results", [])
    lines = [f"## {ICON.get(verdict.status, '')} {title}: {verdict.headline()}", ""]
    devices = ", ".join(f"{d['name']} ({d.get('fidelity', '?')})" for d in document["devices"])
    commit = (document.get("git") or {}).get("commit")
    lines.append(
        f"Devices: {devices or '-'} · harness {document.get('harness_version', '?')}"
        + (f" · commit {commit[:10]}" if commit else "")
    )
    lines.append("")
    lines += [f"- ⚠️ {p}" for p in verdict.problems]
    if verdict.problems:
        lines.append("")
    header = ("device", "model", "suite", "figure", "vs baseline", "gates", "verdict")
    body = [
        (
            r.device,
            r.model,
            r.suite,
            r.figure,
            r.delta,
            r.gates,
            f"{ICON.get(r.status, '')} {r.status}",
        )
        for r in rows(results)
    ]
    if body:
        lines += [*_table(header, body), ""]
    why = []
    for record in sorted(results, key=item_name):
        status = record["verdict"]["status"]
        notes = reasons(record) if status not in ("PASS", "NO GATE") else []
        note = baseline_note(record, document)
        if notes or note:
            text = "; ".join([*notes, *([note] if note else [])])
            why.append(f"- **{item_name(record)}** {status}: {text}")
    if why:
        lines += ["### Why", "", *why, ""]
    lines += gate_changes(results)
    lines += steps_table(trends)
    used = sorted({r["fidelity"] for r in results} & set(FOOTNOTE))
    lines += [FOOTNOTE[f] for f in used]
    if used:
        lines.append("")
    details = _details(document)
    text = "\n".join(lines) + "\n"
    if limit is not None and len(text) + len(details) > limit:
        cut = "\n_(details left out: the full report is in the run's artifacts)_\n"
        return text[: max(0, limit - len(cut))] + cut
    return text + details


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


def _details(document: Mapping[str, Any]) -> str:
    body = []
    versions: dict[str, set[str]] = {}
    for record in document.get("results", []):
        for package, version in ((record.get("worker") or {}).get("versions") or {}).items():
            versions.setdefault(record["device"], set()).add(f"{package} {version}")
    for d in document.get("devices", []):
        memory = f"{d['memory_mb']} MB" if d.get("memory_mb") else "-"
        cpu = d.get("cpu") or d.get("machine") or "-"
        runtime = ", ".join(sorted(versions.get(d["name"], set()))) or "-"
        body.append(
            (
                d["name"],
                d.get("arch", "-"),
                cpu,
                str(d.get("cpus") or "all"),
                memory,
                d.get("fidelity", "-"),
                runtime,
            )
        )
    if not body:
        return ""
    header = ("device", "arch", "cpu", "cpus", "memory", "fidelity", "versions")
    table = "\n".join(_table(header, body))
    return f"<details><summary>Devices and versions</summary>\n\n{table}\n\n</details>\n"
