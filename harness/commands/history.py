"""`harness history` (show, add to, export, import) and `harness nightly` (the trend report and
its static site): the results history in any of its stores (harness.history: an SQLite file, a
git branch, PostgreSQL), chosen by `--history LOCATION`."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.catalogue import NOISE_FLOOR
from harness.errors import ConfigError

if TYPE_CHECKING:
    from harness.history.records import RunRecord
    from harness.history.sql import Queries

LOCATION_HELP = (
    "where the history is: an SQLite file (default .harness/history.sqlite beside the config), "
    "git:REMOTE[#BRANCH] (a branch, default harness-history, of a remote of this checkout, a "
    "path or a URL) or postgresql://USER@HOST/DATABASE"
)


def open_store(
    location: str,
    *,
    readonly: bool = False,
    create: bool = True,
    repository: str | None = None,
    cache: str | None = None,
) -> Queries:
    """The history at `location`; its problems become usage errors (exit 2, one line)."""
    import sqlite3
    import warnings

    from harness.history import describe, open_history
    from harness.store import StoreError, StoreWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", StoreWarning)
            store = open_history(
                location,
                repository=repository,
                readonly=readonly,
                cache=Path(cache) if cache else None,
                create=create,
            )
    except (StoreError, sqlite3.OperationalError) as exc:
        raise ConfigError(f"history {describe(location)}: {exc}") from None
    moved = getattr(store, "moved_aside", None)
    if moved is not None:
        path = getattr(store, "path", location)
        print(
            f"harness: warning: {path} was not a readable SQLite database; kept it as "
            f"{moved} and started a new history at {path}",
            file=sys.stderr,
        )
    return store


def _location(args: argparse.Namespace) -> str:
    if args.history:
        return str(args.history)
    from harness.config import search_config
    from harness.store import default_path

    return str(default_path(search_config(Path.cwd())))


def _repository(args: argparse.Namespace) -> str:
    return str(args.repository or os.environ.get("GITHUB_REPOSITORY") or "")


def _records_from(documents: Iterable[dict[str, Any]], args: argparse.Namespace) -> list[Any]:
    from harness.history.records import from_results
    from harness.store import model_hashes_from_config

    records = []
    for document in documents:
        hashes: dict[str, str] = {}
        if document.get("config") and Path(document["config"]).is_file():
            try:
                hashes = model_hashes_from_config(Path(document["config"]))
            except ConfigError:
                hashes = {}
        record = from_results(
            document,
            commit=args.commit,
            ref=args.ref,
            model_hashes=hashes,
            repository=_repository(args),
        )
        records.append((document.get("source"), record))
    return records


# -- harness history --------------------------------------------------------------------------


def _show(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from harness.history import describe
    from harness.registry import headline_figures
    from harness.report.figures import number
    from harness.results import read_all

    location = _location(args)
    readonly = not args.add
    store = open_store(
        location,
        readonly=readonly,
        create=bool(args.add),
        repository=args.repository,
        cache=args.history_cache,
    )
    shown_as = describe(location)
    with contextlib_closing(store):
        if args.add:
            missing = [p for p in args.add if not Path(p).exists()]
            if missing:
                raise ConfigError(f"no such results file: {', '.join(missing)}")
            try:
                documents = read_all(Path(p) for p in args.add)
            except (ValueError, OSError) as exc:
                raise ConfigError(str(exc)) from None
            found = _records_from(documents, args)
            ids = store.add_records([record for _, record in found])
            for (source, _), run in zip(found, ids, strict=True):
                print(f"harness: stored {source} as run {run} in {shown_as}")
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
        *("run", "created", "commit", "device", "model", "suite", "figure", "value"),
        *("fidelity", "verdict", "machine"),
        title=f"harness history: {shown_as}",
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


class contextlib_closing:  # noqa: N801 - reads as the stdlib's closing()
    """close() the store at the end of a with block (Queries has no __exit__ of its own)."""

    def __init__(self, store: Queries) -> None:
        self.store = store

    def __enter__(self) -> Queries:
        return self.store

    def __exit__(self, *exc: object) -> None:
        self.store.close()


def _records_at(location: str, args: argparse.Namespace) -> list[RunRecord]:
    """Every record of an existing history location, opened read-only."""
    with contextlib_closing(
        open_store(
            location,
            readonly=True,
            create=False,
            repository=args.repository,
            cache=args.history_cache,
        )
    ) as store:
        return list(store.records())


def _read_source(source: str, args: argparse.Namespace) -> list[RunRecord]:
    """Records from an export file (JSON lines), a folder of record files (a checkout of a
    history branch: its runs/), or another history location."""
    from harness.history import kind_of
    from harness.history.records import RunRecord, read_lines

    path = Path(source)
    if source == "-":
        return read_lines(sys.stdin.read(), "standard input")
    if path.is_file() and path.suffix in (".jsonl", ".ndjson"):
        return read_lines(path.read_text(encoding="utf-8"), source)
    if path.is_file() and path.suffix == ".json":
        return [RunRecord.from_text(path.read_text(encoding="utf-8"), source)]
    if path.is_dir() and not (path / "HEAD").is_file():
        files = sorted(p for p in path.rglob("*.json") if p.is_file())
        return [RunRecord.from_text(p.read_text(encoding="utf-8"), str(p)) for p in files]
    if path.suffix in (".sqlite", ".db") and not path.is_file():
        raise ConfigError(f"no history at {source}")
    kind_of(source)  # an unknown scheme says which ones there are
    return _records_at(source, args)


def _export(args: argparse.Namespace) -> int:
    from harness.history import describe

    location = _location(args)
    records = _records_at(location, args)
    text = "".join(record.line() + "\n" for record in records)
    if args.out in (None, "-"):
        sys.stdout.write(text)
    else:
        from harness.results import write_atomic

        write_atomic(Path(args.out), text)
        print(f"harness: exported {len(records)} runs of {describe(location)} to {args.out}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from harness.history import describe

    records: list[RunRecord] = []
    for source in args.sources:
        records += _read_source(source, args)
    location = _location(args)
    with contextlib_closing(open_store(location, cache=args.history_cache)) as store:
        before = store.digests()
        store.add_records(records)
        added = len({r.digest for r in records} - before)
    print(
        f"harness: imported {added} new runs into {describe(location)} "
        f"({len(records) - added} already there)"
    )
    return 0


# -- harness nightly --------------------------------------------------------------------------


def _nightly(args: argparse.Namespace) -> int:
    from harness import github
    from harness.history import describe, kind_of
    from harness.history.gitbranch import GitHistory
    from harness.report.nightly import nightly, regression_line
    from harness.report.site import site
    from harness.results import write_atomic

    location = str(args.history)
    if args.publish and kind_of(location) != "git":
        raise ConfigError(
            f"--publish writes the site to a history branch: --history {describe(location)} "
            "is not one (use git:REMOTE[#BRANCH])"
        )
    store = open_store(
        location,
        readonly=not args.publish,
        create=False,
        repository=args.repository,
        cache=args.history_cache,
    )
    with contextlib_closing(store):
        report = nightly(store, args.window, args.min_change)
        title = args.title
        if args.publish:
            assert isinstance(store, GitHistory)

            def render() -> dict[str, bytes]:
                return site(nightly(store, args.window, args.min_change), title)

            pushed = store.publish(render, f"harness nightly: site of {store.run_count()} runs")
            print(
                f"harness: nightly site {'published on' if pushed else 'unchanged on'} "
                f"{store.where}"
            )
    out = Path(args.out)
    page = write_atomic(out / "nightly.html", report.html(title))
    text = report.markdown(title)
    summary = write_atomic(out / "nightly.md", text)
    for path, content in site(report, title).items():
        (out / "site" / path).parent.mkdir(parents=True, exist_ok=True)
        (out / "site" / path).write_bytes(content)
    print(
        f"harness: nightly: {report.headline()}; written {page}, {summary}, "
        f"{out / 'site' / 'index.html'}"
    )
    for trend, index, change in report.regressions:
        print(f"harness: {regression_line(trend, index, change)}")
    if args.github or github.in_actions():
        github.append_summary(text)
        github.set_outputs({"report": str(summary), "regressions": str(len(report.regressions))})
    return 1 if args.fail_on_regression and report.regressions else 0


# -- the parsers ------------------------------------------------------------------------------


def _store_options(parser: argparse.ArgumentParser, *, action: bool = False) -> None:
    """--history, --repository, --history-cache; on an action (export, import) they may also
    stand before it (`harness history --history X export`): not given there, they keep that."""
    kept: dict[str, Any] = {"default": argparse.SUPPRESS} if action else {}
    names = ["--history"] if action else ["--history", "--db"]
    parser.add_argument(*names, dest="history", metavar="LOCATION", help=LOCATION_HELP, **kept)
    parser.add_argument(
        "--repository",
        metavar="OWNER/NAME",
        help="read only this repository's runs (a shared branch or database); with --add, "
        "the repository the runs belong to (default $GITHUB_REPOSITORY)",
        **kept,
    )
    parser.add_argument(
        "--history-cache",
        metavar="DIR",
        help="a git history's local clone and SQLite cache (default under $HARNESS_CACHE)",
        **kept,
    )


def add_parser(commands: Any) -> None:
    history = commands.add_parser(
        "history",
        help="show, add to, export or import the results history",
        description="Without an action: the stored figures (headline figures, newest first); "
        "--add stores results files first (one run each; the same file twice is stored once).",
    )
    _store_options(history)
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
    history.set_defaults(handler=_show)
    actions = history.add_subparsers(dest="action", metavar="{export,import}")
    export = actions.add_parser(
        "export",
        help="every stored run as JSON lines (lossless: import takes them into any store)",
    )
    _store_options(export, action=True)
    export.add_argument("--out", metavar="FILE", help="default: standard output")
    export.set_defaults(handler=_export)
    imported = actions.add_parser(
        "import",
        help="add runs from an export file, a folder of run files or another history",
    )
    _store_options(imported, action=True)
    imported.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="an export file (.jsonl, - for standard input), a folder of run files (a "
        "checkout of a history branch), or another history's location",
    )
    imported.set_defaults(handler=_import)

    night = commands.add_parser(
        "nightly",
        help="trends of the history per model and device, with the commits where a figure "
        "stepped: nightly.html, nightly.md (short enough for an issue or a chat message) and a "
        "static site (site/: index and a page per model; --publish puts it on the history "
        "branch for GitHub Pages)",
    )
    night.add_argument("--history", required=True, metavar="LOCATION", help=LOCATION_HELP)
    night.add_argument("--repository", metavar="OWNER/NAME", help="only this repository's runs")
    night.add_argument("--history-cache", metavar="DIR", help="a git history's local cache")
    night.add_argument("--out", required=True, help="output folder")
    night.add_argument("--title", default="harness nightly", help="the pages' title")
    night.add_argument(
        "--publish",
        action="store_true",
        help="commit the site to the history branch's root (GitHub Pages: deploy from branch)",
    )
    night.add_argument("--github", action="store_true", help="job summary and step outputs")
    night.add_argument("--fail-on-regression", action="store_true", help="exit 1 on a regression")
    night.add_argument("--window", type=int, default=3, help="runs counted as recent")
    night.add_argument(
        "--min-change", type=float, default=NOISE_FLOOR, help="smallest relative step that counts"
    )
    night.set_defaults(handler=_nightly)
