"""The Markdown report: what a pull request's comment and a job summary show.

Read in ten seconds: the verdict; only what needs a look (failed, errored, INCONCLUSIVE, or moved
against the base beyond noise, see digest.py) with why; gate edits; a model × device grid (the
worst verdict and its figure per cell); level changes in the history. Then, folded, the full
table (one row per device × model × suite: the headline figure with its interval and fidelity,
the change against the baseline, the gates, the verdict) and the devices and runtimes.
Emulated times are QEMU wall-clock on the CI machine and are always labelled so, never as device
milliseconds. Figures are written by figures.py, as in every other output.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from harness.registry import BY_NAME
from harness.report import digest
from harness.report.figures import (
    number,
)
from harness.report.wording import (
    FOOTNOTE,
    ICON,
    STEP_HEADER,
    baseline_note,
    fidelities,
    figure_cell,
    gate_changes,
    grid_cell,
    item_name,
    reasons,
    rows,
    step_rows,
)
from harness.store import Trend
from harness.verdict import Overall, overall

COMMENT_LIMIT = 65_000  # GitHub rejects comment bodies over 65,536 characters
SUMMARY_LIMIT = 1_000_000  # a job summary may hold 1 MiB
CUT_NOTE = "\n_(report cut to fit: the full report is in the run's artifacts)_\n"


def cut_to(text: str, limit: int, more: bool = False) -> str:
    """`text` within `limit` characters, cut at a line's end, an open `<details>` closed, with
    a note saying it was cut; unchanged when it fits, unless `more` was to follow it."""
    if len(text) <= limit and not more:
        return text
    room = max(0, limit - len(CUT_NOTE) - len("\n</details>\n"))
    kept = text[:room]
    kept = kept[: kept.rfind("\n") + 1]
    if kept.count("<details>") > kept.count("</details>"):
        kept += "\n</details>\n"
    return kept + CUT_NOTE


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>")


def markdown_table(header: Sequence[str], body: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in body]
    return lines


def steps_table(trends: Sequence[Trend], window: int = 3) -> list[str]:
    body = step_rows(trends, window)
    if not body:
        return []
    return ["### Level changes in the history", "", *markdown_table(STEP_HEADER, body), ""]


LISTED_MAX = 50  # items listed by name before "and N more"; the grid and the table show all
FULL_HEADER = ("device", "model", "suite", "figure", "vs baseline", "gates", "verdict")


def _listed(record: Mapping[str, Any], text: str) -> str:
    status = str(record["verdict"]["status"])
    return f"- {ICON.get(status, '')} **{item_name(record)}** {status}: {text}"


def needs_a_look(results: Sequence[Mapping[str, Any]], document: Mapping[str, Any]) -> list[str]:
    """What failed, errored or was INCONCLUSIVE, with why; then what moved against the base
    beyond noise (worse first); then notes on baselines from another machine."""
    lines = []
    for record in digest.needs_a_look(results):
        why = "; ".join(reasons(record)) or "no reason recorded"
        lines.append(_listed(record, f"{figure_cell(record)} · {why}"))
    for found in digest.changes(results):
        word = "worse" if found.worse else "better"
        lines.append(
            f"- {'🔺' if found.worse else '🔻'} **{item_name(found.record)}** {word}: "
            f"{found.text} · {figure_cell(found.record)}"
        )
    notes = [(r, n) for r in results if (n := baseline_note(r, document))]
    lines += [f"- ℹ️ **{item_name(r)}**: {note}" for r, note in notes]
    if len(lines) > LISTED_MAX:
        more = len(lines) - LISTED_MAX
        lines = [*lines[:LISTED_MAX], f"- … and {more} more: see the grid and the full table"]
    title = "### Needs a look" if lines else "Nothing failed or changed against the base."
    return [title, "", *lines, ""] if lines else [title, ""]


def grid_table(results: Sequence[Mapping[str, Any]], devices: Sequence[str] = ()) -> list[str]:
    table = digest.grid(results, devices)
    if not table.cells:
        return []
    body = [
        (model, *(grid_cell(table.cells.get((model, d))) for d in table.devices))
        for model in table.models
    ]
    return ["### Model × device", "", *markdown_table(("model", *table.devices), body), ""]


SPARKS = "▁▂▃▄▅▆▇█"
TREND_RUNS = 8  # runs of the history a trend cell draws


def trend_cell(trend: Trend | None, window: int = 3) -> str:
    """The history of an item's headline figure beside this run's value: a sparkline of its
    last runs and the newest stored value (`▃▃▄▃▇ last 0.9712 (14 runs)`), 🔺 when it
    regressed within `window` runs."""
    if trend is None or not trend.points:
        return "·"
    values = [p.value for p in trend.points[-TREND_RUNS:]]
    low, high = min(values), max(values)
    spark = "".join(
        SPARKS[round((v - low) / (high - low) * (len(SPARKS) - 1)) if high > low else 3]
        for v in values
    )
    mark = " 🔺" if trend.regressions(window) else ""
    count = len(trend.points)
    newest = number(trend.points[-1].value, trend.figure)
    return f"{spark} last {newest} ({count} run{'s' * (count != 1)}){mark}"


def headline_trends(trends: Sequence[Trend]) -> dict[tuple[str, str, str, str], Trend]:
    """{(device, model, suite, fidelity): the trend of that item's headline figure}."""
    found: dict[tuple[str, str, str, str], Trend] = {}
    for trend in trends:
        key = (trend.device, trend.model, trend.suite, trend.fidelity)
        known = BY_NAME.get(trend.suite)
        order = known.headline if known else ()
        if trend.figure not in order:
            continue
        held = found.get(key)
        if held is None or order.index(trend.figure) < order.index(held.figure):
            found[key] = trend
    return found


def _fitted_table(
    results: Sequence[Mapping[str, Any]], budget: int | None, trends: Sequence[Trend] = ()
) -> str:
    """The full table folded; within `budget` characters it keeps the rows that did not pass
    first, then as many others as fit, and says how many it left out. With `trends` (the
    history's), a column shows each headline figure's trend beside this run's value."""
    table = rows(results)
    body: list[tuple[str, ...]] = [
        (
            r.device,
            r.model,
            r.suite,
            r.figure,
            r.delta,
            r.gates,
            f"{ICON.get(r.status, '')} {r.status}",
        )
        for r in table
    ]
    header: tuple[str, ...] = FULL_HEADER
    if trends:
        by_item = headline_trends(trends)
        header = (*FULL_HEADER[:4], "history", *FULL_HEADER[4:])
        body = [
            (*row[:4], trend_cell(by_item.get((r.device, r.model, r.suite, r.fidelity))), *row[4:])
            for row, r in zip(body, table, strict=True)
        ]
    summary = f"<details><summary>All {len(body)} items</summary>\n\n"
    closing = "\n\n</details>\n"
    text = summary + "\n".join(markdown_table(header, body)) + closing
    if budget is None or len(text) <= budget:
        return text
    # Keep rows in priority order (not passed first), shown in the table's own order.
    lines = markdown_table(header, body)
    order = sorted(range(len(body)), key=lambda i: (table[i].status in ("PASS", "NO GATE"), i))
    note_room = 200
    room = budget - len(summary) - len(closing) - len(lines[0]) - len(lines[1]) - note_room
    kept: set[int] = set()
    for index in order:
        cost = len(lines[index + 2]) + 1
        if cost > room:
            break
        kept.add(index)
        room -= cost
    if room < 0 or not kept:
        return ""
    left = len(body) - len(kept)
    failing = [i for i, row in enumerate(table) if row.status not in ("PASS", "NO GATE")]
    dropped = sum(i not in kept for i in failing)
    which = (
        "every item that did not pass is kept"
        if not dropped
        else f"{len(failing) - dropped} of the {len(failing)} that did not pass are kept"
    )
    note = (
        f"_{left} of {len(body)} rows left out to fit a comment ({which}); the full table is in "
        "report.html and results.json of the run's artifacts._"
    )
    shown_lines = lines[:2] + [lines[i + 2] for i in sorted(kept)]
    return summary + "\n".join(shown_lines) + f"\n\n{note}" + closing


def render(
    document: Mapping[str, Any],
    *,
    verdict: Overall | None = None,
    trends: Sequence[Trend] = (),
    title: str = "harness model gate",
    limit: int | None = None,
) -> str:
    """The whole report: the verdict, what needs a look, the model × device grid, then the full
    table folded. `limit` caps the length (a PR comment's): the folded parts are cut first, and
    the report says what it cut."""
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
    lines += needs_a_look(results, document)
    lines += gate_changes(results)
    lines += grid_table(results, [d["name"] for d in document.get("devices", [])])
    used = fidelities(results)
    lines += [FOOTNOTE[f] for f in used]
    if used:
        lines.append("")
    lines += steps_table(trends)
    text = "\n".join(lines) + "\n"
    devices_table = _details(document)
    if limit is None:
        return text + _fitted_table(results, None, trends) + devices_table
    if len(text) + len(CUT_NOTE) > limit:
        return cut_to(text, limit, more=True)
    full = _fitted_table(results, limit - len(text) - len(devices_table), trends)
    if not full:
        full = _fitted_table(results, limit - len(text), trends)
        devices_table = ""
    if not full and results:
        return text + "_(full table left out to fit a comment: it is in the run's artifacts)_\n"
    return text + full + devices_table


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
    table = "\n".join(markdown_table(header, body))
    return f"<details><summary>Devices and versions</summary>\n\n{table}\n\n</details>\n"
