"""The `host` device: the worker as a plain child process of pytest."""

from __future__ import annotations

import collections
import os
import selectors
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import harness
from harness.backends.base import BackendUnavailable, Target, describe_exit
from harness.devices import HOST_ARCH, DeviceProfile
from harness.runtimes.llamacpp_set import ENV

PACKAGE_PARENT = str(Path(harness.__file__).resolve().parent.parent)


class ProcessChannel:
    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,  # a Ctrl-C for pytest must not kill the worker mid-reply
        )
        self._buffer = b""
        self._stderr: collections.deque[bytes] = collections.deque(maxlen=40)
        self._reader = threading.Thread(target=self._drain_stderr, daemon=True)
        self._reader.start()
        self._selector = selectors.DefaultSelector()
        assert self.process.stdout is not None
        self._selector.register(self.process.stdout, selectors.EVENT_READ)

    def _drain_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._stderr.append(line)

    def send(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def receive_line(self, timeout: float) -> bytes | None:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            if not self._selector.select(left):
                continue
            chunk = os.read(self.process.stdout.fileno(), 1 << 20)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def close(self, kill: bool = False) -> None:
        if self.process.poll() is None:
            if kill:
                self.process.kill()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
        self._selector.close()

    def ended(self) -> str | None:
        try:
            returncode = self.process.wait(2)
        except subprocess.TimeoutExpired:
            return None
        return describe_exit(returncode)

    def stderr_tail(self) -> str:
        self._reader.join(0.5)
        return b"".join(self._stderr).decode(errors="replace")[-4000:]


def worker_environment(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_PARENT, env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = str(threads)
    env["PYTHONHASHSEED"] = "0"
    env["ORT_DISABLE_TELEMETRY"] = "1"  # onnxruntime 1.32 otherwise starts a telemetry thread
    return env


class LocalBackend:
    def start(self, profile: DeviceProfile, files: Sequence[Path], threads: int) -> Target:
        # -P: the current folder (a checkout) is not put on the import path, so no file there can
        # stand in for numpy or a runtime inside the worker.
        command = [sys.executable, "-P", "-m", "harness.worker"]
        env = worker_environment(threads)
        from harness.images import llamacpp

        if llamacpp.needed_by(files):  # a GGUF model: the worker runs under the set's loader
            folder = llamacpp.installed(HOST_ARCH)
            if folder is None:
                raise BackendUnavailable(llamacpp.missing_message(HOST_ARCH, profile.name))
            env[ENV] = str(folder)
        return Target(ProcessChannel(command, env), fidelity="measured")
