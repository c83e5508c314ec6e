"""The backend Protocol and the host side of the worker protocol.

A backend starts a worker inside the device (a process, a container, an emulator) and hands back a
Target: a byte channel to the worker plus the mapping of host paths to paths the worker sees.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from harness.devices import DeviceProfile
from harness.worker.protocol import decode, encode


class WorkerFailure(Exception):
    """The worker could not answer: it crashed, hung, or could not be started."""


class WorkerCrashed(WorkerFailure):
    pass


class WorkerTimeout(WorkerFailure):
    pass


class WorkerError(Exception):
    """The worker answered with an error (model or data problem); it is still usable."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class BackendUnavailable(Exception):
    """The device cannot be realised here (no engine, no image, no GPU): the reason says why."""

    def __init__(self, reason: str, *, skip: bool = False) -> None:
        super().__init__(reason)
        self.skip = skip  # True: skip the items (e.g. no GPU here) instead of failing them


class Channel(Protocol):
    def send(self, data: bytes) -> None: ...

    def receive_line(self, timeout: float) -> bytes | None:
        """One line; None at end of stream; raises TimeoutError after `timeout` seconds."""

    def close(self, kill: bool = False) -> None: ...

    def ended(self) -> str | None:
        """How the worker ended ('killed by SIGSEGV', 'OOM-killed at 512 MB'), None if alive."""

    def stderr_tail(self) -> str: ...


@dataclass
class Target:
    channel: Channel
    fidelity: str  # measured | emulated
    limits: dict[str, Any] = field(default_factory=dict)  # container limits actually applied
    path_map: dict[Path, str] = field(default_factory=dict)  # host file -> path in the target

    def remote(self, path: Path) -> str:
        return self.path_map.get(path.resolve(), str(path.resolve()))

    def local(self, text: str) -> str:
        """`text` (a worker's message) with the paths the target sees replaced by the user's:
        `/data/1/file.npz` means nothing to whoever reads the failure."""
        for host, guest in sorted(self.path_map.items(), key=lambda item: -len(item[1])):
            if guest != str(host):
                text = text.replace(guest, str(host))
        return text


class Backend(Protocol):
    def start(self, profile: DeviceProfile, files: Sequence[Path], threads: int) -> Target:
        """Start one worker for `profile`, with `files` readable inside it."""


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    if returncode > 128 and returncode - 128 in signal.Signals._value2member_map_:
        return f"killed by {signal.Signals(returncode - 128).name}"
    return f"exited with status {returncode}"


class WorkerClient:
    """Requests and replies over a Target's channel, with a timeout on every request."""

    def __init__(self, target: Target, device: str) -> None:
        self.target = target
        self.device = device
        self._next_id = 0

    def request(self, op: str, timeout: float, **arguments: Any) -> dict[str, Any]:
        channel = self.target.channel
        self._next_id += 1
        started = time.monotonic()
        try:
            channel.send(encode({"id": self._next_id, "op": op, **arguments}))
            line = channel.receive_line(timeout)
        except TimeoutError:
            channel.close(kill=True)
            raise WorkerTimeout(
                f"worker on {self.device} gave no answer to '{op}' within {timeout:.0f} s and was "
                "killed (raise timeout_s in the harness config if the model is this slow)"
            ) from None
        except (BrokenPipeError, ConnectionError, OSError):
            line = None
        if line is None:
            channel.close(kill=True)
            ended = channel.ended() or "ended"
            tail = channel.stderr_tail().strip()
            raise WorkerCrashed(
                f"worker on {self.device} {ended} during '{op}' after "
                f"{time.monotonic() - started:.1f} s"
                + (f"; its last output:\n{tail}" if tail else "")
            )
        reply = decode(line)
        if not reply.get("ok"):
            raise WorkerError(str(reply.get("kind")), self.target.local(str(reply.get("error"))))
        result: dict[str, Any] = reply["result"]
        return result

    def close(self) -> None:
        try:
            self.target.channel.send(encode({"op": "shutdown"}))
            self.target.channel.receive_line(5.0)
        except (OSError, TimeoutError):
            pass
        self.target.channel.close(kill=True)


# -- the start-and-load exchange: every worker (a pair's, a counting one) is greeted and given its
# model by these two, so the requests cannot drift apart.


def greet(client: WorkerClient, models: Sequence[Path], timeout: float) -> dict[str, Any]:
    """`hello` for the formats of `models`: the worker imports their runtimes and says what it
    is (versions, machine, the empty worker's memory)."""
    from harness.runtimes import format_of

    formats = sorted({format_of(str(path)) for path in models})
    return client.request("hello", timeout, formats=formats)


def load(
    client: WorkerClient,
    model_id: str,
    path: Path,
    dataset: Path | None,
    timeout: float,
    *,
    threads: int,
    **arguments: Any,
) -> dict[str, Any]:
    """`load` the model at `path` (with its dataset) as `model_id`, paths as the target sees
    them; `arguments`: output, input_shapes, input_values, accelerator, config_file."""
    target = client.target
    return client.request(
        "load",
        timeout,
        model_id=model_id,
        path=target.remote(path),
        dataset=target.remote(dataset) if dataset is not None else None,
        threads=threads,
        **arguments,
    )
