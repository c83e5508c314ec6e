"""The `harness` command: devices, images, counting, calibrate (harness.commands), merge, report,
nightly, comment, history."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.commands import calibrate, counting, devices, gate, images
from harness.errors import ConfigError

# -- merge, report, comment, history: CI reports and the results history -------------------


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
    from harness.report.markdown import item_name, reasons

    files = _model_files(document, repo_root)
    lines = []
    for record in document.get("results", []):
        status = record["verdict"]["status"]
        if status in ("FAIL", "ERROR") or (status == "INCONCLUSIVE" and inconclusive == "fail"):
            level = "error"
        elif status == "INCONCLUSIVE":
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
    paths, text = write_reports(document, Path(args.out), verdict=verdict, kinds=kinds)
    _print_outcome(document, verdict, paths)
    if args.github or github.in_actions():
        root = Path(args.repo_root or os.environ.get("GITHUB_WORKSPACE") or Path.cwd())
        for line in _annotations(document, root, args.inconclusive):
            print(line)
        github.append_summary(text)
        report = paths.get("markdown") or paths.get("html") or paths["json"]
        github.set_outputs({"verdict": verdict.status, "report": str(report)})
    return verdict.exit_code(args.inconclusive)


def _open_store(path: Path) -> Any:
    """The history at `path`; its problems become usage errors (exit 2, one line)."""
    import sqlite3
    import warnings

    from harness.store import Store, StoreError, StoreWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", StoreWarning)
            store = Store(path)
    except (StoreError, sqlite3.OperationalError) as exc:
        raise ConfigError(f"history {path}: {exc}") from None
    if store.moved_aside is not None:
        print(
            f"harness: warning: {path} was not a readable SQLite database; kept it as "
            f"{store.moved_aside} and started a new history at {path}",
            file=sys.stderr,
        )
    return store


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
    from harness.report.markdown import step_rows
    from harness.results import merge
    from harness.verdict import overall

    document = merge(_read_results(args.results))
    verdict = overall(document)
    trends: list[Any] = []
    if args.history:
        with _open_store(Path(args.history)) as store:
            trends = store.trends(_history_keys(document))
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
        point = trend.points[index]
        print(
            f"harness: regression: {trend.figure} of {trend.suite}[{trend.model}@{trend.device}]"
            f" ({trend.fidelity}) moved {change * 100:+.1f}% at commit {point.commit or '?'}"
            f" ({point.created})"
        )
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


def _nightly(args: argparse.Namespace) -> int:
    from harness import github
    from harness.report.nightly import nightly
    from harness.results import write_atomic

    path = Path(args.history)
    if not path.is_file():
        raise ConfigError(f"no history at {path}: pass the SQLite file `pytest` writes trends to")
    with _open_store(path) as store:
        report = nightly(store, args.window, args.min_change)
    out = Path(args.out)
    page = write_atomic(out / "nightly.html", report.html())
    text = report.markdown()
    summary = write_atomic(out / "nightly.md", text)
    print(f"harness: nightly: {report.headline()}; written {page}, {summary}")
    if args.github or github.in_actions():
        github.append_summary(text)
        github.set_outputs({"report": str(summary), "regressions": str(len(report.regressions))})
    return 1 if args.fail_on_regression and report.regressions else 0


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


def _history(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from harness.config import search_config
    from harness.registry import headline_figures
    from harness.report.figures import number
    from harness.store import default_path, model_hashes_from_config

    path = Path(args.db) if args.db else default_path(search_config(Path.cwd()))
    if not args.add and not path.exists():
        raise ConfigError(f"no history at {path}: run pytest with a harness config, or pass --db")
    with _open_store(path) as store:
        for document in _read_results(args.add) if args.add else []:
            hashes: dict[str, str] = {}
            if document.get("config") and Path(document["config"]).is_file():
                try:
                    hashes = model_hashes_from_config(Path(document["config"]))
                except ConfigError:
                    hashes = {}
            run = store.add_results(document, commit=args.commit, ref=args.ref, model_hashes=hashes)
            print(f"harness: stored {document.get('source')} as run {run} in {path}")
        figures = args.figure or [*headline_figures(), "ratio"]
        points = store.points(
            device=args.device,
            model=args.model,
            suite=args.suite,
            figure=None if args.all_figures else figures,
            limit=args.limit,
            newest_first=True,
        )
    if args.json:
        print(json.dumps([p.__dict__ for p in points], indent=1))
        return 0
    table = Table(
        "run",
        "created",
        "commit",
        "device",
        "model",
        "suite",
        "figure",
        "value",
        "fidelity",
        "verdict",
        "machine",
        title=f"harness history: {path}",
    )
    for p in points:
        table.add_row(
            str(p.run_id),
            p.created,
            (p.commit or "-")[:10],
            p.device,
            p.model,
            p.suite,
            p.figure,
            number(p.value, p.figure),
            p.fidelity,
            p.verdict,
            p.machine[:8],
        )
    Console(width=max(100, shutil.get_terminal_size((160, 24)).columns)).print(table)
    if not points:
        print("harness: nothing stored matches")
    return 0


def _add_report_commands(commands: Any) -> None:
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
    report.add_argument("--history", metavar="DB", help="history SQLite file for trends")
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
        "--min-change", type=float, default=0.02, help="smallest relative step that counts"
    )
    report.set_defaults(handler=_report)

    night = commands.add_parser(
        "nightly",
        help="trends of the history per model and device, with the commits where a figure "
        "stepped: nightly.html and nightly.md (short enough for an issue or a chat message)",
    )
    night.add_argument("--history", required=True, metavar="DB", help="history SQLite file")
    night.add_argument("--out", required=True, help="output folder")
    night.add_argument("--github", action="store_true", help="job summary and step outputs")
    night.add_argument("--fail-on-regression", action="store_true", help="exit 1 on a regression")
    night.add_argument("--window", type=int, default=3, help="runs counted as recent")
    night.add_argument(
        "--min-change", type=float, default=0.02, help="smallest relative step that counts"
    )
    night.set_defaults(handler=_nightly)

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

    history = commands.add_parser("history", help="show (or add to) the results history")
    history.add_argument("--db", help="default: .harness/history.sqlite beside the config")
    history.add_argument("--device")
    history.add_argument("--model")
    history.add_argument("--suite")
    history.add_argument("--figure", action="append", help="figure name (repeatable)")
    history.add_argument("--all-figures", action="store_true")
    history.add_argument("--limit", type=int, default=50, help="rows shown (newest first)")
    history.add_argument("--json", action="store_true")
    history.add_argument("--add", nargs="+", metavar="RESULTS", help="store results files first")
    history.add_argument("--commit", help="git commit of the added results")
    history.add_argument("--ref", help="git ref of the added results")
    history.set_defaults(handler=_history)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Gate ML model merges on accuracy, latency and memory across a device matrix. "
        "Tests run through pytest (`pytest --device=NAME`); this command manages devices and "
        "reports.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    for group in (devices, images, counting, calibrate, gate):
        group.add_parser(commands)
    _add_report_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
