"""The nightly report: the history's headline figure per model and device over runs, and the
commits where a figure stepped, as one HTML page and a Markdown summary short enough for an
issue or a chat message (the static site for GitHub Pages is report/site.py). Built from the
history store alone (no results file needed); how a step and a regression are found:
harness.history.trends.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from html import escape
from typing import TYPE_CHECKING

from harness.catalogue import NOISE_FLOOR
from harness.registry import BY_NAME
from harness.report import html, markdown, plots, wording
from harness.report.figures import shown

if TYPE_CHECKING:
    from harness.history.sql import Queries
    from harness.history.trends import Trend

__all__ = ["Nightly", "headline_keys", "nightly", "regression_line"]

SUMMARY_ROWS = 30  # level changes listed in the Markdown summary; the page lists all


def regression_line(trend: Trend, index: int, change: float) -> str:
    """One regression for a log: the figure, the item, the move and the commit range."""
    point = trend.points[index]
    once = " (one run so far)" if index in trend.unconfirmed else ""
    return (
        f"regression: {trend.figure} of {trend.item} ({trend.fidelity}) moved "
        f"{change * 100:+.1f}%{once}: {shown(trend.figure, trend.points[index - 1].value)} → "
        f"{shown(trend.figure, point.value)} in commits {trend.commit_range(index)} "
        f"({point.created})"
    )


def headline_keys(store: Queries) -> list[tuple[str, str, str, str]]:
    """(device, model, suite, figure) of every stored item's headline figure: per item the
    first of its suite's headline figures the history holds (the registry's definition)."""
    figures: dict[tuple[str, str, str], set[str]] = {}
    for device, model, suite, figure, _ in store.series_keys():
        figures.setdefault((device, model, suite), set()).add(figure)
    keys = []
    for (device, model, suite), held in sorted(figures.items()):
        known = BY_NAME.get(suite)
        top = known.headline_of(dict.fromkeys(held)) if known else None
        if top is not None:
            keys.append((device, model, suite, top))
    return keys


@dataclass(frozen=True)
class Nightly:
    trends: tuple[Trend, ...]
    window: int
    min_change: float

    @property
    def regressions(self) -> list[tuple[Trend, int, float]]:
        return [
            (trend, index, change)
            for trend in self.trends
            for index, change in trend.regressions(self.window, self.min_change)
        ]

    def headline(self) -> str:
        steps = sum(len(t.steps) for t in self.trends)
        count = len(self.regressions)
        worse = f"{count} regression{'s' * (count != 1)} in the last {self.window} runs"
        moved = f"{steps} level changes of {self.min_change:.0%} or more"
        return f"{worse} · {moved} in {len(self.trends)} series"

    def markdown(self, title: str = "harness nightly") -> str:
        icon = "❌" if self.regressions else "✅"
        lines = [f"## {icon} {title}: {self.headline()}", ""]
        for trend, index, change in self.regressions:
            point = trend.points[index]
            once = ", one run so far" if index in trend.unconfirmed else ""
            lines.append(
                f"- 🔺 **{trend.item}** "
                f"{shown(trend.figure, trend.points[index - 1].value)} → "
                f"{shown(trend.figure, point.value)} ({change * 100:+.1f}%, {trend.fidelity}"
                f"{once}) in commits `{trend.commit_range(index)}` ({point.created[:10]})"
            )
        if self.regressions:
            lines.append("")
        steps = wording.step_rows(self.trends, self.window)
        if steps:
            shown_rows = steps[:SUMMARY_ROWS]
            lines += [
                "### Level changes",
                "",
                *markdown.markdown_table(wording.STEP_HEADER, shown_rows),
            ]
            if len(steps) > SUMMARY_ROWS:
                lines.append(f"\n_{len(steps) - SUMMARY_ROWS} more in nightly.html_")
            lines.append("")
        lines += self._latest()
        return "\n".join(lines) + "\n"

    def _latest(self) -> list[str]:
        """Per model × device: the newest value of each headline figure, ⬆ where it stepped."""
        latest: dict[tuple[str, str], list[str]] = {}
        for trend in self.trends:
            recent = {i for i, _ in trend.regressions(self.window, self.min_change)}
            mark = " 🔺" if recent else ""
            text = f"{shown(trend.figure, trend.points[-1].value)}{mark}"
            latest.setdefault((trend.model, trend.device), []).append(text)
        if not latest:
            return ["_The history holds no series yet._", ""]
        models = sorted({m for m, _ in latest})
        devices = sorted({d for _, d in latest})
        body = [(m, *("<br>".join(latest.get((m, d), ["·"])) for d in devices)) for m in models]
        table = markdown.markdown_table(("model", *devices), body)
        return ["<details><summary>Latest figures</summary>", "", *table, "", "</details>", ""]

    def html(self, title: str = "harness nightly") -> str:
        status = "FAIL" if self.regressions else "PASS"
        body = [
            f"<h1>{escape(title)}: {html.status_span(status)}</h1>",
            f'<p class="note">{escape(self.headline())}</p>',
        ]
        regressions = [
            (
                t.item,
                f"{shown(t.figure, t.points[i - 1].value)} → {shown(t.figure, t.points[i].value)}",
                f"{change * 100:+.1f}%" + (" (one run)" if i in t.unconfirmed else ""),
                t.commit_range(i),
            )
            for t, i, change in self.regressions
        ]
        if regressions:
            body += [
                "<h2>Regressions</h2>",
                html.html_table(("item", "figure", "change", "stepped in commits"), regressions),
            ]
        steps = wording.step_rows(self.trends, self.window)
        if steps:
            body += ["<h2>Level changes</h2>", html.html_table(wording.STEP_HEADER, steps)]
        body.append(
            html.plot_section("Trends per device", plots.trend_plots_by_device(self.trends))
        )
        return html.page(title, status, body)


def _moved(trend: Trend, min_change: float) -> Trend:
    """The trend with only its level changes of at least `min_change` (relative): smaller
    ones are the step detector finding noise, not news for a morning's read."""
    steps = tuple(
        (index, before, after)
        for index, before, after in trend.steps
        if before and abs(after - before) / abs(before) >= min_change
    )
    return replace(trend, steps=steps)


def nightly(store: Queries, window: int = 3, min_change: float = NOISE_FLOOR) -> Nightly:
    trends = store.trends(headline_keys(store))
    return Nightly(tuple(_moved(t, min_change) for t in trends), window, min_change)
