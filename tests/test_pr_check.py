"""The pull-request check's defects found by running it under act (issue 22), each pinned here
where it can be shown without act: tests/test_act.py runs the whole thing.

- board latency: the emulated devices' jobs prepare counting with the installed command, and a
  board without counting names that command (not a script of harness's own checkout);
- warm runs: caches restored and saved apart (saved whatever the verdict), at paths that are the
  same in every job and run, with keys from what they hold;
- an emulated board's latency regression is decided on the timing model, not the wall clock;
- jobs sharing one Python install harness into venvs of their own; ci.yml needs no sudo as root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import ROOT, unavailable
from harness.gates import decide

WORKFLOWS = ROOT / ".github" / "workflows"


def steps(workflow: str, job: str) -> list[dict[str, Any]]:
    document = yaml.safe_load((WORKFLOWS / workflow).read_text())
    return list(document["jobs"][job]["steps"])


# -- board latency in every pull request ------------------------------------------------------


def test_the_not_set_up_message_names_the_installed_command() -> None:
    from harness.cli import build_parser
    from harness.timing import not_set_up

    message = not_set_up(RuntimeError("qemu-aarch64 is missing"), "rpi4")
    assert "`harness counting prepare --packages --device rpi4`" in message, message
    assert "scripts/" not in message
    arguments = message.split("`")[1].split()[1:]
    parsed = build_parser().parse_args(arguments)
    assert parsed.packages and parsed.device == "rpi4"


@pytest.mark.parametrize("workflow", ["model-gate.yml", "nightly.yml"])
def test_emulated_devices_prepare_counting_with_the_installed_harness(workflow: str) -> None:
    prepare = [
        s for s in steps(workflow, "device") if "harness counting prepare" in s.get("run", "")
    ]
    assert len(prepare) == 1, workflow
    assert "--packages" in prepare[0]["run"]
    assert prepare[0]["if"] == "matrix.device.fidelity == 'emulated'"
    assert "scripts/" not in prepare[0]["run"]


def test_counting_packages_install_with_sudo_only_where_not_root(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """As root apt-get runs directly; as a user through sudo; as a user without sudo the
    message says to run it as root. (apt-get itself is a recording stand-in on PATH.)"""
    from harness.commands import counting

    calls = tmp_path / "calls"
    for name in ("apt-get", "sudo"):
        tool = tmp_path / "bin" / name
        tool.parent.mkdir(exist_ok=True)
        tool.write_text(f'#!/bin/sh\necho "{name} $*" >> {calls}\n')
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    counting.install_packages(["qemu-user"])
    assert calls.read_text().splitlines()[-1].startswith("apt-get install")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    counting.install_packages(["qemu-user"])
    assert calls.read_text().splitlines()[-1].startswith("sudo DEBIAN_FRONTEND=noninteractive")
    (tmp_path / "bin" / "sudo").unlink()
    with pytest.raises(RuntimeError, match="run `harness counting prepare --packages` as root"):
        counting.install_packages(["qemu-user"])


# -- warm pull requests ----------------------------------------------------------------------


def cache_steps(workflow: str) -> list[dict[str, Any]]:
    return [
        s for s in steps(workflow, "device") if str(s.get("uses", "")).startswith("actions/cache")
    ]


@pytest.mark.parametrize("workflow", ["model-gate.yml", "nightly.yml"])
def test_caches_are_saved_whatever_the_verdict_at_paths_every_job_shares(workflow: str) -> None:
    found = cache_steps(workflow)
    uses = {s["uses"] for s in found}
    assert uses == {"actions/cache/restore@v5", "actions/cache/save@v5"}, uses
    restores = [s for s in found if "restore" in s["uses"]]
    saves = [s for s in found if "save" in s["uses"]]
    assert len(restores) == len(saves) == 2
    for save in saves:
        assert save["if"].startswith("always()"), save
    for step in found:
        assert "runner.temp" not in step["with"]["path"], step
        assert step["with"]["path"].lstrip().startswith("~/.cache/"), step
    paths = {s["with"]["path"] for s in found}
    assert len(paths) == 2  # each save stores exactly what its restore restored
    board = next(s for s in restores if "answers" in s["with"]["path"])
    for folder in ("answers", "timing", "counting"):
        assert f"~/.cache/harness/{folder}" in board["with"]["path"]
    # The key holds what the answers depend on, and not what they do not (a README).
    assert "hashFiles" in board["with"]["key"] and "matrix.device.image" in board["with"]["key"]
    assert "**/*.onnx" in board["with"]["key"] and "README" not in board["with"]["key"]


# -- identical models on an emulated board ---------------------------------------------------


def test_an_emulated_regression_is_decided_on_the_timing_model_not_the_wall_clock() -> None:
    """The figures of issue 22's README-only PR on rpi4: the emulated wall clock said +20.3%
    [+3.6%, +30.8%] (three jobs sharing the CPU); the estimates of the same model agree."""
    from harness.config import GateSpec

    figures = {
        "ratio": 1.0,
        "ratio_low": 1.0,
        "ratio_high": 1.0,
        "ratio_basis": "estimated",
        "estimated_ms": 0.0524,
        "baseline_estimated_ms": 0.0524,
        "emulated_ratio": 1.203,
        "emulated_ratio_low": 1.036,
        "emulated_ratio_high": 1.308,
    }
    verdict = decide(
        "latency", figures, GateSpec(latency_max_regression=0.10), "rpi4", "emulated",
        {"baseline": "main"},
    )  # fmt: skip
    assert verdict.status == "PASS", verdict
    (check,) = verdict.checks
    assert "estimated" in check.message and "+20.3%" in check.message, check.message
    assert "not a gate" in check.message
    worse = figures | {"ratio": 1.15, "ratio_low": 1.15, "ratio_high": 1.15, "emulated_ratio": 1.0}
    verdict = decide(
        "latency", worse, GateSpec(latency_max_regression=0.10), "rpi4", "emulated",
        {"baseline": "main"},
    )  # fmt: skip
    assert verdict.status == "FAIL", verdict


def test_an_estimated_regression_outside_the_timing_models_mix_is_undecided() -> None:
    """A ratio of two estimates holds only where both estimates do: a model outside the
    calibration set's instruction mix (issue 23: public int8 CNNs estimated at -85%) must not
    pass its relative gate on that ratio; nor fail it."""
    from harness.config import GateSpec

    figures = {
        "ratio": 1.02,
        "ratio_low": 1.02,
        "ratio_high": 1.02,
        "ratio_basis": "estimated",
        "estimated_ms": 10.2,
        "baseline_estimated_ms": 10.0,
        "estimate_not_validated": "not validated: scalar share 0.61 outside [0.08, 0.35]",
    }
    for ratio in (1.02, 1.5):
        verdict = decide(
            "latency", figures | {"ratio": ratio}, GateSpec(latency_max_regression=0.10),
            "rpi4", "emulated", {"baseline": "main"},
        )  # fmt: skip
        assert verdict.status == "INCONCLUSIVE", verdict
        assert "scalar share" in verdict.checks[0].message


def test_an_identical_model_cannot_regress() -> None:
    """A README-only pull request: every model is its base byte for byte. Issue 22 saw the
    paired wall clock leave it undecided on a loaded runner ([-22.1%, +32.4%] on the host)."""
    from harness.config import GateSpec

    figures = {"ratio": 1.0, "ratio_low": 1.0, "ratio_high": 1.0, "ratio_basis": "identical"}
    for device, fidelity in (("host", "measured"), ("rpi4", "emulated")):
        verdict = decide(
            "latency", figures, GateSpec(latency_max_regression=0.10), device, fidelity,
            {"baseline": "main"},
        )  # fmt: skip
        assert verdict.status == "PASS", verdict
        assert "byte for byte" in verdict.checks[0].message


def test_an_emulated_regression_without_counting_is_not_applied_and_says_how() -> None:
    from harness.config import GateSpec
    from harness.timing import not_set_up

    figures = {"estimate_unavailable": not_set_up(RuntimeError("no qemu-aarch64"), "rpi4")}
    verdict = decide(
        "latency", figures, GateSpec(latency_max_regression=0.10), "rpi4", "emulated",
        {"baseline": "main"},
    )  # fmt: skip
    (check,) = verdict.checks
    assert check.passed is None and "harness counting prepare" in check.message
    assert verdict.status != "FAIL"


# -- matrix jobs sharing one Python; ci.yml as root ------------------------------------------


@pytest.mark.parametrize("workflow", ["model-gate.yml", "nightly.yml"])
def test_every_job_installs_harness_into_a_venv_of_its_own(workflow: str) -> None:
    document = yaml.safe_load((WORKFLOWS / workflow).read_text())
    for name, job in document["jobs"].items():
        for step in job["steps"]:
            if "pip install" in step.get("run", ""):
                run = step["run"]
                venv = "python -I -m venv --without-pip --system-site-packages harness-venv"
                assert venv in run, name
                assert "harness-venv/bin/python -I -m pip install" in run, name
                assert "GITHUB_PATH" in run, name


def test_ci_tools_step_runs_as_root_without_sudo(tmp_path: Path) -> None:
    """The tests job's apt step, run as root with no sudo on PATH (act's jobs on a root host,
    a root container): it must install (here: find installed) shellcheck."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        unavailable("needs root and apt-get (the CI machine's setting)")
    step = next(s for s in steps("ci.yml", "tests") if "shellcheck" in s.get("run", ""))
    folder = tmp_path / "bin"
    folder.mkdir()
    for tool in ("apt-get", "dpkg", "dpkg-query", "id", "sh", "grep", "cat"):
        found = shutil.which(tool)
        if found:
            (folder / tool).symlink_to(found)
    environment = {"PATH": f"{folder}:/usr/sbin:/sbin", "DEBIAN_FRONTEND": "noninteractive"}
    assert shutil.which("sudo", path=environment["PATH"]) is None
    done = subprocess.run(
        [shutil.which("bash") or "/bin/bash", "-e", "-c", step["run"]],
        env=environment,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# -- counting on a runner that restored the device image --------------------------------------


def test_counting_trees_come_out_of_the_device_image(
    docker_client: Any, counting_plugin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A runner that restored the image from the cache has no debootstrap trees: `harness
    counting prepare` takes them out of the image (docker export) and counts in them, with the
    same instructions per inference as in the trees the image was built from."""
    from harness.backends.qemu import QemuBackend, count_instructions, find_interpreter
    from harness.devices import load_profiles
    from harness.images.common import Progress
    from harness.images.debootstrap import trees_from_image
    from harness.images.recipe import recipe_for

    profile = load_profiles()["x86-64"]
    recipe = recipe_for(profile)
    try:
        docker_client.images.get(recipe.tag)
    except Exception:  # noqa: BLE001 - docker.errors.ImageNotFound
        unavailable(f"the device image {recipe.tag} is not built (harness images build)")
    model = ROOT / "examples" / "digits" / "models" / "digits.onnx"
    backend = QemuBackend(prefer="rootfs")
    built = count_instructions(profile, model, samples=3, warmup=1, backend=backend)
    real = Path(os.environ["HARNESS_CACHE"])
    (tmp_path / "counting").symlink_to(real / "counting")  # the plugin; the trees are not there
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    with pytest.raises(Exception, match="counting prepare"):
        find_interpreter(profile, "rootfs")
    assert trees_from_image(recipe, docker_client, Progress(None))
    interpreter = find_interpreter(profile, "rootfs")
    assert str(interpreter.rootfs).startswith(str(tmp_path)), interpreter
    exported = count_instructions(profile, model, samples=3, warmup=1, backend=backend)
    assert exported.instructions_per_inference == built.instructions_per_inference


# -- trends in the pull request's report --------------------------------------------------------


def test_trends_in_the_gate_job_are_read_only_and_never_decide(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """`harness merge --history` (the gate job's trends) with a history it cannot read: the
    same exit status and verdict as without, a note in the log, no history column."""
    from test_reports import example_results

    from harness.cli import main

    results = example_results(tmp_path_factory)
    plain = main(["merge", str(results), "--out", str(tmp_path / "plain")])
    missing = f"git+{tmp_path / 'no-such-origin.git'}#harness-history"
    with_history = main(["merge", str(results), "--out", str(tmp_path / "h"), "--history", missing])
    out = capsys.readouterr().out
    assert with_history == plain
    assert f"harness: no trends from {missing}" in out
    assert (tmp_path / "h" / "report.md").read_text().splitlines()[0] == (
        (tmp_path / "plain" / "report.md").read_text().splitlines()[0]
    )
    step = next(s for s in steps("model-gate.yml", "gate") if s.get("id") == "merge")
    assert '--history "git+$origin#$HISTORY_BRANCH"' in step["run"]
