"""Shared fixtures. Tests that need Docker or QEMU skip on a laptop without them but fail under
CI=true, where .ci/run must have installed and started them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# pytester gives each run its own HOME; the device images' cache (debootstrap trees, wheels,
# the counting plugin) is the real one.
os.environ.setdefault("HARNESS_CACHE", str(Path.home() / ".cache" / "harness"))


def unavailable(reason: str) -> None:
    """Fail under CI=true, skip elsewhere."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: .ci/run must provide it)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_client():  # type: ignore[no-untyped-def]
    try:
        import docker

        client = docker.from_env()
        client.ping()
    except Exception as exc:  # docker.errors.DockerException and socket errors
        unavailable(f"no Docker engine answers here: {exc}")
    return client


@pytest.fixture(scope="session")
def arm64_binfmt() -> None:
    handler = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    if not handler.exists() or "enabled" not in handler.read_text():
        unavailable("no qemu-aarch64 binfmt_misc handler is registered")


@pytest.fixture(scope="session")
def slm_models() -> Path:
    """The example's language models and data (examples/slm/build_model.py): trained and exported
    once, then cached under ~/.cache/harness/slm/<hash of the script>. Holds models/slm-float,
    slm-int8, slm-int4, slm-random and data/valid.txt, data/prompts.jsonl."""
    import subprocess
    import sys

    script = ROOT / "examples" / "slm" / "build_model.py"
    done = subprocess.run(
        [sys.executable, str(script), "--venv", "--cache-only"], capture_output=True, text=True
    )
    if done.returncode:
        unavailable(f"cannot build the example language models: {done.stderr[-3000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def _preload_harness() -> None:
    """Import every harness module now: pytester's in-process runs drop modules first imported
    inside a run, which would give later runs second copies of exception classes."""
    import importlib
    import pkgutil

    import harness

    for module in pkgutil.walk_packages(harness.__path__, "harness."):
        if not module.name.startswith(("harness.worker.__main__",)):
            importlib.import_module(module.name)


_preload_harness()
