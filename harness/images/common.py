"""What the build strategies share: the cache folder, logged subprocesses, progress, errors."""

from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.status import Status


class BuildError(Exception):
    """An image could not be built; the message names the step, the log and its last lines."""


def harness_cache(kind: str) -> Path:
    """$HARNESS_CACHE/<kind>, default ~/.cache/harness/<kind> (images, counting)."""
    base = os.environ.get("HARNESS_CACHE")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "harness"
    return root / kind


def cache_root() -> Path:
    """$HARNESS_CACHE/images, default ~/.cache/harness/images."""
    return harness_cache("images")


@contextlib.contextmanager
def locked(name: str, kind: str = "images") -> Iterator[None]:
    """An exclusive lock under a cache folder: parallel builds of one image (or plugin) wait for
    each other (pytest-xdist workers all asking for the same image, two terminals)."""
    folder = harness_cache(kind) / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name.replace('/', '_').replace(':', '_')}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def tail(path: Path, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as handle:
            return "".join(collections.deque(handle, maxlen=lines))
    except OSError:
        return ""


class Progress:
    """One status line per build step (spinner, elapsed time, the step's latest output line),
    then a ✓/✗ line with the step's duration. Durations are kept in `timings`."""

    def __init__(self, console: Console | None) -> None:
        self.console = console or Console(stderr=True)
        self.timings: dict[str, float] = {}
        self._status: Status | None = None
        self._step = ""
        self._started = 0.0

    def note(self, text: str) -> None:
        if self._status is not None:
            elapsed = time.monotonic() - self._started
            line = escape(text.strip()[:90])
            self._status.update(f"[bold]{escape(self._step)}[/] {elapsed:5.0f} s  [dim]{line}[/]")

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[Progress]:
        self._step, self._started = name, time.monotonic()
        ok = False
        with self.console.status(f"[bold]{escape(name)}[/]") as status:
            self._status = status
            try:
                yield self
                ok = True
            finally:
                self._status = None
                elapsed = time.monotonic() - self._started
                self.timings[name] = elapsed
                mark = "[green]✓[/]" if ok else "[red]✗[/]"
                self.console.print(f"{mark} {escape(name)} ({elapsed:.1f} s)")

    def print(self, text: str) -> None:
        self.console.print(text)


def run_logged(
    command: Sequence[str],
    log: Path,
    what: str,
    on_line: Callable[[str], None] | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> None:
    """Run a program, its output appended to `log` line by line; raise BuildError on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as sink:
        sink.write(f"$ {' '.join(command)}\n")
        sink.flush()
        try:
            process = subprocess.Popen(
                list(command),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=cwd,
                text=True,
                errors="replace",
            )
        except OSError as exc:
            raise BuildError(f"{what}: cannot run {command[0]}: {exc}") from exc
        assert process.stdout is not None
        for line in process.stdout:
            sink.write(line)
            if on_line is not None:
                on_line(line)
        returncode = process.wait()
    if returncode != 0:
        raise BuildError(
            f"{what} failed (exit status {returncode}); full log: {log}\nlast lines:\n{tail(log)}"
        )
