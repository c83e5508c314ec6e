"""The house's floors: the import contracts in pyproject.toml hold (import-linter), the in-target
worker imports only the modules counting mode copies into the emulated device, and the wheel
carries the built-in device profiles from the top-level device-matrix/ folder; the benchmarks,
whose figures the docs quote, use only the package's public names and pass mypy."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import grimp
import pytest

from conftest import ROOT
from harness.backends.qemu import WORKER_MODULE, WORKER_SOURCES

BIN = Path(sys.executable).parent


def test_import_contracts_hold() -> None:
    done = subprocess.run(
        [str(BIN / "lint-imports"), "--config", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def _private_uses(path: Path) -> list[str]:
    """`from harness... import _name` and `module._name` on a harness module imported by name."""
    tree = ast.parse(path.read_text(), str(path))
    modules: set[str] = set()  # local names bound to harness modules
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("harness"):
            for alias in node.names:
                if alias.name.startswith("_"):
                    found.append(f"{path.name}:{node.lineno} imports {alias.name}")
                modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            modules.update(a.asname or a.name for a in node.names if a.name.startswith("harness"))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            found.append(f"{path.name}:{node.lineno} uses {node.value.id}.{node.attr}")
    return found


def test_benchmarks_use_only_public_names() -> None:
    """A refactor may rename anything private: a benchmark that reached into it would break
    the figures the docs quote without a test noticing."""
    found = [
        use for path in sorted((ROOT / "benchmarks").rglob("*.py")) for use in _private_uses(path)
    ]
    assert not found, found


def test_benchmarks_pass_mypy() -> None:
    done = subprocess.run(
        [str(BIN / "mypy"), "--explicit-package-bases", "benchmarks"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_counting_worker_imports_only_what_is_copied_into_the_device() -> None:
    graph = grimp.build_graph("harness", cache_dir=None)
    needed = graph.find_upstream_modules(WORKER_MODULE) | {WORKER_MODULE}
    copied = {"harness", *(f"harness.{entry}" for entry in WORKER_SOURCES if "." not in entry)}
    outside = sorted(m for m in needed if not any(m == c or m.startswith(c + ".") for c in copied))
    assert outside == [], f"add these to harness.backends.qemu.WORKER_SOURCES: {outside}"


def test_the_wheel_carries_the_device_matrix(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.fail(f"pip wheel failed:\n{done.stdout}{done.stderr}", pytrace=False)
    (wheel,) = tmp_path.glob("harness-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        f"harness/device_matrix/{p.relative_to(ROOT / 'device-matrix').as_posix()}"
        for p in (ROOT / "device-matrix").rglob("*")
        if p.is_file()
    }
    assert {"harness/device_matrix/rpi4.toml", "harness/device_matrix/cpuinfo/cortex-a72.txt"} <= (
        shipped
    )
    assert shipped <= names
    assert not any(name.startswith("device-matrix/") for name in names)
