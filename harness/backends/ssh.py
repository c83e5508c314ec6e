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

import atexit
import contextlib
import ctypes
import dataclasses
import io
import os
import re
import shlex
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import harness
from harness.backends.base import BackendUnavailable, Target
from harness.backends.local import ProcessChannel
from harness.devices import UNAME_MACHINE, DeviceProfile

HARNESS_DIR = Path(harness.__file__).resolve().parent
PR_SET_PDEATHSIG = 1
WORKER_SOURCES = ("__init__.py", "worker", "runtimes")  # what the worker and the tether import
BOARD_CACHE = ".cache/harness-board"  # under the board user's home: the installed runtimes
KEEP_DAYS = 30  # runtimes no session used for this long are removed from the board
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
            f"{where} refused the login ({_last_line(stderr)}); harness never types a password "
            f"(BatchMode): authorise {key} on the board, e.g. ssh-copy-id -i {key} -p {port} "
            f"{config.get('user', destination.user or 'USER')}@{host}"
        )
    if "Could not resolve hostname" in stderr:
        reason = _last_line(stderr)
        return f"cannot resolve {destination.host}: fix `host` in the profile ({reason})"
    return f"cannot connect to {where}: {_last_line(stderr) or 'ssh gave no reason'}"


def _last_line(text: str) -> str:
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
        _RemoteFailed with its stderr when it fails."""
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
            raise _RemoteFailed(process.returncode, stderr)

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


class _RemoteFailed(Exception):
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


# -- the board side ----------------------------------------------------------------------------
PROBE = r"""
echo "machine=$(uname -m)"
echo "home=$HOME"
if command -v {python} >/dev/null 2>&1; then
  {python} -c 'import sys, platform
print("python=%d.%d" % sys.version_info[:2])
print("libc=%s %s" % platform.libc_ver())' || echo python=broken
else
  echo python=missing
fi
folder=$(mktemp -d "${{TMPDIR:-/tmp}}/harness.XXXXXXXX" 2>&1) && echo "folder=$folder" \
  || echo "nofolder=$folder"
echo "cached=$(ls "$HOME/{cache}" 2>/dev/null | tr '\n' ' ')"
echo "cpus=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN)"
echo "memory_kb=$(awk '/^MemTotal:/ {{print $2}}' /proc/meminfo)"
"""
CLEANUP = "if [ -f {pids} ]; then kill -KILL -- $(cat {pids}) 2>/dev/null; fi; rm -rf {folder}"
INSTALL = """set -e
mkdir -p "$HOME/{cache}"
[ -f "$HOME/{cache}/{key}/.complete" ] && exec cat >/dev/null
partial=$(mktemp -d "$HOME/{cache}/{key}.XXXXXX")
trap 'rm -rf "$partial"' EXIT
tar -xf - -C "$partial"
touch "$partial/.complete"
[ -e "$HOME/{cache}/{key}" ] || mv "$partial" "$HOME/{cache}/{key}"
"""
# Marks this session's runtimes used, and removes the others no session used for {days} days
# (other harness versions' or Pythons'; the marker is .used, else .complete for runtimes
# installed before the marker existed), and the partial installs a killed push left (a day old).
PRUNE = """cd "$HOME/{cache}" 2>/dev/null || exit 0
touch {key}/.used
for found in */; do
  entry=${{found%/}}
  [ "$entry" = {key} ] && continue
  if [ -f "$entry/.complete" ]; then
    mark="$entry/.complete"; [ -f "$entry/.used" ] && mark="$entry/.used"
    [ -n "$(find "$mark" -mtime +{days} 2>/dev/null)" ] && rm -rf "$entry"
  else
    [ -n "$(find "$entry" -maxdepth 0 -mtime +1 2>/dev/null)" ] && rm -rf "$entry"
  fi
done
exit 0
"""


def parse_probe(stdout: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            found[key.strip()] = value.strip()
    return found


def check_probe(probe: dict[str, str], profile: DeviceProfile, where: str) -> str | None:
    """Why this board cannot run `profile`'s worker (one line with the fix), or None."""
    source = profile.source or profile.name
    machine = probe.get("machine", "")
    wanted = UNAME_MACHINE.get(profile.target_arch, profile.target_arch)
    if machine != wanted:
        return (
            f"{where} is {machine or 'of unknown arch'} (uname -m) but {source} says arch = "
            f'"{profile.target_arch}" ({wanted}); fix arch in the profile, or its host'
        )
    python = probe.get("python", "missing")
    if python == "missing":
        return (
            f"{where} has no `{profile.python}` on its PATH: install Python 3 on the board "
            f'(apt-get install python3), or set python = "/path/to/python3" in {source}'
        )
    if not re.fullmatch(r"3\.\d+", python):
        return f"{where}: `{profile.python}` does not run there ({python}); fix the board's Python"
    if "folder" not in probe:
        return (
            f"{where}: cannot make a temporary folder ({probe.get('nofolder', '?')}); "
            "free space in the board's /tmp (or its TMPDIR)"
        )
    return None


