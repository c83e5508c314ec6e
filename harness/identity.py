"""Who measured: this machine's identity (CPU, cores, memory, OS, Python) and fingerprint, the
checkout's git revision, and file hashes. Ground floor: imports nothing from harness."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["content_sha256", "file_sha256", "git_revision", "machine_fingerprint", "machine_info"]


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware", "cpu model"):
                return value.strip()
    return platform.processor() or platform.machine()


def _memory_mb() -> int | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    with contextlib.suppress(ValueError, OSError, AttributeError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    return None


def _os_name() -> str:
    with contextlib.suppress(OSError):
        fields = dict(
            line.split("=", 1)
            for line in Path("/etc/os-release").read_text().splitlines()
            if "=" in line
        )
        name = fields.get("ID", "").strip('"')
        version = fields.get("VERSION_ID", "").strip('"')
        if name:
            return f"{platform.system()} {name} {version}".strip()
    return f"{platform.system()} {platform.release()}"


def machine_info() -> dict[str, Any]:
    """What identifies this machine for comparing figures: CPU model, cores, memory, OS, python.
    Not the host name: two runners of one kind are the same machine for our purpose."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_mb": _memory_mb(),
        "os": _os_name(),
        "arch": platform.machine(),
        "python": platform.python_version(),
    }


def machine_fingerprint(info: Mapping[str, Any] | None = None) -> str:
    """16 hex digits of the SHA-256 of `machine_info()` (or of `info`)."""
    text = json.dumps(dict(info if info is not None else machine_info()), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def git_revision(folder: Path) -> tuple[str | None, str | None]:
    """(commit, ref) of the checkout holding `folder`; GITHUB_SHA/GITHUB_REF when git can't say."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=folder, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        if done.returncode != 0:
            return None
        return done.stdout.strip() or None

    commit = git("rev-parse", "HEAD") or os.environ.get("GITHUB_SHA")
    ref = git("symbolic-ref", "-q", "HEAD") or os.environ.get("GITHUB_REF")
    return commit, ref


def repository_root(folder: Path) -> Path | None:
    """The top of the git checkout holding `folder` (None outside one)."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return Path(done.stdout.strip()) if done.returncode == 0 and done.stdout.strip() else None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_sha256(path: Path) -> str:
    """file_sha256, read once per process while the file is unchanged (same size and mtime):
    a session keys several caches (timing counts, board answers) by the same model and dataset,
    and a real test set is hundreds of MB."""
    stat = path.stat()
    return _sha256_of(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.cache
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(Path(path))


def model_sha256(path: Path) -> str:
    """A model's identity: its file's SHA-256, or, for a model folder (an ONNX Runtime GenAI
    language model), the hash of every file in it by relative path and content."""
    if not path.is_dir():
        return content_sha256(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path)}\0{content_sha256(file)}\0".encode())
    return digest.hexdigest()
