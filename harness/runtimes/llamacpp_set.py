"""The llama.cpp runtime set as programs use it (standard library only: the worker runs this
before it imports anything else, and the examples' model builders without harness's host side).

HARNESS_LLAMA_CPP names the set's folder (harness.images.llamacpp made it; a container sees it at
/opt/llama.cpp). Its libraries need a newer glibc than the device image's, so the worker process
re-executes itself as `<set loader> --library-path <set libs> <this python> <its arguments>`
(glibc is backward compatible: the image's Python and numpy run under the newer one).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ENV = "HARNESS_LLAMA_CPP"  # the runtime set's folder, as the worker sees it
UNDER_LOADER = "HARNESS_LLAMA_CPP_LOADER"  # set once the worker runs under the set's loader
CONTAINER_PATH = "/opt/llama.cpp"  # where a device container sees the set (docker backend)


class SetError(Exception):
    """The runtime set is missing or incomplete; the message says how to fetch it."""


def manifest(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / "manifest.json"
    try:
        document: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SetError(
            f"the llama.cpp runtime set at {folder} is incomplete ({exc}); fetch it again: "
            "harness images llama-cpp"
        ) from None
    return document


def loader_command(folder: str | Path, seen_as: str | None = None) -> list[str]:
    """The set's loader and its library path: put a program and its arguments after it.
    `seen_as`: where the program that runs it sees the set (an emulator's prefix), if not at
    `folder`."""
    document = manifest(folder)
    where = Path(seen_as or folder)
    libraries = ":".join(str(where / p) for p in document["library_path"])
    return [str(where / document["loader"]), "--library-path", libraries]


def reexec_under_loader() -> None:
    """Re-run this Python under the set's loader and libraries, once, when HARNESS_LLAMA_CPP
    names a set (the worker of a GGUF model); keeps the interpreter's own arguments. An
    incomplete set is left for the model's load to report."""
    folder = os.environ.get(ENV)
    if not folder or os.environ.get(UNDER_LOADER) == folder:
        return
    try:
        command = loader_command(folder)
    except SetError:
        return
    os.environ[UNDER_LOADER] = folder
    arguments = list(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))[1:]
    os.execv(command[0], [*command, sys.executable, *arguments])


def tool_command(folder: str | Path, tool: str) -> list[str]:
    """The command line that runs one of the set's programs (llama-quantize, llama-bench) on
    this host, through the set's loader."""
    document = manifest(folder)
    return [*loader_command(folder), str(Path(folder) / document["tools"][tool])]


def tool_environment(folder: str | Path) -> dict[str, str]:
    """The environment a tool needs: its CPU backend named (the package's compiled-in backend
    folder is /usr/lib/<triplet>/ggml/backends0, not the set's; the worker instead lets ggml
    choose the best variant from the set's folder)."""
    document = manifest(folder)
    backends = Path(folder) / document["backends"]
    names = sorted(p.name for p in backends.glob("libggml-cpu-*.so"))
    preferred = ("haswell", "x64") if document["arch"] == "amd64" else ("armv8.0",)
    best = next((n for part in preferred for n in names if part in n), names[0] if names else "")
    if not best:
        raise SetError(f"no CPU backend in {backends}; fetch the set again")
    return {**os.environ, "GGML_BACKEND_PATH": str(backends / best)}


def quantize(folder: str | Path, source: Path, target: Path, kind: str, threads: int = 1) -> Path:
    """`llama-quantize SOURCE TARGET KIND` (Q8_0, Q4_K_M, Q2_K...) with the set's tool."""
    command = [*tool_command(folder, "llama-quantize"), str(source), str(target), kind,
               str(threads)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=tool_environment(folder))
    if done.returncode or not target.is_file():
        raise SetError(f"llama-quantize {kind} of {source} failed:\n{done.stderr[-2000:]}")
    return target
