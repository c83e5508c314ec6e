"""Real boards over SSH (`backend = "ssh"`), through the system's OpenSSH client.

Why the OpenSSH client rather than a Python SSH library: it is what the board's owner already
uses, so the profile's `host` may be an alias from ~/.ssh/config (with its HostName, Port, User,
IdentityFile, ProxyJump) and keys in an agent work; known_hosts is read the way their own `ssh`
reads it (hashed entries, @cert-authority); and harness gains no dependency. Every ssh call has
BatchMode=yes (never a password or passphrase prompt: a refused key fails at once) and
StrictHostKeyChecking=yes (an unknown host key is refused, never added).

One connection per board and session: a ControlMaster that this process owns, whose socket (in
a private host folder) carries the short commands (probe, copies, cleanup) and every worker's
session. A worker's start:

1. probe (one command): `uname -m` against the profile's arch, the board's Python version and C
   library, a private temporary folder (`mktemp -d`: mode 700), what is cached, cores, memory;
2. the runtimes: the profile's pinned wheels, downloaded on this host for the board's arch and
   Python and installed into a tree (harness.images.debootstrap.ensure_site, as the device
   images are made), pushed once into ~/.cache/harness-board/<hash of the wheel set>/ on the
   board (no pip, no network needed there);
3. the worker's modules (harness/worker, harness/runtimes) and the model and data files, as one
   tar stream into the temporary folder;
4. the worker, under harness.worker.tether (it dies with its SSH session), speaking the JSON-lines
   protocol over the session's stdin and stdout.

At close, and on any failure, one command kills what the tether recorded and removes the folder.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import tarfile
from collections.abc import Sequence
from pathlib import Path

from harness.backends.base import BackendUnavailable, Target
from harness.backends.local import ProcessChannel
from harness.backends.ssh_board import (
    BOARD_CACHE,
    CLEANUP,
    INSTALL,
    KEEP_DAYS,
    PROBE,
    PRUNE,
    check_probe,
    data_names,
    glibc_needed,
    libc_problem,
    no_space,
    parse_probe,
    site_key,
    site_tree,
    tree_bytes,
    worker_archive,
    worker_command,
)
from harness.backends.ssh_connection import (
    COMMAND_TIMEOUT_S,
    Connection,
    Destination,
    RemoteFailed,
    connection,
    diagnose,
    last_line,
)
from harness.devices import DeviceProfile


class SshChannel:
    """The worker's session: a ProcessChannel over the local ssh client, plus the board-side
    cleanup, and the connection's loss told apart from the worker's own end."""

    def __init__(self, connection: Connection, folder: str, command: str, where: str) -> None:
        self.connection = connection
        self.folder = folder
        self.where = where
        self.process = ProcessChannel([*connection.base(), command], dict(os.environ))
        self._cleaned = False

    def send(self, data: bytes) -> None:
        self.process.send(data)

    def receive_line(self, timeout: float) -> bytes | None:
        return self.process.receive_line(timeout)

    def close(self, kill: bool = False) -> None:
        try:
            self.process.close(kill)
        finally:
            self.cleanup()

    def cleanup(self) -> None:
        """Kill what is left of the worker on the board and remove its folder (once)."""
        if self._cleaned:
            return
        self._cleaned = True
        pids = shlex.quote(f"{self.folder}/pids")
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            self.connection.run(
                CLEANUP.format(pids=pids, folder=shlex.quote(self.folder)), timeout=30
            )

    def ended(self) -> str | None:
        text = self.process.ended()
        if text is None:
            return None
        if self.process.process.returncode == 255:  # ssh's own failure, not the worker's
            return (
                f"lost its SSH connection to {self.where} (ssh exited with status 255: the "
                "board went away, or the network dropped)"
            )
        return text

    def stderr_tail(self) -> str:
        return self.process.stderr_tail()


class SshBackend:
    """Backend for `backend = "ssh"` devices: real boards, figures `measured`."""

    def start(self, profile: DeviceProfile, files: Sequence[Path], threads: int) -> Target:
        destination = Destination.of(profile)
        where = f"board {profile.name} ({destination.describe()})"
        try:
            board = connection(destination)
        except BackendUnavailable as exc:
            raise BackendUnavailable(f"{where}: {exc}") from None
        probe = self._probe(board, profile, where)
        folder = probe["folder"]
        try:
            site = self._runtimes(board, profile, probe, where)
            path_map = self._copy(board, files, folder, probe, where)
            command = worker_command(profile, folder, site, threads)
            channel = SshChannel(board, folder, command, destination.describe())
        except BaseException:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                board.run(CLEANUP.format(pids="/dev/null", folder=shlex.quote(folder)), 30)
            raise
        limits = {
            "host": destination.describe(),
            "machine": probe["machine"],
            "python": probe["python"],
            "cpus": int(probe["cpus"]) if probe.get("cpus", "").isdigit() else None,
            "memory_mb": int(probe["memory_kb"]) // 1024
            if probe.get("memory_kb", "").isdigit()
            else None,
            "threads": threads,
            "folder": folder,
            "runtimes": site,
        }
        return Target(channel, fidelity="measured", limits=limits, path_map=path_map)

    def _probe(self, board: Connection, profile: DeviceProfile, where: str) -> dict[str, str]:
        script = PROBE.format(python=shlex.quote(profile.python), cache=BOARD_CACHE)
        try:
            done = board.run(script)
        except subprocess.TimeoutExpired:
            raise BackendUnavailable(
                f"{where} did not answer a probe within {COMMAND_TIMEOUT_S:.0f} s"
            ) from None
        if done.returncode == 255:
            raise BackendUnavailable(f"{where}: {diagnose(done.stderr, board.destination, {})}")
        probe = parse_probe(done.stdout)
        problem = check_probe(probe, profile, where)
        if problem:
            if "folder" in probe:
                board.run(CLEANUP.format(pids="/dev/null", folder=shlex.quote(probe["folder"])))
            raise BackendUnavailable(problem)
        return probe

    def _runtimes(
        self, board: Connection, profile: DeviceProfile, probe: dict[str, str], where: str
    ) -> str:
        """The board's folder of installed runtimes (pushed there unless cached)."""
        key, recipe = site_key(profile, probe["python"])
        remote = f"{probe['home']}/{BOARD_CACHE}/{key}"
        if key not in probe.get("cached", "").split():
            tree = site_tree(recipe)
            problem = libc_problem(probe.get("libc", ""), glibc_needed(tree), where)
            if problem:
                raise BackendUnavailable(problem)
            what = f"the runtimes ({', '.join(recipe.wheels)})"
            script = INSTALL.format(cache=BOARD_CACHE, key=key)
            self._push(board, script, [(tree, ".")], what, f"~/{BOARD_CACHE}", where)
        with contextlib.suppress(subprocess.TimeoutExpired):  # best effort: the worker runs anyway
            board.run(PRUNE.format(cache=BOARD_CACHE, key=shlex.quote(key), days=KEEP_DAYS))
        return remote

    def _copy(
        self,
        board: Connection,
        files: Sequence[Path],
        folder: str,
        probe: dict[str, str],
        where: str,
    ) -> dict[Path, str]:
        names = data_names(files)
        script = f"tar -xf - -C {shlex.quote(folder)}"
        try:
            with board.stream(script) as stdin:
                worker_archive(stdin, names)
        except RemoteFailed as exc:
            size = sum(tree_bytes(host) for host in names)
            what = "the worker and the model files"
            raise self._copy_failure(exc, what, folder, where, size) from None
        return {host: f"{folder}/{name}" for host, name in names.items()}

    def _push(
        self,
        board: Connection,
        script: str,
        trees: list[tuple[Path, str]],
        what: str,
        destination: str,
        where: str,
    ) -> None:
        size = sum(tree_bytes(tree) for tree, _ in trees)
        try:
            with board.stream(script) as stdin, tarfile.open(fileobj=stdin, mode="w|") as out:
                for tree, arcname in trees:
                    out.add(tree, arcname=arcname)
        except RemoteFailed as exc:
            raise self._copy_failure(exc, what, destination, where, size) from None

    @staticmethod
    def _copy_failure(
        exc: RemoteFailed, what: str, destination: str, where: str, size: int
    ) -> BackendUnavailable:
        if no_space(exc.stderr):
            return BackendUnavailable(
                f"{where}: no space left on the board while copying {what} "
                f"({size / 2**20:.1f} MB) to {destination}; free space there (df -h {destination})"
            )
        if exc.returncode == 255:
            reason = last_line(exc.stderr)
            return BackendUnavailable(f"{where}: lost the SSH connection while copying ({reason})")
        return BackendUnavailable(
            f"{where}: copying {what} to {destination} failed: {last_line(exc.stderr)}"
        )
