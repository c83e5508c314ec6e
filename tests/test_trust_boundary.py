"""The trust boundary, tried as an attacker would (docs/security.md, "A pull request that edits its
own gates"): a pull request with push rights to its branch, no `--allow-gate-changes` and no edit
under `.github/`, ships a worse model (accuracy 0.88 against the base's 0.97) and tries to get
it past the gate. Each attempt must fail, with a one-line reason, both under a plain
`pytest --baseline=<base>` and under the reusable workflow's own commands (`harness run` on the
device job, `harness merge` on the gate job). A pull request that changes nothing but a README,
and one that improves the model, still pass.

Each attempt is a function that edits the pull request's work tree after the worse model is in
place; the module's repository holds the base commit (tests/test_trust_boundary.py::make_base).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from conftest import ROOT, git

pytest_plugins = ["pytester"]

DIGITS = ROOT / "examples" / "digits"
HARNESS = str(Path(sys.executable).parent / "harness")

# The base: `digits` is held to its accuracy against the base (accuracy_min is a floor the worse
# model clears); `twin` must agree with `ref`, a copy of the good model; every model has its
# robustness properties checked.
BASE_CONFIG = """\
[robustness]
examples = 5
time_budget_s = 10
[latency]
warmup = 2
samples = 20
min_samples = 5
time_budget_s = 0.5

[[models]]
name = "digits"
path = "models/digits.onnx"
dataset = "data/digits_test.npz"
output = "probabilities"
[models.gates]
accuracy_min = 0.85
accuracy_max_drop = 0.01
size_kb_max = 64

[[models]]
name = "ref"
path = "models/ref.onnx"
output = "probabilities"

[[models]]
name = "twin"
path = "models/twin.onnx"
dataset = "data/digits_test.npz"
output = "probabilities"
parity_with = "ref"
[models.gates]
parity_top1_min = 0.98
"""


def worse_digits(path: Path, noise: float = 0.95) -> float:
    """The examples' digits MLP with noise on its first layer: accuracy about 0.88 (returned)."""
    model = onnx.load(str(DIGITS / "models" / "digits.onnx"))
    weights = model.graph.initializer[0]
    values = numpy_helper.to_array(weights)
    rng = np.random.default_rng(1)
    noisy = values + rng.standard_normal(values.shape).astype(np.float32) * noise * values.std()
    weights.CopyFrom(numpy_helper.from_array(noisy.astype(np.float32), weights.name))
    onnx.save(model, str(path))
    return accuracy(path)


def accuracy(path: Path) -> float:
    import onnxruntime as ort

    data = np.load(DIGITS / "data" / "digits_test.npz")
    session = ort.InferenceSession(str(path))
    scores = session.run(["probabilities"], {session.get_inputs()[0].name: data["X"]})[0]
    return float((scores.argmax(axis=1) == data["y"]).mean())


def predictions(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path))
    scores = session.run(["probabilities"], {session.get_inputs()[0].name: x})[0]
    return np.asarray(scores.argmax(axis=1))


def commit(root: Path, message: str) -> str:
    git(root, "add", "-A")
    git(root, "commit", "-qm", message, "--allow-empty")
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.strip()


def make_base(root: Path) -> str:
    """The base commit: three copies of the digits model (0.9733), the test set, the config."""
    git(root, "init", "-q")
    (root / "models").mkdir()
    (root / "data").mkdir()
    for name in ("digits", "ref", "twin"):
        shutil.copy(DIGITS / "models" / "digits.onnx", root / "models" / f"{name}.onnx")
    shutil.copy(DIGITS / "data" / "digits_test.npz", root / "data" / "digits_test.npz")
    (root / "harness.toml").write_text(BASE_CONFIG)
    return commit(root, "base")


# -- the attempts -------------------------------------------------------------------------------
# Each ships a worse model and edits the pull request's tree so that, on the harness before the
# trust boundary, the worse model passed: `python -m pytest --baseline=<base>` exited 0
# (benchmarks/redteam_before.py replays them on an older harness).


def _edit_config(root: Path, old: str, new: str, name: str = "harness.toml") -> None:
    path = root / name
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def ship_worse(root: Path, name: str = "digits") -> None:
    accuracy_now = worse_digits(root / "models" / f"{name}.onnx")
    assert 0.85 < accuracy_now < 0.92, accuracy_now  # under the base's drop gate, over its floor


