"""The `harness` command's device and counting groups, and the config search it shares with the
plugin. (merge/report/comment/history: test_reports.py, test_github.py, test_store.py; images:
test_images.py; the workflows calling `harness devices --github-matrix`: test_workflows.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.config import search_config
from harness.devices import load_profiles
from harness.images import image_tag

PROFILE = """\
description = "a board of our own"
backend = "docker"
arch = "arm64"
cpu = "cortex-a53"
cpus = 2
memory = "1g"
"""


def _outputs(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines())


def _repo(tmp_path: Path, config: str) -> Path:
    (tmp_path / ".git").mkdir()  # the search stops at a repository's top
    model = '[[models]]\nname = "m"\npath = "m.onnx"\n'  # a missing file fails only its items
    (tmp_path / "harness.toml").write_text(config + model)
    return tmp_path


def test_github_matrix_from_the_config_found_upwards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _repo(tmp_path, 'devices = ["host", "rpi4"]\n')
    (repo / "sub").mkdir()
    monkeypatch.chdir(repo / "sub")
    assert main(["devices", "--github-matrix"]) == 0
    outputs = _outputs(capsys.readouterr().out)
    assert outputs["names"] == "host,rpi4"
    rpi4 = load_profiles()["rpi4"]
    assert json.loads(outputs["devices"]) == [
        {"name": "host", "backend": "local", "arch": load_profiles()["host"].target_arch,
         "fidelity": "measured", "image": ""},
        {"name": "rpi4", "backend": "docker", "arch": "arm64", "fidelity": "emulated",
         "image": image_tag(rpi4)},
    ]  # fmt: skip


def test_github_matrix_all_is_every_cpu_profile_and_the_configs_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _repo(tmp_path, 'matrix = "boards"\n')
    (repo / "boards").mkdir()
    (repo / "boards" / "my-board.toml").write_text(PROFILE)
    config = str(repo / "harness.toml")
    assert main(["devices", "--github-matrix", "--config", config, "--devices", "all"]) == 0
    names = _outputs(capsys.readouterr().out)["names"].split(",")
    cpu = [n for n, p in load_profiles().items() if p.accelerator == "none"]
    assert sorted(names) == sorted([*cpu, "my-board"])
    assert "cuda-gpu" not in names  # a GPU device runs only where it is named
    assert main(["devices", "--github-matrix", "--config", config, "--devices", "cuda-gpu"]) == 0
    assert _outputs(capsys.readouterr().out)["names"] == "cuda-gpu"


def test_github_matrix_errors_say_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _repo(tmp_path, "")
    assert main(["devices", "--github-matrix", "--config", str(repo / "harness.toml"),
                 "--devices", "host, rpi5"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "harness: error: --devices: unknown device 'rpi5'; known devices: " in err
    assert "rpi4" in err
    empty = tmp_path / "empty"
    (empty / ".git").mkdir(parents=True)
    monkeypatch.chdir(empty)
    assert main(["devices", "--github-matrix"]) == 2
    assert "no harness config here or above" in capsys.readouterr().err
    assert main(["devices", "--github-matrix", "--config", "nowhere.toml"]) == 2
    assert "--config nowhere.toml: no such file" in capsys.readouterr().err


def test_config_search_stops_at_the_repository_top(tmp_path: Path) -> None:
    (tmp_path / "harness.toml").write_text("")  # above the repository: not this repo's config
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "a" / "b").mkdir(parents=True)
    assert search_config(repo / "a" / "b") is None
    (repo / "pyproject.toml").write_text("[tool.harness]\n")
    assert search_config(repo / "a" / "b") == repo / "pyproject.toml"
    (repo / "a" / "harness.toml").write_text("")
    assert search_config(repo / "a" / "b") == repo / "a" / "harness.toml"
    assert search_config(repo / "a" / "b", stop=repo / "a" / "b") is None  # pytest's rootdir


def test_devices_json_lists_every_profile(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devices", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [p["name"] for p in listed] == list(load_profiles())


def test_counting_commands_are_harness_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "counting", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    for command in ("build", "prepare", "count"):
        assert command in done.stdout
    assert main(["counting", "count", "--device", "rpi5", "model.onnx"]) == 2
    assert "--device: unknown device 'rpi5'" in capsys.readouterr().err
