"""One SSH connection per board and session, through the system's OpenSSH client
(harness.backends.ssh says why that client): a ControlMaster this process owns, whose socket (in
a private host folder) carries the short commands and every worker's session; its failures
diagnosed in words (harness.backends.ssh_connection.diagnose)."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from harness.backends.base import BackendUnavailable
from harness.devices import DeviceProfile

PR_SET_PDEATHSIG = 1
CONNECT_TIMEOUT_S = 15
COMMAND_TIMEOUT_S = 120.0  # a probe or a cleanup (copies: a dead link ends them, ServerAlive*)
SSH_OPTIONS = (
    "-T",  # no pseudo-terminal: the protocol's bytes pass untouched
    "-o", "BatchMode=yes",
    "-o", "StrictHostKeyChecking=yes",
    "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}",
    "-o", "ServerAliveInterval=5",  # a board that vanishes is noticed within ~15 s
    "-o", "ServerAliveCountMax=3",
)  # fmt: skip


@dataclass(frozen=True)
class Destination:
    """How to reach a board: the profile's host, port, user, key and known_hosts."""

    host: str
    port: int | None = None
    user: str = ""
    identity_file: Path | None = None
    known_hosts: Path | None = None

    @classmethod
    def of(cls, profile: DeviceProfile) -> Destination:
        return cls(
            profile.host, profile.port, profile.user, profile.identity_file, profile.known_hosts
        )

    def options(self) -> list[str]:
        options = list(SSH_OPTIONS)
        if self.port is not None:
            options += ["-p", str(self.port)]
        if self.user:
            options += ["-l", self.user]
        if self.identity_file is not None:
            options += ["-i", str(self.identity_file), "-o", "IdentitiesOnly=yes"]
        if self.known_hosts is not None:
            options += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        return options

    def describe(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port is not None else ""
        return f"{user}{self.host}{port}"


def resolved(destination: Destination) -> dict[str, str]:
    """What ssh makes of the destination after ~/.ssh/config (`ssh -G`): hostname, port,
    userknownhostsfile, ... ({} where ssh cannot say)."""
    try:
        done = subprocess.run(
            ["ssh", "-G", *destination.options(), destination.host],
            capture_output=True,
            text=True,
            timeout=10,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    found: dict[str, str] = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition(" ")
        found.setdefault(key, value)
    return found


def diagnose(stderr: str, destination: Destination, config: dict[str, str]) -> str:
    """One line on why ssh could not log in to the board, with the fix (pure: tested on
    OpenSSH's own messages)."""
    host = config.get("hostname", destination.host)
    port = config.get("port", str(destination.port or 22))
    known = str(destination.known_hosts or "~/.ssh/known_hosts")
    where = destination.describe()
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr:
        return (
            f"the host key of {where} is not the one in {known}: the board was reinstalled, or "
            "someone is in between. Check the new key's fingerprint on the board (ssh-keygen -lf "
            "/etc/ssh/ssh_host_ed25519_key.pub); if it is the board's, run: ssh-keygen -f "
            f"{known} -R '[{host}]:{port}', then add the new key as for an unknown host"
        )
    if "Host key verification failed" in stderr or "host key is known for" in stderr:
        return (
            f"the host key of {where} is not in {known}, and unknown hosts are refused. Check "
            "the board's key fingerprint (on the board: ssh-keygen -lf "
            f"/etc/ssh/ssh_host_ed25519_key.pub), then add it: ssh-keyscan -p {port} {host} "
            f">> {known}"
        )
    if "Permission denied" in stderr:
        key = destination.identity_file or "your key"
        return (
            f"{where} refused the login ({last_line(stderr)}); harness never types a password "
            f"(BatchMode): authorise {key} on the board, e.g. ssh-copy-id -i {key} -p {port} "
            f"{config.get('user', destination.user or 'USER')}@{host}"
        )
    if "Could not resolve hostname" in stderr:
        reason = last_line(stderr)
        return f"cannot resolve {destination.host}: fix `host` in the profile ({reason})"
    return f"cannot connect to {where}: {last_line(stderr) or 'ssh gave no reason'}"


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _end_with_parent() -> None:
    """In the master's child process: SIGTERM when pytest ends, however it ends (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Connection:
    """The session's one SSH connection to a board: a ControlMaster we own."""

    _folder: Path | None = None

    def __init__(self, destination: Destination) -> None:
        self.destination = destination
        if Connection._folder is None:
            Connection._folder = Path(tempfile.mkdtemp(prefix="harness-ssh-"))  # mode 700
        self.socket = Connection._folder / f"{len(_CONNECTIONS)}.sock"
        self.log = self.socket.with_suffix(".log")
        self._master: subprocess.Popen[bytes] | None = None

    def base(self) -> list[str]:
        """ssh, its options and the destination; append the remote command."""
        options = [*self.destination.options(), "-o", f"ControlPath={self.socket}"]
        return ["ssh", *options, "-o", "ControlMaster=no", self.destination.host]

    def alive(self) -> bool:
        return self._master is not None and self._master.poll() is None and self.socket.exists()

    def open(self) -> None:
        """Log in (unless the master is up), or BackendUnavailable with the reason and fix."""
        if self.alive():
            return
        self.close()
        if shutil.which("ssh") is None:
            raise BackendUnavailable(
                "the OpenSSH client (ssh) is not installed on this machine: apt-get install "
                "openssh-client (or your system's package of it)"
            )
        with open(self.log, "wb") as log:
            self._master = subprocess.Popen(
                [
                    "ssh",
                    *self.destination.options(),
                    "-o",
                    f"ControlPath={self.socket}",
                    "-o",
                    "ControlMaster=yes",
                    "-o",
                    "ControlPersist=no",
                    "-N",
                    self.destination.host,
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,  # a Ctrl-C for pytest must not drop the board mid-reply
                preexec_fn=_end_with_parent,  # a killed pytest leaves no connection open
            )
        # The socket appears once the login succeeded; a refusal ends the process.
        deadline = time.monotonic() + CONNECT_TIMEOUT_S + 60
        while not self.socket.exists():
            if self._master.poll() is not None or time.monotonic() > deadline:
                self.close()
                stderr = self.log.read_text(errors="replace")
                raise BackendUnavailable(
                    diagnose(stderr, self.destination, resolved(self.destination))
                )
            time.sleep(0.05)

    def run(
        self, script: str, timeout: float = COMMAND_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        """`sh -c script` on the board; its output as text."""
        return subprocess.run(
            [*self.base(), "sh -c " + shlex.quote(script)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
        )

    @contextlib.contextmanager
    def stream(self, script: str) -> Iterator[IO[bytes]]:
        """`sh -c script` on the board, reading what is written to the yielded stream; raises
        RemoteFailed with its stderr when it fails."""
        # stderr to a file, not a pipe: a tar failing on every file of a full disk writes more
        # than a pipe holds, and would stop reading while we write
        with tempfile.TemporaryFile() as errors:
            process = subprocess.Popen(
                [*self.base(), "sh -c " + shlex.quote(script)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=errors,
            )
            assert process.stdin is not None
            broken = False
            try:
                yield process.stdin
            except BrokenPipeError:
                broken = True  # the far side stopped reading: its stderr says why
            finally:
                with contextlib.suppress(BrokenPipeError):
                    process.stdin.close()
                process.wait()
                errors.seek(0)
                stderr = errors.read().decode(errors="replace")
        if process.returncode or broken:
            raise RemoteFailed(process.returncode, stderr)

    def close(self) -> None:
        if self._master is not None and self._master.poll() is None:
            self._master.terminate()
            try:
                self._master.wait(5)
            except subprocess.TimeoutExpired:
                self._master.kill()
                self._master.wait()
        self._master = None
        self.socket.unlink(missing_ok=True)


class RemoteFailed(Exception):
    def __init__(self, returncode: int, stderr: str) -> None:
        super().__init__(stderr)
        self.returncode = returncode
        self.stderr = stderr


_CONNECTIONS: dict[Destination, Connection] = {}


def connection(destination: Destination) -> Connection:
    """The session's connection to `destination`, logged in."""
    if destination not in _CONNECTIONS:
        _CONNECTIONS[destination] = Connection(destination)
    found = _CONNECTIONS[destination]
    found.open()
    return found


@atexit.register
def close_all() -> None:
    for found in _CONNECTIONS.values():
        found.close()
    _CONNECTIONS.clear()
    if Connection._folder is not None:
        shutil.rmtree(Connection._folder, ignore_errors=True)
        Connection._folder = None