def nan_for_negative_inputs(path: Path) -> None:
    """The digits model, but x + 0 * sqrt(x) first: the same answers on the test set (pixels
    are never negative), NaN wherever an input is below zero (a robustness failure)."""
    model = onnx.load(str(DIGITS / "models" / "digits.onnx"))
    graph = model.graph
    source = graph.input[0].name
    guard = [
        onnx.helper.make_node("Sqrt", [source], ["guard_sqrt"]),
        onnx.helper.make_node("Mul", ["guard_sqrt", "guard_zero"], ["guard_nan"]),
        onnx.helper.make_node("Add", [source, "guard_nan"], ["guarded"]),
    ]
    for node in graph.node:
        node.input[:] = ["guarded" if name == source else name for name in node.input]
    graph.initializer.append(numpy_helper.from_array(np.zeros(1, np.float32), "guard_zero"))
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(guard + nodes)
    onnx.save(model, str(path))


def drop_dataset(root: Path) -> None:
    """No dataset: no accuracy item, so the accuracy gates are never applied."""
    ship_worse(root)
    _edit_config(root, 'dataset = "data/digits_test.npz"\noutput', "output")


def drop_parity(root: Path) -> None:
    """The twin ships worse, and its comparison with `ref` is deleted."""
    ship_worse(root, "twin")
    _edit_config(root, 'parity_with = "ref"\n', "")


def robustness_off(root: Path) -> None:
    """A model that outputs NaN for negative inputs, and the property suite switched off."""
    nan_for_negative_inputs(root / "models" / "digits.onnx")
    _edit_config(root, "examples = 5", "examples = 0")


def path_to_another_file(root: Path) -> None:
    """The config measures another copy of the good model (`ref`'s file, there at the base
    too); the worse one ships at the usual path."""
    ship_worse(root)
    _edit_config(root, 'path = "models/digits.onnx"', 'path = "models/ref.onnx"')


def filtered_dataset(root: Path) -> None:
    """The test set cut down to the samples the worse model gets right."""
    ship_worse(root)
    data = np.load(root / "data" / "digits_test.npz")
    right = predictions(root / "models" / "digits.onnx", data["X"]) == data["y"]
    np.savez(root / "data" / "digits_test.npz", X=data["X"][right], y=data["y"][right])


def relabelled_dataset(root: Path) -> None:
    """The test set relabelled with the worse model's own answers."""
    ship_worse(root)
    data = np.load(root / "data" / "digits_test.npz")
    y = predictions(root / "models" / "digits.onnx", data["X"]).astype(data["y"].dtype)
    np.savez(root / "data" / "digits_test.npz", X=data["X"], y=y)


def nan_threshold(root: Path) -> None:
    """`value > nan` is never true; the old policy called 0.01 → nan tightened."""
    ship_worse(root)
    _edit_config(root, "accuracy_max_drop = 0.01", "accuracy_max_drop = nan")


def nan_device_override(root: Path) -> None:
    ship_worse(root)
    _edit_config(
        root,
        "size_kb_max = 64\n",
        "size_kb_max = 64\n[models.devices.host]\naccuracy_max_drop = nan\n",
    )


def baseline_folder_link(root: Path) -> None:
    """A committed link where the harness used to extract the base's files: they landed on
    the pull request's own model, so the base was compared with itself."""
    ship_worse(root)
    base = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.strip()
    folder = root / ".harness" / "baseline"
    folder.mkdir(parents=True)
    (folder / base[:12]).symlink_to("../..")


def config_link(root: Path) -> None:
    """harness.toml becomes a link to a loosened copy elsewhere: the policy looked the copy's
    path up at the base, found nothing there, and called every gate new."""
    ship_worse(root)
    (root / "cfg").mkdir()
    text = (root / "harness.toml").read_text().replace("accuracy_max_drop = 0.01", "")
    text = text.replace('"models/', '"../models/').replace('"data/', '"../data/')
    (root / "cfg" / "harness.toml").write_text(text)
    (root / "harness.toml").unlink()
    (root / "harness.toml").symlink_to("cfg/harness.toml")


