"""The HTML report: one self-contained file (inline CSS, plots as base64 PNG, no scripts).

Read from the top: the verdict, the model × device grid in colour (the worst verdict and its
figure per cell), what needs a look, then the plots (harness.report.plots: latency, memory,
accuracy, trends), then the full table and the devices. Readable at phone width: wide tables
scroll inside their box, plots shrink to the page.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from html import escape
from typing import TYPE_CHECKING, Any

from harness.report import digest, wording
from harness.report.plots import (
    Plot,
    accuracy_plots,
    latency_plots,
    memory_plots,
    trend_plots,
)
from harness.store import Trend
from harness.verdict import Overall, overall

if TYPE_CHECKING:
    pass

STATUS_CLASS = {
    "PASS": "pass",
    "FAIL": "fail",
    "ERROR": "fail",
    "INCONCLUSIVE": "warn",
    "NO BASELINE": "warn",
    "WARN": "warn",
}
# Grid cell backgrounds (GitHub's light palette); tests look for them in screenshots.
CELL_COLOUR = {"pass": "#dafbe1", "fail": "#ffcecb", "warn": "#fff1b3", "note": "#eaeef2"}
CSS = (
    """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1em auto;
max-width:1200px;padding:0 1em;color:#1f2328;background:#fff}
p,li,figcaption,h1{overflow-wrap:anywhere}
h1{font-size:1.5em;margin:.3em 0 .2em}h2{margin-top:1.4em;border-bottom:1px solid #d0d7de}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}.pass{color:#1a7f37}.fail{color:#cf222e;font-weight:600}
.warn{color:#9a6700;font-weight:600}.note{color:#57606a}
table.grid td,table.grid th{white-space:nowrap;font-variant-numeric:tabular-nums}
table.grid tbody th{position:sticky;left:0;background:#f6f8fa}
table.grid td.cell{color:#1f2328;font-weight:400}
"""
    + "".join(f"table.grid td.{k}{{background:{v}}}" for k, v in CELL_COLOUR.items())
    + """
figure{display:inline-block;margin:.6em 1em .6em 0;vertical-align:top;max-width:100%}
figure img{max-width:100%;height:auto;border:1px solid #d0d7de}
figcaption{color:#57606a;font-size:12px}ul.look li{margin:.2em 0}
"""
)


def status_span(status: str) -> str:
    return f'<span class="{STATUS_CLASS.get(status, "note")}">{escape(status)}</span>'


def html_table(
    header: Sequence[str],
    body: Sequence[Sequence[str]],
    raw_last: bool = False,
    css: str = "",
) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    lines = []
    for row in body:
        cells = [escape(c) for c in row[:-1]] + [row[-1] if raw_last else escape(row[-1])]
        lines.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    table = f"<table{f' class={css!r}' if css else ''}><thead><tr>{head}</tr></thead>"
    return f'<div class="scroll">{table}<tbody>{"".join(lines)}</tbody></table></div>'


def grid_table(results: Sequence[Mapping[str, Any]], devices: Sequence[str] = ()) -> str:
    """The model × device grid, each cell coloured by its worst verdict."""
    table = digest.grid(results, devices)
    if not table.cells:
        return ""
    head = "".join(f"<th>{escape(h)}</th>" for h in ("model", *table.devices))
    lines = []
    for model in table.models:
        cells = []
        for device in table.devices:
            cell = table.cells.get((model, device))
            css = STATUS_CLASS.get(cell.status, "note") if cell else "note"
            text = grid_cell(cell)
            cells.append(f'<td class="cell {css}">{escape(text)}</td>')
        lines.append(f"<tr><th>{escape(model)}</th>{''.join(cells)}</tr>")
    return (
        '<div class="scroll"><table class="grid" id="grid">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table></div>"
    )


def grid_cell(cell: digest.Cell | None) -> str:
    """The Markdown grid's cell without its icon: the cell's colour carries the verdict (and
    a page must not depend on an emoji font), a verdict other than PASS is also written."""
    if cell is None:
        return "·"
    text = wording.grid_cell(cell).split(" ", 1)[1]
    return text if cell.status in ("PASS", "NO GATE") else f"{cell.status} {text}"


def needs_a_look(results: Sequence[Mapping[str, Any]], document: Mapping[str, Any]) -> str:
    """The Markdown report's list, item for item (digest.py decides what is on it)."""
    items = [
        f"{status_span(str(r['verdict']['status']))} <b>{escape(wording.item_name(r))}</b>: "
        f"{escape(wording.figure_cell(r))} · {escape('; '.join(wording.reasons(r)))}"
        for r in digest.needs_a_look(results)
    ]
    items += [
        f'<span class="{"fail" if c.worse else "pass"}">{"worse" if c.worse else "better"}</span> '
        f"<b>{escape(wording.item_name(c.record))}</b>: {escape(c.text)} · "
        f"{escape(wording.figure_cell(c.record))}"
        for c in digest.changes(results)
    ]
    items += [
        f"<b>{escape(wording.item_name(r))}</b>: {escape(note)}"
        for r in results
        if (note := wording.baseline_note(r, document))
    ]
    if not items:
        return '<p class="pass">Nothing failed or changed against the base.</p>'
    listed = "".join(f"<li>{item}</li>" for item in items)
    return f'<h2>Needs a look</h2><ul class="look">{listed}</ul>'


def plot_section(title: str, plots: Sequence[Plot]) -> str:
    if not plots:
        return ""
    figures = "".join(
        f'<figure><img alt="{escape(p.title)}" '
        f'src="data:image/png;base64,{base64.b64encode(p.png).decode()}">'
        f"<figcaption>{escape(p.caption)}</figcaption></figure>"
        for p in plots
    )
    return f"<h2>{escape(title)}</h2>{figures}"


def page(title: str, status: str, body: Sequence[str]) -> str:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}: {escape(status)}</title><style>{CSS}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


def render(
    document: Mapping[str, Any],
    *,
    verdict: Overall | None = None,
    trends: Sequence[Trend] = (),
    title: str = "harness report",
) -> str:
    verdict = verdict or overall(document)
    results = document.get("results", [])
    body = [
        f"<h1>{escape(title)}: {status_span(verdict.status)}</h1>",
        f'<p class="note">{escape(verdict.headline())} · created '
        f"{escape(str(document.get('created')))} · harness "
        f"{escape(str(document.get('harness_version')))}</p>",
    ]
    if verdict.problems:
        body.append("<ul>" + "".join(f"<li>{escape(p)}</li>" for p in verdict.problems) + "</ul>")
    body.append(grid_table(results, [d["name"] for d in document.get("devices", [])]))
    body.append(needs_a_look(results, document))
    edits = [line[2:] for line in wording.gate_changes(results) if line.startswith("- ")]
    if edits:
        listed = "".join(f"<li>{escape(e)}</li>" for e in edits)
        body.append(f"<h2>Gate changes in this change</h2><ul>{listed}</ul>")
    used = wording.fidelities(results)
    body += [f'<p class="note">{escape(wording.FOOTNOTE[f])}</p>' for f in used]
    body.append(plot_section("Latency", latency_plots(results)))
    body.append(plot_section("Memory", memory_plots(results)))
    body.append(plot_section("Accuracy per class", accuracy_plots(results)))
    if trends:
        body.append(plot_section("Trends", trend_plots(trends)))
        steps = wording.step_rows(trends)
        if steps:
            body.append("<h3>Level changes</h3>" + html_table(wording.STEP_HEADER, steps))
    header = ("device", "model", "suite", "figure", "vs baseline", "gates", "verdict")
    table = [
        (r.device, r.model, r.suite, r.figure, r.delta, r.gates, status_span(r.status))
        for r in wording.rows(results)
    ]
    body += ["<h2>Gates</h2>", html_table(header, table, raw_last=True)]
    devices = [
        (
            d["name"],
            str(d.get("arch")),
            str(d.get("cpu") or "-"),
            str(d.get("cpus") or "all"),
            f"{d['memory_mb']} MB" if d.get("memory_mb") else "-",
            str(d.get("fidelity")),
        )
        for d in document.get("devices", [])
    ]
    body += [
        "<h2>Devices</h2>",
        html_table(("device", "arch", "cpu", "cpus", "memory", "fidelity"), devices),
    ]
    return page(title, verdict.status, body)
