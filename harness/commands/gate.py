"""`harness run` and `harness needs`: the model gate's steps as the reusable workflow runs them.

`harness run` is the device job's step: pytest on the harness config, steered by nothing the
checkout holds. A pull request's files could otherwise steer a plain `python -m pytest` there:
an ini file's `addopts` (`--allow-gate-changes`, `--deselect`, `-k`), a `conftest.py` that drops
or patches items, a `pytest.py` or `harness/` at the repository root that the interpreter
imports first. So it runs pytest in this process (the installed harness; a console script does
not put the current folder on the import path) with an empty ini file of its own (`-c`), no
conftest files, no cache, `PYTEST_ADDOPTS` and `PYTEST_PLUGINS` cleared, and the config file as
the only thing collected. See docs/security.md.

`harness base` works out the base a workflow compares with: the merge base on a pull request,
the commit before the push on a push (a push of several commits is judged as a whole).

`harness needs` is the gate job's last step: every job the gate needs must have succeeded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from harness.errors import ConfigError

STEERING = ("PYTEST_ADDOPTS", "PYTEST_PLUGINS")  # the environment's ways to add pytest options


def pytest_arguments(args: argparse.Namespace, config: Path, ini: Path) -> list[str]:
    """The pytest command line of a device step (module docstring)."""
    arguments = ["-c", str(ini), "--rootdir", str(config.parent), "--noconftest"]
    arguments += ["-p", "no:cacheprovider", "--harness-config", str(config)]
    for device in args.device or []:
        arguments += [f"--device={name}" for name in device.replace(",", " ").split()]
    for option, value in (
        ("--baseline", args.baseline),
        ("--harness-json", args.results),
        ("--harness-report", args.report),
        ("--harness-inconclusive", args.inconclusive),
    ):
        if value:
            arguments.append(f"{option}={value}")
    if args.allow_gate_changes:
        arguments.append("--allow-gate-changes")
    extra = list(args.pytest_args)
    if extra[:1] == ["--"]:
        extra = extra[1:]
    return [*arguments, *extra, str(config)]


def _run(args: argparse.Namespace) -> int:
    import pytest

    from harness.config import search_config

    config = Path(args.config) if args.config else search_config(Path.cwd())
    if config is None or not config.is_file():
        raise ConfigError(
            f"--config {args.config}: no such file" if args.config else
            "no harness config here or above (harness.toml, or [tool.harness] in "
            "pyproject.toml): pass --config PATH"
        )  # fmt: skip
    for name in STEERING:
        os.environ.pop(name, None)
    with tempfile.TemporaryDirectory(prefix="harness-run-") as folder:
        ini = Path(folder) / "pytest.ini"
        ini.write_text("[pytest]\n")
        return int(pytest.main(pytest_arguments(args, Path(os.path.abspath(config)), ini)))


NO_COMMIT = "0" * 40  # a push's `before` when the branch is new


def _git(*arguments: str) -> str | None:
    done = subprocess.run(["git", *arguments], capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


def base_ref(baseline: str, base_branch: str, before: str) -> str:
    """`baseline` as given (`none`: no comparison); else the merge base with the pull
    request's base branch; else a push's `before`; else HEAD~1; else none."""
    if baseline == "none":
        return ""
    if baseline:
        return baseline
    if base_branch:
        merge_base = _git("merge-base", f"origin/{base_branch}", "HEAD")
        if merge_base is None:
            raise ConfigError(
                f"no merge base of HEAD and origin/{base_branch}: check out with fetch-depth: 0"
            )
        return merge_base
    if before and before != NO_COMMIT and _git("cat-file", "-t", before) == "commit":
        return before
    return _git("rev-parse", "-q", "--verify", "HEAD~1") or ""


def _base(args: argparse.Namespace) -> int:
    event: dict[str, Any] = {}
    if os.environ.get("GITHUB_EVENT_PATH"):
        try:
            event = json.loads(Path(os.environ["GITHUB_EVENT_PATH"]).read_text())
        except (OSError, json.JSONDecodeError):
            event = {}
    before = str(event.get("before") or "")
    print(f"ref={base_ref(args.baseline, os.environ.get('GITHUB_BASE_REF', ''), before)}")
    return 0


def _needs(args: argparse.Namespace) -> int:
    """Fail unless every job in `needs` (the workflow's `toJSON(needs)`) succeeded; a FAIL the
    merge found stays FAIL, anything else is an ERROR."""
    from harness import github

    why = {
        "matrix": "the device list was not built (a broken config, a failed install?)",
        "device": "a device job failed (a failing gate, or a broken run: see its log)",
    }
    try:
        needs: dict[str, Any] = json.loads(args.needs)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--needs: not the JSON of the workflow's `needs`: {exc}") from None
    problems = [
        f"job `{job}` did not succeed: {need.get('result')}: {why.get(job, 'see its log')}"
        for job, need in needs.items()
        if need.get("result") != "success"
    ]
    for problem in problems:
        print(github.annotation(problem, level="error", title="harness gate"))
    if problems:
        github.append_summary("".join(f"- ❌ {problem}\n" for problem in problems))
        github.set_outputs({"verdict": "FAIL" if args.merged == "FAIL" else "ERROR"})
    return 1 if problems else 0


def add_parser(commands: Any) -> None:
    run = commands.add_parser(
        "run",
        help="run the gates on devices as the model-gate workflow does (pytest, steered by "
        "nothing in the checkout)",
        description="pytest on the harness config with an empty ini of its own, no conftest "
        "files and no PYTEST_ADDOPTS: what the reusable workflow's device jobs run. Arguments "
        "after `--` go to pytest.",
    )
    run.add_argument("--config", metavar="PATH", help="the harness config (default: found)")
    run.add_argument("--device", action="append", metavar="NAMES", help="repeatable")
    run.add_argument("--baseline", metavar="REF_OR_PATH", help="pytest --baseline")
    run.add_argument("--results", metavar="PATH", help="pytest --harness-json")
    run.add_argument("--report", metavar="DIR", help="pytest --harness-report")
    run.add_argument(
        "--inconclusive", choices=("fail", "pass"), help="what an INCONCLUSIVE verdict does"
    )
    run.add_argument(
        "--allow-gate-changes", action="store_true", help="accept the gate changes proposed"
    )
    run.add_argument("pytest_args", nargs=argparse.REMAINDER, help="-- then pytest arguments")
    run.set_defaults(handler=_run)

    base = commands.add_parser(
        "base",
        help="print ref=<the base commit> for a workflow step (GITHUB_OUTPUT)",
        description="The base a pull request or push is compared with: --baseline as given "
        "(`none`: no comparison); else the merge base with $GITHUB_BASE_REF; else the push "
        "event's `before` commit; else HEAD~1.",
    )
    base.add_argument("--baseline", default="", help="the workflow's baseline input")
    base.set_defaults(handler=_base)

    needs = commands.add_parser(
        "needs", help="fail unless every job the gate needs succeeded (the gate job's last step)"
    )
    needs.add_argument("--needs", required=True, help="the workflow's toJSON(needs)")
    needs.add_argument("--merged", default="", help="the merge step's verdict, if it ran")
    needs.set_defaults(handler=_needs)