def ini_allows_gate_changes(root: Path) -> None:
    ship_worse(root)
    _edit_config(root, "accuracy_max_drop = 0.01", "accuracy_max_drop = 0.5")
    (root / "pytest.ini").write_text("[pytest]\naddopts = --allow-gate-changes\n")


def ini_deselects(root: Path) -> None:
    ship_worse(root)
    (root / "pytest.ini").write_text(
        "[pytest]\naddopts = --deselect harness.toml::accuracy[digits@host]\n"
    )


def pyproject_keyword(root: Path) -> None:
    ship_worse(root)
    (root / "pyproject.toml").write_text(
        "[tool.pytest.ini_options]\naddopts = \"-k 'not accuracy'\"\n"
    )


def conftest_drops_items(root: Path) -> None:
    ship_worse(root)
    (root / "conftest.py").write_text(
        textwrap.dedent("""\
        def pytest_collection_modifyitems(config, items):
            items[:] = [i for i in items if "accuracy" not in i.name]
        """)
    )


def conftest_patches_items(root: Path) -> None:
    """A conftest that turns every harness check into a pass."""
    ship_worse(root)
    (root / "conftest.py").write_text(
        textwrap.dedent("""\
        import harness.items

        harness.items.HarnessItem.runtest = lambda self: None
        harness.items.PolicyItem.runtest = lambda self: None
        """)
    )


def shadowing_packages(root: Path) -> None:
    """`pytest.py` at the repository root, first on `python -m pytest`'s import path."""
    ship_worse(root)
    (root / "pytest.py").write_text("raise SystemExit(0)\n")


Attempt = Callable[[Path], None]
ATTEMPTS: dict[str, tuple[Attempt, str]] = {
    # name: (the edit, what the one-line reason names under plain pytest and, unless
    # WORKFLOW_REASONS says otherwise, under the workflow's commands)
    "drop-dataset": (drop_dataset, "models.digits.dataset data/digits_test.npz"),
    "drop-parity": (drop_parity, "models.twin.parity_with ref → unset (changed)"),
    "robustness-off": (robustness_off, "config.robustness.examples 5 → 0 (changed)"),
    "path-elsewhere": (path_to_another_file, "models.digits.path models/digits.onnx"),
    "filtered-data": (filtered_dataset, "models.digits.dataset data/digits_test.npz"),
    "relabelled-data": (relabelled_dataset, "models.digits.dataset data/digits_test.npz"),
    "nan-threshold": (nan_threshold, "accuracy_max_drop = nan must be a finite number"),
    "nan-override": (nan_device_override, "accuracy_max_drop = nan must be a finite number"),
    "base-folder-link": (baseline_folder_link, "accuracy drop 0."),
    "config-link": (config_link, "harness.toml is a symbolic link to cfg/harness.toml"),
    "ini-allows": (ini_allows_gate_changes, "accuracy_max_drop 0.01 → 0.5 (loosened)"),
    "ini-deselects": (ini_deselects, "items the judged config requires did not report"),
    "pyproject-k": (pyproject_keyword, "items the judged config requires did not report"),
    "conftest-drops": (conftest_drops_items, "items the judged config requires did not report"),
}
# Under the workflow's commands, files that steer pytest are not read at all: the items run,
# and the worse model fails them.
WORKFLOW_REASONS = {
    "ini-deselects": "accuracy drop 0.",
    "pyproject-k": "accuracy drop 0.",
    "conftest-drops": "accuracy drop 0.",
}
# Attempts only the workflow's commands answer: code from the checkout that runs inside a plain
# pytest process can rewrite that process (docs/security.md says where PR code runs).
WORKFLOW_ONLY: dict[str, tuple[Attempt, str]] = {
    "conftest-patches": (conftest_patches_items, "accuracy drop 0."),
    "shadowing": (shadowing_packages, "accuracy drop 0."),
}
# Changes the policy before the boundary did not notice: each is now listed, and fails policy.
NOTICED = {
    "seed": ("[robustness]", "seed = 7\n[robustness]", "config.seed 0 → 7 (changed)"),
    "plan-confidence": (
        "[robustness]",
        "[plan]\nconfidence = 0.5\n[robustness]",
        "config.plan.confidence 0.95 → 0.5 (changed)",
    ),
    "latency-samples": ("samples = 20", "samples = 3", "config.latency.samples 20 → 3 (changed)"),
    "input-shapes": (
        'output = "probabilities"\n[models.gates]\naccuracy_min',
        'output = "probabilities"\ninput_shapes = { input = [1, 64] }\n'
        "[models.gates]\naccuracy_min",
        "models.digits.input_shapes",
    ),
    "inconclusive": (
        "[robustness]",
        'inconclusive = "pass"\n[robustness]',
        "config.inconclusive fail → pass (loosened)",
    ),  # fmt: skip
}