def glibc_needed(tree: Path) -> tuple[int, int]:
    """The newest glibc that the wheels installed in `tree` were built for (their manylinux
    tags): a board with an older glibc cannot load them."""
    legacy = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
    needed = (2, 0)
    for wheel in tree.glob("*.dist-info/WHEEL"):
        for line in wheel.read_text(errors="replace").splitlines():
            if not line.startswith("Tag:"):
                continue
            platform = line.rsplit("-", 1)[-1]
            match = re.match(r"manylinux_(\d+)_(\d+)_", platform)
            found = (int(match[1]), int(match[2])) if match else legacy.get(platform.split("_")[0])
            if found is not None:
                needed = max(needed, found)
    return needed


def libc_problem(libc: str, needed: tuple[int, int], where: str) -> str | None:
    """Why the board's C library (`platform.libc_ver()`: "glibc 2.36") cannot load wheels built
    for glibc `needed`, or None."""
    name, _, version = libc.partition(" ")
    wanted = ".".join(map(str, needed))
    if name != "glibc":
        return (
            f"{where} has no glibc ({libc or 'unknown C library'}), and the runtimes' wheels "
            f"(manylinux) need glibc {wanted} or newer: use a glibc-based OS on the board"
        )
    have = tuple(int(part) for part in re.findall(r"\d+", version)[:2])
    if have < needed:
        return (
            f"{where} has glibc {version}, and the runtimes' wheels need {wanted} or newer: "
            "upgrade the board's OS, or pin older runtimes in the profile "
            '(runtimes = ["onnxruntime==X.Y.Z"])'
        )
    return None


def no_space(stderr: str) -> bool:
    return "No space left on device" in stderr or "Disk quota exceeded" in stderr


def site_key(profile: DeviceProfile, python: str) -> tuple[str, Any]:
    """The board cache's key for `profile`'s runtimes under the board's Python, and the recipe."""
    from harness.images.recipe import recipe_for

    recipe = dataclasses.replace(recipe_for(profile), python=python)
    return recipe.site_key(), recipe


def site_tree(recipe: Any) -> Path:
    """The runtimes installed on this host for the board's platform (cached; the first time
    downloads the wheels from the package index)."""
    from rich.console import Console

    from harness.images.common import BuildError, Progress
    from harness.images.debootstrap import ensure_site
    from harness.images.recipe import SITE_DIR

    quiet = Progress(Console(file=io.StringIO()))
    try:
        return ensure_site(recipe, quiet) / SITE_DIR.strip("/")
    except BuildError as exc:
        raise BackendUnavailable(f"cannot get the runtime wheels for the board: {exc}") from exc


def _tree_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def worker_archive(out: IO[bytes], files: dict[Path, str]) -> None:
    """A tar stream of the worker's modules (under pkg/) and `files` (host path -> name in the
    archive)."""
    with tarfile.open(fileobj=out, mode="w|") as archive:
        for name in WORKER_SOURCES:
            source = HARNESS_DIR / name
            sources = [source] if source.is_file() else sorted(source.rglob("*.py"))
            for path in sources:
                arcname = f"pkg/harness/{path.relative_to(HARNESS_DIR)}"
                archive.add(path, arcname=arcname, recursive=False)
        for host, name in files.items():
            archive.add(host, arcname=name)


def data_names(files: Sequence[Path]) -> dict[Path, str]:
    """Host file -> its path under the board's folder. Files of one host folder share one folder
    there (ONNX external data must sit beside its model)."""
    names: dict[Path, str] = {}
    folders: dict[Path, int] = {}
    for file in files:
        host = Path(file).resolve()
        if host not in names:
            index = folders.setdefault(host.parent, len(folders))
            names[host] = f"data/{index}/{host.name}"
    return names


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
        except _RemoteFailed as exc:
            size = sum(_tree_bytes(host) for host in names)
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
        size = sum(_tree_bytes(tree) for tree, _ in trees)
        try:
            with board.stream(script) as stdin, tarfile.open(fileobj=stdin, mode="w|") as out:
                for tree, arcname in trees:
                    out.add(tree, arcname=arcname)
        except _RemoteFailed as exc:
            raise self._copy_failure(exc, what, destination, where, size) from None

    @staticmethod
    def _copy_failure(
        exc: _RemoteFailed, what: str, destination: str, where: str, size: int
    ) -> BackendUnavailable:
        if no_space(exc.stderr):
            return BackendUnavailable(
                f"{where}: no space left on the board while copying {what} "
                f"({size / 2**20:.1f} MB) to {destination}; free space there (df -h {destination})"
            )
        if exc.returncode == 255:
            reason = _last_line(exc.stderr)
            return BackendUnavailable(f"{where}: lost the SSH connection while copying ({reason})")
        return BackendUnavailable(
            f"{where}: copying {what} to {destination} failed: {_last_line(exc.stderr)}"
        )


def worker_command(profile: DeviceProfile, folder: str, site: str, threads: int) -> str:
    """The remote command line that starts the tethered worker in `folder`."""
    quoted = shlex.quote(folder)
    python = shlex.quote(profile.python)
    environment = {
        "PYTHONPATH": f"{folder}/pkg:{site}",
        "OMP_NUM_THREADS": str(threads),
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "ORT_DISABLE_TELEMETRY": "1",  # onnxruntime 1.32 otherwise starts a telemetry thread
    }
    assignments = " ".join(shlex.quote(f"{key}={value}") for key, value in environment.items())
    worker = f"{python} -s -m harness.worker"
    return (
        f"cd {quoted} && exec env {assignments} {python} -s -m harness.worker.tether "
        f"{quoted} -- {worker}"
    )
