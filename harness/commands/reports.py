"""`harness merge`, `harness report` and `harness comment`: the CI reports. `merge` combines the
device jobs' results files into one verdict (exit status, annotations, job summary) and the
Markdown/HTML reports; `report` writes the reports with trends from the history; `comment`
posts the one sticky pull-request comment."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.catalogue import NOISE_FLOOR
from harness.commands import history
from harness.errors import ConfigError


def _read_results(paths: Sequence[str], allow_none: bool = False) -> list[dict[str, Any]]:
    """The results files named (folders: the *.json under them). An empty folder is an error
    unless `allow_none` (merge: then the verdict says nothing was measured)."""
    from harness.results import read_all

    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise ConfigError(f"no such results file: {', '.join(missing)}")
    try:
        documents = read_all(Path(p) for p in paths)
    except (ValueError, OSError) as exc:
        raise ConfigError(str(exc)) from None
    if not documents and not allow_none:
        raise ConfigError(f"no results files (*.json) in {', '.join(paths)}")
    return documents


def _model_files(document: dict[str, Any], repo_root: Path) -> dict[str, str]:
    """{model name: its file relative to the repository}, for annotations: a record's
    `model_file` (its path in the repository, the same in every job's checkout), else its
    `model_path` or the config its session ran with, where they lie under `repo_root`."""
    from harness.config import load_config

    relative: dict[str, str] = {
        r["model"]: r["model_file"] for r in document.get("results", []) if r.get("model_file")
    }
    files: dict[str, Path] = {}
    for record in document.get("results", []):
        if record["model"] in relative:
            continue
        if record.get("model_path"):
            files.setdefault(record["model"], Path(record["model_path"]))
    configs = {s.get("config") for s in document.get("sessions") or [document]} - {None}
    for config in sorted(configs):
        try:
            specs = load_config(Path(config)).models
        except (ConfigError, OSError):
            continue
        for spec in specs:
            files.setdefault(spec.name, Path(config).parent / spec.path)
    for name, path in files.items():
        if name in relative:
            continue
        try:
            relative[name] = path.resolve().relative_to(repo_root.resolve()).as_posix()
        except ValueError:
            continue  # not inside this repository: annotate without a file
    return relative


def _annotations(document: dict[str, Any], repo_root: Path, inconclusive: str) -> list[str]:
    from harness.github import annotation
    from harness.report.wording import item_name, reasons
    from harness.results import INCONCLUSIVE, blocks

    files = _model_files(document, repo_root)
    lines = []
    for record in document.get("results", []):
        status = record["verdict"]["status"]
        if blocks(status, inconclusive):
            level = "error"
        elif status == INCONCLUSIVE:
            level = "warning"
        else:
            continue
        lines.append(
            annotation(
                "; ".join(reasons(record)) or status,
                level=level,
                file=files.get(record["model"]),
                title=f"harness: {item_name(record)} {status}",
            )
        )
    return lines


def _print_outcome(document: dict[str, Any], verdict: Any, paths: dict[str, Path]) -> None:
    from harness.report.terminal import gate_table

    for line in gate_table(document.get("results", []), sys.stdout.isatty()):
        print(line)
    for problem in verdict.problems:
        print(f"harness: {problem}")
    shown = ", ".join(str(p) for p in paths.values())
    print(f"harness: {verdict.headline()}; written {shown}")


def _expected_items(args: argparse.Namespace, devices: list[str]) -> list[str]:
    """What the base requires on `devices`, computed here from git (or the folder) and the
    change's config, never from what the device jobs wrote (harness.boundary)."""
    from harness.boundary import expected_items, under_base
    from harness.config import load_config, search_config

    path = Path(args.config) if args.config else search_config(Path.cwd())
    if path is None or not path.is_file():
        raise ConfigError("--baseline needs the change's harness config: pass --config PATH")
    baseline, boundary = under_base(load_config(path), args.baseline, args.allow_gate_changes)
    try:
        if boundary is None:
            return []
        return expected_items(boundary.config, devices or boundary.config.devices, policy=True)
    finally:
        if baseline is not None:
            baseline.close()


def _merge(args: argparse.Namespace) -> int:
    from harness import github
    from harness.report.files import write_reports
    from harness.results import merge
    from harness.verdict import overall

    document = merge(_read_results(args.results, allow_none=True))
    expected = [d for item in args.expect_device or [] for d in item.replace(",", " ").split()]
    items = _expected_items(args, expected) if args.baseline else []
    verdict = overall(document, expected, args.allow_unmeasured, items, args.expect_commit)
    kinds = [k for k in ("markdown", "html") if getattr(args, k)] or ["markdown", "html"]
    trends = _read_trends(args.history, document) if args.history else []
    paths, text = write_reports(
        document, Path(args.out), verdict=verdict, kinds=kinds, trends=trends
    )
    _print_outcome(document, verdict, paths)
    if args.github or github.in_actions():
        root = Path(args.repo_root or os.environ.get("GITHUB_WORKSPACE") or Path.cwd())
        for line in _annotations(document, root, args.inconclusive):
            print(line)
        github.append_summary(text)
        report = paths.get("markdown") or paths.get("html") or paths["json"]
        github.set_outputs({"verdict": verdict.status, "report": str(report)})
    return verdict.exit_code(args.inconclusive)


def _read_trends(location: str, document: dict[str, Any]) -> list[Any]:
    """Each figure's stored trend, read only, for the report's history column; a history that
    cannot be read (no branch yet, no credentials) is a note: trends never decide a merge."""
    try:
        store = history.open_store(location, readonly=True, create=False)
        try:
            return list(store.trends(_history_keys(document)))
        finally:
            store.close()
    except Exception as exc:  # noqa: BLE001 - any failure to read is only a missing column
        print(f"harness: no trends from {location}: {str(exc).splitlines()[0][:300]}")
        return []


def _history_keys(document: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    from harness.registry import headline_of

    keys = set()
    for record in document.get("results", []):
        for figure in (headline_of(record), "ratio"):
            if figure and figure in (record.get("figures") or {}):
                keys.add((record["device"], record["model"], record["suite"], figure))
    return sorted(keys)


def _report(args: argparse.Namespace) -> int:
    from harness import github
    from harness.report.files import write_reports
    from harness.report.nightly import regression_line
    from harness.report.wording import step_rows
    from harness.results import merge
    from harness.verdict import overall

    document = merge(_read_results(args.results))
    verdict = overall(document)
    trends: list[Any] = []
    if args.history:
        store = history.open_store(args.history, readonly=True, create=False)
        try:
            trends = store.trends(_history_keys(document))
        finally:
            store.close()
    regressions = [
        (trend, index, change)
        for trend in trends
        for index, change in trend.regressions(args.window, args.min_change)
    ]
    paths, text = write_reports(
        document, Path(args.out), verdict=verdict, trends=trends, title="harness report"
    )
    _print_outcome(document, verdict, paths)
    for trend, index, change in regressions:
        print(f"harness: {regression_line(trend, index, change)}")
    if trends and not step_rows(trends):
        print(f"harness: no level changes in {len(trends)} series of the history")
    if args.github or github.in_actions():
        github.append_summary(text)
        github.set_outputs(
            {
                "verdict": verdict.status,
                "report": str(paths["markdown"]),
                "regressions": str(len(regressions)),
            }
        )
    blocked = verdict.exit_code(args.inconclusive)
    return 1 if blocked or (args.fail_on_regression and regressions) else 0


def _comment(args: argparse.Namespace) -> int:
    from harness.github import GitHub, GitHubError, upsert_comment
    from harness.report.markdown import COMMENT_LIMIT, cut_to

    token = os.environ.get("GITHUB_TOKEN")
    if not token:
        raise ConfigError(
            "GITHUB_TOKEN is not set: give the step `env: GITHUB_TOKEN: ${{ github.token }}`"
        )
    if not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", args.repo):
        raise ConfigError(f"--repo {args.repo!r}: write it as OWNER/NAME")
    body = Path(args.body).read_text(encoding="utf-8")
    body = cut_to(body, COMMENT_LIMIT)  # report.md fits already; another body may not
    api = args.api_url or os.environ.get("GITHUB_API_URL") or "https://api.github.com"
    client = GitHub(token, api)
    name = args.marker or os.environ.get("GITHUB_WORKFLOW") or "harness"
    try:
        if args.head_sha:
            head = client.pull_head_sha(args.repo, args.pr)
            if head != args.head_sha:
                print(
                    f"harness: pull request #{args.pr}'s head is {head}, not {args.head_sha} "
                    "that this report is for: not commenting",
                    file=sys.stderr,
                )
                return 1
        action, comment = upsert_comment(client, args.repo, args.pr, body, name)
    except GitHubError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return 1
    print(f"harness: {action} comment {comment.get('html_url') or comment.get('id')}")
    return 0


def add_parser(commands: Any) -> None:
    merge = commands.add_parser(
        "merge",
        help="combine results files into one verdict and Markdown/HTML reports",
        description="Exit status 1 when any gate failed or errored, or was INCONCLUSIVE "
        "(unless --inconclusive pass), or an expected device sent no results.",
    )
    merge.add_argument("results", nargs="+", help="results JSON files (or folders of them)")
    merge.add_argument("--out", default="harness-report", help="output folder")
    merge.add_argument("--markdown", action="store_true", help="write report.md (default: both)")
    merge.add_argument("--html", action="store_true", help="write report.html (default: both)")
    merge.add_argument(
        "--github",
        action="store_true",
        help="job summary, ::error annotations and step outputs (on by itself in Actions)",
    )
    merge.add_argument("--inconclusive", choices=("fail", "pass"), default="fail")
    merge.add_argument(
        "--allow-unmeasured",
        action="store_true",
        help="pass even when a device measured nothing (all its items skipped)",
    )
    merge.add_argument(
        "--expect-device",
        action="append",
        metavar="NAMES",
        help="devices that must have results (repeatable or comma-separated)",
    )
    merge.add_argument(
        "--baseline",
        metavar="REF_OR_PATH",
        help="the base the device jobs compared with: every item the judged config implies on "
        "the expected devices must have reported",
    )
    merge.add_argument("--config", metavar="PATH", help="with --baseline: the change's config")
    merge.add_argument(
        "--history",
        metavar="LOCATION",
        help="read each figure's trend from this history (read only; e.g. git+URL#BRANCH of "
        "the nightly's branch) into the report's history column; unreadable: a note",
    )
    merge.add_argument(
        "--allow-gate-changes",
        action="store_true",
        help="with --baseline: the device jobs measured the change's own config",
    )
    merge.add_argument(
        "--expect-commit", metavar="SHA", help="every session must have measured this commit"
    )
    merge.add_argument(
        "--repo-root",
        help="annotation paths are relative to it (default: "
        "$GITHUB_WORKSPACE, else the current folder)",
    )
    merge.set_defaults(handler=_merge)

    report = commands.add_parser(
        "report", help="Markdown + HTML report of results, with trends from the history"
    )
    report.add_argument("results", nargs="+", help="results JSON files (or folders of them)")
    report.add_argument(
        "--history",
        metavar="LOCATION",
        help="the history for trends, read only: " + history.LOCATION_HELP,
    )
    report.add_argument("--out", required=True, help="output folder")
    report.add_argument("--github", action="store_true", help="job summary and step outputs")
    report.add_argument("--inconclusive", choices=("fail", "pass"), default="fail")
    report.add_argument(
        "--fail-on-regression",
        action="store_true",
        help="exit 1 when a figure stepped for the worse within the last --window runs",
    )
    report.add_argument("--window", type=int, default=3, help="runs counted as recent")
    report.add_argument(
        "--min-change", type=float, default=NOISE_FLOOR, help="smallest relative step that counts"
    )
    report.set_defaults(handler=_report)

    comment = commands.add_parser(
        "comment",
        help="post or update the one sticky pull-request comment (token: $GITHUB_TOKEN)",
    )
    comment.add_argument("--repo", required=True, metavar="OWNER/NAME")
    comment.add_argument("--pr", "--issue", dest="pr", type=int, required=True, metavar="N")
    comment.add_argument("--body", required=True, metavar="FILE", help="Markdown file")
    comment.add_argument("--marker", help="names the sticky comment (default: $GITHUB_WORKFLOW)")
    comment.add_argument("--api-url", help="default: $GITHUB_API_URL or https://api.github.com")
    comment.add_argument(
        "--head-sha",
        help="refuse to comment unless the pull request's head is this commit",
    )
    comment.set_defaults(handler=_comment)
