"""Several results files (one per device job) combined into one document and one verdict, and
the report files written from a document (`write_reports`: results.json, report.md, report.html).

The verdict over everything: FAIL when any record failed or errored, or a pytest session ended
badly, or an expected device sent no results; INCONCLUSIVE when any record was (which fails too,
unless told otherwise); PASS when at least one gate passed and nothing else went wrong; NO GATE
when results came but no gate was set. No results at all is an ERROR: a check that measured
nothing must not pass.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.report.json import SCHEMA, read_json

if TYPE_CHECKING:
    from harness.store import Trend

STATUSES = ("FAIL", "ERROR", "INCONCLUSIVE", "NO BASELINE", "PASS", "NO GATE", "SKIPPED")
# pytest exit statuses: 0 ok, 1 tests failed, 5 no tests; anything else broke the session.
_SESSION_OK = (0, 1, 5)


@dataclass(frozen=True)
class Overall:
    status: str  # PASS | FAIL | ERROR | INCONCLUSIVE | NO GATE
    counts: Mapping[str, int]
    problems: tuple[str, ...] = field(default=())  # why, beyond the records' own reasons

    def exit_code(self, inconclusive: str = "fail") -> int:
        """0 when the merge may go ahead, 1 when it is blocked."""
        if self.status in ("FAIL", "ERROR"):
            return 1
        if self.status == "INCONCLUSIVE":
            return 0 if inconclusive == "pass" else 1
        return 0

    def headline(self) -> str:
        shown = ", ".join(f"{n} {s.lower()}" for s in STATUSES if (n := self.counts.get(s)))
        return f"{self.status} ({shown or 'no results'})"


def read_all(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Read results files; a folder stands for the *.json files under it."""
    documents: list[dict[str, Any]] = []
    for path in paths:
        files = sorted(path.rglob("*.json")) if path.is_dir() else [path]
        for file in files:
            document = read_json(file)
            document.setdefault("source", str(file))
            documents.append(document)
    return documents


def merge(documents: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One harness-results/1 document from several. A record (same nodeid) found twice keeps the
    newest file's copy. Sessions are listed under `sessions` with their exit status."""
    by_node: dict[str, tuple[str, dict[str, Any]]] = {}
    devices: dict[str, Any] = {}
    sessions: list[dict[str, Any]] = []
    for document in sorted(documents, key=lambda d: str(d.get("created", ""))):
        for device in document.get("devices", []):
            devices.setdefault(device["name"], device)
        sessions.append(
            {
                "source": document.get("source"),
                "created": document.get("created"),
                "exitstatus": document.get("exitstatus"),
                "config": document.get("config"),
                "host": document.get("host"),
                "git": document.get("git"),
                "devices": [d["name"] for d in document.get("devices", [])],
            }
        )
        for record in document.get("results", []):
            by_node[record["nodeid"]] = (str(document.get("source", "")), record)
    first = documents[0] if documents else {}
    results = [record for _, record in by_node.values()]
    return {
        "schema": SCHEMA,
        "harness_version": first.get("harness_version"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": first.get("config"),
        "host": first.get("host"),
        "git": first.get("git"),
        "exitstatus": max((int(s["exitstatus"] or 0) for s in sessions), default=0),
        "devices": list(devices.values()),
        "sessions": sessions,
        "results": sorted(results, key=lambda r: (r["device"], r["model"], r["suite"])),
    }


def overall(document: Mapping[str, Any], expect_devices: Sequence[str] = ()) -> Overall:
    """The one verdict over a (merged) results document."""
    results = document.get("results", [])
    counts = Counter(str(r["verdict"]["status"]) for r in results)
    problems: list[str] = []
    sessions = document.get("sessions") or [document]
    for session in sessions:
        status = session.get("exitstatus")
        where = session.get("source") or "the pytest session"
        if status is not None and int(status) not in _SESSION_OK:
            problems.append(f"{where}: pytest ended with exit status {status} (session broken)")
    failing_records = counts["FAIL"] + counts["ERROR"] + counts["INCONCLUSIVE"]
    if not failing_records and any(int(s.get("exitstatus") or 0) == 1 for s in sessions):
        problems.append("pytest reported failing tests outside the harness gates")
    seen = {r["device"] for r in results}
    for session in sessions:
        seen |= {d if isinstance(d, str) else d["name"] for d in session.get("devices") or []}
    for device in expect_devices:
        if device not in seen:
            problems.append(f"no results for device {device} (its job failed before writing them?)")
    if not results:
        problems.append("no results: nothing was measured")
    if counts["ERROR"] or (problems and not counts["FAIL"]):
        status = "ERROR"
    elif counts["FAIL"]:
        status = "FAIL"
    elif counts["INCONCLUSIVE"]:
        status = "INCONCLUSIVE"
    elif counts["PASS"]:
        status = "PASS"  # NO BASELINE records are reported, and block only through the config
    else:
        status = "NO GATE"
    return Overall(status, dict(counts), tuple(problems))


def _write(path: Path, text: str) -> Path:
    """Write aside and rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)
    return path


def write_reports(
    document: Mapping[str, Any],
    out: Path,
    *,
    verdict: Overall | None = None,
    trends: Sequence[Trend] = (),
    kinds: Sequence[str] = ("markdown", "html"),
    title: str = "harness model gate",
) -> tuple[dict[str, Path], str]:
    """Write `out`/results.json and the reports in `kinds`; returns (paths by kind, Markdown)."""
    from harness.report import markdown

    verdict = verdict or overall(document)
    paths = {"json": _write(out / "results.json", json.dumps(document, indent=1, default=str))}
    text = markdown.render(document, verdict=verdict, trends=trends, title=title)
    if "markdown" in kinds:
        paths["markdown"] = _write(out / "report.md", text)
    if "html" in kinds:
        from harness.report import html

        page = html.render(document, verdict=verdict, trends=trends, title=title)
        paths["html"] = _write(out / "report.html", page)
    return paths, text
