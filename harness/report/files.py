"""The report files written from a results document: results.json, report.md, report.html."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.report import html, markdown
from harness.results import write_atomic
from harness.verdict import Overall, overall

if TYPE_CHECKING:
    from harness.store import Trend


def write_reports(
    document: Mapping[str, Any],
    out: Path,
    *,
    verdict: Overall | None = None,
    trends: Sequence[Trend] = (),
    kinds: Sequence[str] = ("markdown", "html"),
    title: str = "harness model gate",
) -> tuple[dict[str, Path], str]:
    """Write `out`/results.json and the reports in `kinds`; returns (paths by kind, the
    Markdown for the job summary). report.md is cut to fit a pull request's comment (it is the
    comment's body); the job summary, which may hold a megabyte, is the whole report."""
    verdict = verdict or overall(document)
    paths = {
        "json": write_atomic(out / "results.json", json.dumps(document, indent=1, default=str))
    }
    text = markdown.render(
        document, verdict=verdict, trends=trends, title=title, limit=markdown.SUMMARY_LIMIT
    )
    if "markdown" in kinds:
        comment = markdown.render(
            document, verdict=verdict, trends=trends, title=title, limit=markdown.COMMENT_LIMIT
        )
        paths["markdown"] = write_atomic(out / "report.md", comment)
    if "html" in kinds:
        page = html.render(document, verdict=verdict, trends=trends, title=title)
        paths["html"] = write_atomic(out / "report.html", page)
    return paths, text