@pytest.fixture(scope="module")
def base_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("base") / "repo"
    root.mkdir()
    return root, make_base(root)


@pytest.fixture
def pull_request(base_repo: tuple[Path, str], tmp_path: Path) -> tuple[Path, str]:
    """A clone of the base repository: the pull request's work tree."""
    source, base = base_repo
    root = tmp_path / "pr"
    subprocess.run(["git", "clone", "-q", str(source), str(root)], check=True)
    return root, base


def plain_pytest(root: Path, base: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`python -m pytest --baseline=<base>` in the pull request's checkout, as a developer (or
    yesterday's workflow) runs it: its ini files and conftest apply."""
    command = [sys.executable, "-m", "pytest", f"--harness-json={out}", "--harness-history=none"]
    command += [f"--baseline={base}"] if base else []
    command += extra
    return subprocess.run(command, cwd=root, capture_output=True, text=True, env=_env(root))


def workflow(root: Path, base: str, results: Path) -> tuple[int, str]:
    """The reusable workflow's device step (`harness run`) and gate step (`harness merge`),
    with the gate step run outside the checkout as the gate job does: (merge's exit, output)."""
    head = commit(root, "the pull request")
    results.mkdir(parents=True, exist_ok=True)  # as the gate job does: it may stay empty
    device = [HARNESS, "run", "--config", "harness.toml", "--device", "host", "--baseline", base]
    device += ["--results", str(results / "host.json"), "--inconclusive", "fail"]
    device += ["--", "--harness-history=none"]
    ran = subprocess.run(device, cwd=root, capture_output=True, text=True, env=_env(root))
    gate = [HARNESS, "merge", str(results), "--out", str(results / "report"), "--expect-device"]
    gate += ["host", "--baseline", base, "--config", str(root / "harness.toml")]
    gate += ["--expect-commit", head]
    merged = subprocess.run(gate, cwd=results, capture_output=True, text=True, env=_env(root))
    return merged.returncode, ran.stdout + ran.stderr + merged.stdout + merged.stderr


def _env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTEST_ADDOPTS", None)
    env["HOME"] = str(root.parent)  # onnxruntime's device-id file, not the user's
    return env


def one_line(output: str, text: str) -> str:
    """The line of `output` that names `text` (the attempt's one-line reason)."""
    lines = [line for line in output.splitlines() if text in line]
    assert lines, f"no line names {text!r} in:\n{output[-6000:]}"
    return lines[0]


@pytest.mark.parametrize("name", list(ATTEMPTS))
def test_an_attempt_fails_under_plain_pytest(
    pull_request: tuple[Path, str], tmp_path: Path, name: str
) -> None:
    root, base = pull_request
    attempt, reason = ATTEMPTS[name]
    attempt(root)
    commit(root, name)
    done = plain_pytest(root, base, tmp_path / "out.json")
    assert done.returncode != 0, done.stdout[-4000:]
    one_line(done.stdout + done.stderr, reason)


@pytest.mark.parametrize("name", [*ATTEMPTS, *WORKFLOW_ONLY])
def test_an_attempt_fails_under_the_workflows_commands(
    pull_request: tuple[Path, str], tmp_path: Path, name: str
) -> None:
    root, base = pull_request
    attempt, reason = {**ATTEMPTS, **WORKFLOW_ONLY}[name]
    attempt(root)
    status, output = workflow(root, base, tmp_path / "results")
    assert status != 0, output[-4000:]
    one_line(output, WORKFLOW_REASONS.get(name, reason))


def test_the_base_folder_link_writes_nothing_through_it(
    pull_request: tuple[Path, str], tmp_path: Path
) -> None:
    """The base's files are extracted away from the checkout: the pull request's model is the
    one measured, and the link's target is never written to."""
    root, base = pull_request
    baseline_folder_link(root)
    commit(root, "link")
    before = (root / "models" / "digits.onnx").read_bytes()
    done = plain_pytest(root, base, tmp_path / "out.json")
    assert done.returncode != 0
    assert (root / "models" / "digits.onnx").read_bytes() == before
    one_line(done.stdout, "accuracy drop")


# -- no false alarms --------------------------------------------------------------------------


def test_a_readme_only_change_passes_both_ways(base_repo: tuple[Path, str], tmp_path: Path) -> None:
    source, base = base_repo
    root = tmp_path / "pr"
    subprocess.run(["git", "clone", "-q", str(source), str(root)], check=True)
    (root / "README.md").write_text("documentation only\n")
    commit(root, "readme")
    done = plain_pytest(root, base, tmp_path / "out.json")
    assert done.returncode == 0, done.stdout[-4000:]
    status, output = workflow(root, base, tmp_path / "results")
    assert status == 0, output[-4000:]
    assert "gates unchanged from" in output


def test_an_improved_model_passes_without_touching_the_config(tmp_path: Path) -> None:
    """The base ships the worse model (its gates allow it); the change brings the better one."""
    root = tmp_path / "repo"
    root.mkdir()
    make_base(root)
    ship_worse(root)
    base = commit(root, "the base ships the worse model")
    shutil.copy(DIGITS / "models" / "digits.onnx", root / "models" / "digits.onnx")
    commit(root, "a better model")
    done = plain_pytest(root, base, tmp_path / "out.json")
    assert done.returncode == 0, done.stdout[-4000:]
    status, output = workflow(root, base, tmp_path / "results")
    assert status == 0, output[-4000:]
    record = next(
        r
        for r in json.loads((tmp_path / "results" / "host.json").read_text())["results"]
        if r["suite"] == "accuracy" and r["model"] == "digits"
    )
    assert record["figures"]["accuracy"] > record["figures"]["baseline_accuracy"]


def test_a_loosened_gate_passes_only_with_allow_gate_changes_on_the_command_line(
    pull_request: tuple[Path, str], tmp_path: Path
) -> None:
    root, base = pull_request
    _edit_config(root, "size_kb_max = 64", "size_kb_max = 128")
    commit(root, "loosen the size gate")
    refused = plain_pytest(root, base, tmp_path / "a.json")
    assert refused.returncode != 0
    one_line(refused.stdout, "size_kb_max 64 → 128 (loosened)")
    accepted = plain_pytest(root, base, tmp_path / "b.json", "--allow-gate-changes")
    assert accepted.returncode == 0, accepted.stdout[-4000:]
    one_line(accepted.stdout, "size_kb_max 64 → 128 (loosened)")  # still listed


@pytest.mark.parametrize("name", list(NOTICED))
def test_a_setting_that_changes_the_measurement_fails_policy(
    pull_request: tuple[Path, str], tmp_path: Path, name: str
) -> None:
    root, base = pull_request
    old, new, reason = NOTICED[name]
    _edit_config(root, old, new)
    commit(root, name)
    done = plain_pytest(root, base, tmp_path / "out.json", "-k", "policy")
    assert done.returncode != 0
    one_line(done.stdout, reason)


def test_a_stored_results_baseline_carries_its_config_and_gets_a_policy(
    base_repo: tuple[Path, str], tmp_path: Path
) -> None:
    """A results file as the base (a nightly's, say) decides as a base commit does: the
    config it was made with and its data's digests travel inside it."""
    source, _ = base_repo
    root = tmp_path / "pr"
    subprocess.run(["git", "clone", "-q", str(source), str(root)], check=True)
    stored = tmp_path / "base.json"
    first = plain_pytest(root, "", stored)  # no --baseline: the base's own results
    assert first.returncode == 0, first.stdout[-3000:]
    ship_worse(root)
    _edit_config(root, "accuracy_max_drop = 0.01", "accuracy_max_drop = 0.5")
    done = plain_pytest(root, str(stored), tmp_path / "out.json")
    assert done.returncode != 0
    one_line(done.stdout, "accuracy_max_drop 0.01 → 0.5 (loosened)")
