"""The project's shared test fixtures (tests/ holds the tests). Tests that need Docker or QEMU skip
on a laptop without them but fail under CI=true, where .ci/run must have installed and started
them. Heavy imports wait inside the fixtures: pytest also loads this file for runs in examples/."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# pytester gives each run its own HOME; the device images' cache (debootstrap trees, wheels,
# the counting plugin) is the real one.
os.environ.setdefault("HARNESS_CACHE", str(Path.home() / ".cache" / "harness"))
# Dozens of tests start pytest, harness or a worker in a process of their own. Where the
# environment says PYTHONDONTWRITEBYTECODE (this project's CI machines do), each of those compiled
# every module again and pytest rewrote the asserts of harness's 160 modules every time: about 2 s
# a session (a third of the fast set's time). They now keep their bytecode like any checkout.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
# The board answers a session starts with are none, as on a fresh machine: a test that counts
# what the board was asked must not depend on what earlier sessions here left in the cache
# (tests of the cache itself give it a folder of their own). Shared within the session.
if "HARNESS_ANSWERS_CACHE" not in os.environ:
    _answers = tempfile.mkdtemp(prefix="harness-test-answers-")
    os.environ["HARNESS_ANSWERS_CACHE"] = _answers
    atexit.register(shutil.rmtree, _answers, True)


# What a test needs beyond Python, from the fixtures it uses (directly or through others): the
# marker lets `-m "not docker and not qemu and not ssh and not browser and not act"` select the
# tests that run anywhere.
FIXTURE_MARKERS = {
    "docker_client": "docker",
    "arm64_binfmt": "qemu",
    "counting_plugin": "qemu",
    "amd64_board": "ssh",
    "arm64_board": "ssh",
    "browser": "browser",
    "postgresql": "postgresql",
    "act": "act",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        needs = getattr(item, "fixturenames", ())
        for marker in sorted({m for f, m in FIXTURE_MARKERS.items() if f in needs}):
            item.add_marker(marker)


def git(root: Path, *arguments: str) -> None:
    """git in a test's own repository, with an identity for its commits."""
    subprocess.run(
        ["git", "-c", "user.email=ci@example.invalid", "-c", "user.name=ci", *arguments],
        cwd=root,
        check=True,
        capture_output=True,
    )


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
def counting_plugin() -> Path:
    """The instruction-counting QEMU plugin, built for the installed qemu-user (or cached)."""
    import shutil

    from harness.counting.build import PluginBuildError, build_plugin
    from harness.devices import HOST_ARCH, UNAME_MACHINE

    if shutil.which(f"qemu-{UNAME_MACHINE.get(HOST_ARCH, HOST_ARCH)}") is None:
        unavailable("qemu-user is not installed: run scripts/setup-counting.sh as root")
    try:
        return build_plugin().path
    except PluginBuildError as exc:
        unavailable(f"the counting plugin cannot be built here: {exc}")
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def digits_mlps(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The examples/digits MLP (64 -> 32 -> 10) and the same with one more hidden unit (zero
    weights: the same predictions, ~0.5% more instructions)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from harness.modelgen.onnx import mlp

    graph = onnx.load(str(ROOT / "examples" / "digits" / "models" / "digits.onnx")).graph
    init = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    w0, b0 = init["coefficient"], init["intercepts"].ravel()
    w1, b1 = init["coefficient1"], init["intercepts1"].ravel()
    folder = tmp_path_factory.mktemp("mlps")
    base = mlp(folder / "base.onnx", [w0, w1], [b0, b1])
    wide = mlp(
        folder / "wide.onnx",
        [np.hstack([w0, np.zeros((64, 1), np.float32)]), np.vstack([w1, np.zeros((1, 10))])],
        [np.append(b0, 0.0), b1],
    )
    return base, wide


@pytest.fixture(scope="session")
def llama_cpp() -> Callable[[str], Path]:
    """Fetches the llama.cpp runtime set for an arch (harness images llama-cpp; cached)."""
    from harness.images import BuildError
    from harness.images.llamacpp import fetch

    def fetched(arch: str) -> Path:
        try:
            return fetch(arch)
        except BuildError as exc:
            unavailable(f"the llama.cpp runtime set for {arch} cannot be fetched: {exc}")
        raise AssertionError("unreachable")

    return fetched


@pytest.fixture(scope="session")
def slm_models() -> Path:
    """The example's language models and data (examples/slm/build_model.py): trained and exported
    once, then cached under ~/.cache/harness/slm/<export key>. Holds models/slm-float,
    slm-int8, slm-int4, slm-random (ONNX Runtime GenAI folders), slm-f16.gguf, slm-q8_0.gguf,
    slm-q4_k_m.gguf, slm-q2_k.gguf and data/valid.txt, data/prompts.jsonl."""
    import subprocess
    import sys

    script = ROOT / "examples" / "slm" / "build_model.py"
    done = subprocess.run(
        [sys.executable, str(script), "--venv", "--cache-only"], capture_output=True, text=True
    )
    if done.returncode:
        unavailable(f"cannot build the example language models: {done.stderr[-3000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def postgresql() -> object:
    """postgresql://... of a throwaway PostgreSQL server, started once per session from Debian's
    packages (initdb and pg_ctl under /usr/lib/postgresql/*/bin) in a temporary folder,
    listening only on a Unix socket there; as root it runs as the `postgres` user the package
    creates. Stopped and removed at the end of the session."""
    import glob
    import shutil
    import tempfile

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [shutil.which("initdb")]
    if not found[-1]:
        unavailable("PostgreSQL is not installed (apt-get install postgresql)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        unavailable("psycopg is not installed (pip install -e '.[dev]')")
    bindir = Path(str(found[-1])).parent
    folder = Path(tempfile.mkdtemp(prefix="harness-pg-"))
    prefix: list[str] = []
    user = "postgres"
    if os.geteuid() == 0:  # the server refuses to run as root
        prefix = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres", "postgres")
    else:
        import getpass

        user = getpass.getuser()
    data = folder / "data"
    subprocess.run(
        [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", user, "-A", "trust",
         "--no-sync", "-E", "UTF8", "--locale", "C"],
        check=True, capture_output=True,
    )  # fmt: skip
    options = f"-c listen_addresses='' -c unix_socket_directories={folder} -c fsync=off"
    subprocess.run(
        [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l",
         str(folder / "log"), "-w", "start"],
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        subprocess.run(
            [str(bindir / "createdb"), "-h", str(folder), "-U", user, "harness"],
            check=True, capture_output=True,
        )  # fmt: skip
        yield f"postgresql://{user}@/harness?host={folder}"
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
        )  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)


def _preload_harness() -> None:
    """Import every harness module now, and the libraries harness imports lazily: pytester's
    in-process runs drop modules first imported inside a run, which would give later runs second
    copies of their classes (requests' cookie jar then breaks the docker SDK: "You can only merge
    into CookieJar")."""
    import importlib
    import pkgutil

    import docker  # noqa: F401
    import requests  # noqa: F401

    import harness

    for module in pkgutil.walk_packages(harness.__path__, "harness."):
        if not module.name.startswith(("harness.worker.__main__",)):
            importlib.import_module(module.name)


_preload_harness()
