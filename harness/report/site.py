"""The nightly site: static pages GitHub Pages can serve from the history branch.

`index.html`: the verdict, the regressions, and a model × device grid whose every cell holds the
newest value of each headline figure with a sparkline of its runs (red where it regressed).
`models/<model>.html`: per device, each headline figure's runs as a line chart with every level
change marked and labelled with the commits it stepped in, and the table of those changes.
Charts are inline SVG (no scripts, no external resources, sharp at any width), and pages use the
reports' stylesheet: readable on a phone. Built from a Nightly (report/nightly.py), so the site,
nightly.md and nightly.html agree.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from html import escape
from typing import TYPE_CHECKING

from harness.registry import ORDER
from harness.report import html, wording
from harness.report.figures import label, number, shown

if TYPE_CHECKING:
    from harness.history.trends import Trend
    from harness.report.nightly import Nightly

__all__ = ["model_page", "site", "slug"]

SITE_CSS = """
table.grid td{white-space:normal;min-width:9em}
.fig{display:block;margin:.15em 0}.fig svg{vertical-align:middle;margin-left:.3em}
section.trend{margin:1em 0 1.6em}section.trend svg{width:100%;max-width:720px;height:auto;
border:1px solid #d0d7de;background:#fff}
a{color:#0969da}
"""


def slug(model: str) -> str:
    """A file name for a model's page."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", model).strip("-") or "model"


def _page(title: str, status: str, body: Sequence[str]) -> bytes:
    text = html.page(title, status, body).replace("</style>", f"{SITE_CSS}</style>", 1)
    return text.encode()


def sparkline(trend: Trend, bad: bool, width: int = 80, height: int = 18) -> str:
    """An inline SVG of the series, the newest point marked; red when `bad` (it regressed)."""
    values = [p.value for p in trend.points]
    low, high = min(values), max(values)
    # A wobble of a few percent stays nearly flat: the line spans at least 20% of the level.
    span = max(high - low, abs(high + low) / 2 * 0.2) or 1.0
    low = (high + low) / 2 - span / 2
    step = width / max(len(values) - 1, 1)
    xy = [
        (round(i * step, 1), round(height - 2 - (v - low) / span * (height - 4), 1))
        for i, v in enumerate(values)
    ]
    line = " ".join(f"{x},{y}" for x, y in xy)
    colour = "#cf222e" if bad else "#0969da"
    x, y = xy[-1]
    return (
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="trend of {escape(trend.figure)}"><polyline points="{line}" fill="none" '
        f'stroke="{colour}" stroke-width="1.5"/><circle cx="{x}" cy="{y}" r="2" '
        f'fill="{colour}"/></svg>'
    )


def chart(trend: Trend, recent: set[int], width: int = 640, height: int = 220) -> str:
    """A line chart of the series: runs left to right, each level change a dashed line
    labelled with its commit range (red: a regression, the indices in `recent`); hovering a
    point names its run."""
    left, right, top, bottom = 70, 12, 14, 34
    values = [p.value for p in trend.points]
    low, high = min(values), max(values)
    pad = (high - low) * 0.1 or abs(high) * 0.05 or 1.0
    low, high = low - pad, high + pad
    plot_w, plot_h = width - left - right, height - top - bottom
    step = plot_w / max(len(values) - 1, 1)

    def at(i: int, v: float) -> tuple[float, float]:
        return round(left + i * step, 1), round(top + (high - v) / (high - low) * plot_h, 1)

    parts = [
        f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{escape(_title(trend))}">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#f6f8fa"/>',
    ]
    for v in (high - pad, low + pad):
        x, y = at(0, v)
        parts.append(
            f'<text x="{left - 6}" y="{y + 4}" font-size="11" text-anchor="end" '
            f'fill="#57606a">{escape(number(v, trend.figure))}</text>'
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y}" y2="{y}" stroke="#d0d7de"/>'
        )
    for index, _, _ in trend.steps:
        x, _ = at(index, values[index])
        x -= step / 2
        colour = "#cf222e" if index in recent else "#9a6700"
        parts.append(
            f'<line x1="{x}" x2="{x}" y1="{top}" y2="{top + plot_h}" stroke="{colour}" '
            f'stroke-dasharray="4 3"/><text x="{x + 3}" y="{top + 11}" font-size="11" '
            f'fill="{colour}">{escape(trend.commit_range(index))}</text>'
        )
    line = " ".join(f"{x},{y}" for x, y in (at(i, v) for i, v in enumerate(values)))
    parts.append(f'<polyline points="{line}" fill="none" stroke="#0969da" stroke-width="2"/>')
    for i, point in enumerate(trend.points):
        x, y = at(i, point.value)
        tip = f"{point.created} {(point.commit or '?')[:10]}: {number(point.value, trend.figure)}"
        parts.append(
            f'<circle cx="{x}" cy="{y}" r="3" fill="#0969da"><title>{escape(tip)}</title></circle>'
        )
    for i in sorted({0, len(values) - 1}):
        x, _ = at(i, values[i])
        anchor = "start" if i == 0 else "end"
        parts.append(
            f'<text x="{x}" y="{height - 12}" font-size="11" text-anchor="{anchor}" '
            f'fill="#57606a">{escape(trend.points[i].created[:10])}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _title(trend: Trend) -> str:
    return f"{trend.suite}: {label(trend.figure)} on {trend.device} ({trend.fidelity})"


def _order(trend: Trend) -> tuple[int, str]:
    return ORDER.get(trend.suite, len(ORDER)), trend.figure


def model_page(report: Nightly, model: str, title: str) -> bytes:
    trends = sorted((t for t in report.trends if t.model == model), key=_order)
    recent: dict[int, set[int]] = {}
    for t, index, _ in report.regressions:
        recent.setdefault(id(t), set()).add(index)
    regressed = set(recent)
    status = "FAIL" if any(id(t) in regressed for t in trends) else "PASS"
    body = [
        f'<p><a href="../index.html">← {escape(title)}</a></p>',
        f"<h1>{escape(model)}: {html.status_span(status)}</h1>",
    ]
    for device in sorted({t.device for t in trends}):
        body.append(f"<h2>{escape(device)}</h2>")
        for trend in (t for t in trends if t.device == device):
            newest = shown(trend.figure, trend.points[-1].value)
            runs = len(trend.points)
            body.append(
                f'<section class="trend"><h3>{escape(_title(trend))}</h3>'
                f'<p class="note">newest {escape(newest)} · {runs} run{"s" * (runs != 1)}</p>'
                f"{chart(trend, recent.get(id(trend), set()))}</section>"
            )
            # The verdict in words: a page must not depend on an emoji font.
            rows = [
                (*row[:-1], row[-1].replace("❌ ", ""))
                for row in wording.step_rows([trend], report.window)
            ]
            if rows:
                body.append(html.html_table(wording.STEP_HEADER, rows))
    return _page(f"{model} · {title}", status, body)


def index_page(report: Nightly, title: str) -> bytes:
    status = "FAIL" if report.regressions else "PASS"
    body = [
        f"<h1>{escape(title)}: {html.status_span(status)}</h1>",
        f'<p class="note">{escape(report.headline())}</p>',
    ]
    if report.regressions:
        items = "".join(
            f'<li><a href="models/{slug(t.model)}.html">{escape(t.item)}</a> '
            f"{escape(shown(t.figure, t.points[i - 1].value))} → "
            f"{escape(shown(t.figure, t.points[i].value))} ({change * 100:+.1f}%) in commits "
            f"<code>{escape(t.commit_range(i))}</code></li>"
            for t, i, change in report.regressions
        )
        body.append(f'<h2>Regressions</h2><ul class="look">{items}</ul>')
    models = sorted({t.model for t in report.trends})
    devices = sorted({t.device for t in report.trends})
    if not models:
        body.append('<p class="note">The history holds no series yet.</p>')
        return _page(title, status, body)
    regressed = {id(t) for t, _, _ in report.regressions}
    head = "".join(f"<th>{escape(h)}</th>" for h in ("model", *devices))
    lines = []
    for model in models:
        cells = []
        for device in devices:
            here = sorted(
                (t for t in report.trends if t.model == model and t.device == device), key=_order
            )
            if not here:
                cells.append('<td class="cell note">·</td>')
                continue
            bad = any(id(t) in regressed for t in here)
            figures = "".join(
                f'<span class="fig">{escape(shown(t.figure, t.points[-1].value))}'
                f"{' ▲ regression' if id(t) in regressed else ''}"
                f"{sparkline(t, id(t) in regressed)}</span>"
                for t in here
            )
            cells.append(f'<td class="cell {"fail" if bad else "pass"}">{figures}</td>')
        link = f'<a href="models/{slug(model)}.html">{escape(model)}</a>'
        lines.append(f"<tr><th>{link}</th>{''.join(cells)}</tr>")
    body.append(
        '<h2>Models × devices</h2><div class="scroll"><table class="grid" id="grid">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table></div>"
    )
    first = min(p.created for t in report.trends for p in t.points)
    last = max(p.created for t in report.trends for p in t.points)
    body.append(
        f'<p class="note">Runs from {escape(first[:10])} to {escape(last[:10])}; the records '
        "are the files under <code>runs/</code> beside this page.</p>"
    )
    return _page(title, status, body)


def site(report: Nightly, title: str = "harness nightly") -> dict[str, bytes]:
    """{path: content} of the whole site (`.nojekyll` tells Pages to serve the files as
    they are)."""
    files = {"index.html": index_page(report, title), ".nojekyll": b""}
    for model in sorted({t.model for t in report.trends}):
        files[f"models/{slug(model)}.html"] = model_page(report, model, title)
    return files
