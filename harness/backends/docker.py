"""Devices realised as Docker containers (docker SDK), emulated with QEMU where the arch differs.

One container per worker. The profile's cpus and memory become container limits (NanoCpus,
Memory = MemorySwap: no extra swap), so a model that needs more memory than the board has is
OOM-killed, and `ended()` says so. For emulated devices QEMU_CPU picks the CPU model and the
profile's cpuinfo file is bind-mounted over /proc/cpuinfo (onnxruntime hangs under QEMU reading
the host's). The harness package is bind-mounted read-only at /opt/harness/harness; the image
(harness.images) holds only Python, numpy and the runtimes under /opt/site.
"""

from __future__ import annotations

import collections
import contextlib
import select
import shutil
import socket
import struct
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import harness
from harness.backends.base import BackendUnavailable, Target, describe_exit
from harness.devices import HOST_ARCH, DeviceProfile
from harness.runtimes.llamacpp_set import CONTAINER_PATH
from harness.runtimes.llamacpp_set import ENV as LLAMA_CPP_ENV

HARNESS_DIR = Path(harness.__file__).resolve().parent
HARNESS_MOUNT = "/opt/harness/harness"
DATA_ROOT = "/data"
WORKER_COMMAND = ["python3", "-m", "harness.worker"]
BINFMT = Path("/proc/sys/fs/binfmt_misc")
BINFMT_HANDLER = {"arm64": "qemu-aarch64", "amd64": "qemu-x86_64"}
LABEL = "harness"
LLAMA_CPP_MOUNT = CONTAINER_PATH  # the llama.cpp runtime set (harness.images.llamacpp)
STDOUT, STDERR = 1, 2


class FrameDemuxer:
    """Splits Docker's multiplexed attach stream (tty=False) into stdout and stderr.

    Each frame: 1 byte stream (0 stdin, 1 stdout, 2 stderr), 3 zero bytes, 4 bytes big-endian
    payload size, then the payload. Frames may arrive split across reads; partial ones wait.
    """

    HEADER = struct.Struct(">BxxxL")

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buffer += data
        frames: list[tuple[int, bytes]] = []
        while len(self._buffer) >= self.HEADER.size:
            stream, size = self.HEADER.unpack_from(self._buffer)
            end = self.HEADER.size + size
            if len(self._buffer) < end:
                break
            frames.append((stream, bytes(self._buffer[self.HEADER.size : end])))
            del self._buffer[:end]
        return frames

    @property
    def pending(self) -> int:
        return len(self._buffer)


def _raw_socket(attached: Any) -> socket.socket:
    """The socket under what `attach_socket` returns (a SocketIO over a unix socket, or a
    socket itself for TLS connections)."""
    sock = getattr(attached, "_sock", attached)
    if not isinstance(sock, socket.socket):
        raise BackendUnavailable(
            f"the docker SDK gave a {type(sock).__name__} for the attach stream, not a socket "
            "(an ssh:// or npipe DOCKER_HOST is not supported: use a unix socket or tcp)"
        )
    return sock


class ContainerChannel:
    """The worker's stdin/stdout/stderr through the container's attach stream."""

    def __init__(self, container: Any, attached: Any, profile: DeviceProfile) -> None:
        self.container = container
        self.profile = profile
        self._attached = attached  # keeps the HTTP response (and so the socket) alive
        self._sock = _raw_socket(attached)
        self._demux = FrameDemuxer()
        self._stdout = bytearray()
        self._stderr: collections.deque[bytes] = collections.deque(maxlen=60)
        self._stderr_partial = b""
        self._eof = False
        self._closed = False
        self._killed = False
        self._shutdown_sent = False
        self._final_state: dict[str, Any] | None = None

    # -- reading ---------------------------------------------------------------------------
    def _take(self, frames: list[tuple[int, bytes]]) -> None:
        for stream, payload in frames:
            if stream == STDOUT:
                self._stdout += payload
            elif stream == STDERR:
                lines = (self._stderr_partial + payload).split(b"\n")
                self._stderr_partial = lines.pop()
                self._stderr.extend(line + b"\n" for line in lines)
                if len(self._stderr_partial) > 8192:
                    self._stderr.append(self._stderr_partial)
                    self._stderr_partial = b""

    def _read_some(self, timeout: float) -> bool:
        """Read what arrives within `timeout`; False when nothing did (or at end of stream)."""
        if self._eof or self._closed:
            return False
        readable, _, _ = select.select([self._sock], [], [], max(timeout, 0.0))
        if not readable:
            return False
        try:
            chunk = self._sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            chunk = b""
        if not chunk:
            self._eof = True
            return False
        self._take(self._demux.feed(chunk))
        return True

    def receive_line(self, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        scanned = 0  # a large reply arrives in many chunks: search each byte for b"\n" once
        while (end := self._stdout.find(b"\n", scanned)) < 0:
            scanned = len(self._stdout)
            if self._eof or self._closed:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self._read_some(left)
        line = bytes(self._stdout[:end])
        del self._stdout[: end + 1]
        return line

    def _drain(self, seconds: float) -> None:
        """Collect what is left in the stream (a dying worker's last stderr lines)."""
        deadline = time.monotonic() + seconds
        while not self._eof and not self._closed and time.monotonic() < deadline:
            self._read_some(deadline - time.monotonic())

    # -- writing ---------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        if self._closed:
            raise BrokenPipeError("the container's stdin is closed")
        # WorkerClient.close sends this before close(kill=True): the worker is then exiting by
        # itself, and under QEMU on a busy machine that can take seconds.
        self._shutdown_sent = self._shutdown_sent or b'"op":"shutdown"' in data
        self._sock.sendall(data)

    # -- ending ----------------------------------------------------------------------------
    def close(self, kill: bool = False) -> None:
        """Stop the worker (killing it if asked or if it does not end), keep how it ended, and
        remove the container."""
        import docker.errors

        if self._closed:
            return
        try:
            if not kill:
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_WR)  # EOF on the worker's stdin
            # After end of stream the worker is exiting by itself: let it, so that its exit
            # status (or the OOM kill) is what gets recorded, not our SIGKILL. A worker that was
            # told to shut down gets up to 15 s to close its stream, any other half a second.
            if kill and not self._eof:
                self._drain(15.0 if self._shutdown_sent else 0.5)
            grace = 5.0 if (self._eof or not kill) else 0.0
            self._wait_exit(grace)
            if self._state().get("Running"):
                self._killed = True
                with contextlib.suppress(docker.errors.APIError):
                    self.container.kill()
                self._wait_exit(10.0)
            self._drain(1.0)
            self._final_state = self._state()
        finally:
            self._closed = True
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                # the SDK's SocketIO holds a reference: the descriptor closes when both have
                self._attached.close()
                self._sock.close()
            with contextlib.suppress(docker.errors.APIError):
                self.container.remove(force=True)

    def _state(self) -> dict[str, Any]:
        import docker.errors

        try:
            self.container.reload()
        except docker.errors.APIError:
            return self._final_state or {}
        state: dict[str, Any] = self.container.attrs.get("State", {})
        return state

    def _wait_exit(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self._state().get("Running") and time.monotonic() < deadline:
            self._read_some(min(0.2, max(deadline - time.monotonic(), 0.0)))
            if self._eof:
                time.sleep(0.05)

    def ended(self) -> str | None:
        state = self._final_state if self._final_state is not None else self._state()
        if not state or state.get("Running"):
            return None
        return describe_state(state, self.profile, self._killed)

    def stderr_tail(self) -> str:
        if not self._closed:
            self._drain(0.5)
        text = b"".join(self._stderr) + self._stderr_partial
        return text.decode(errors="replace")[-4000:]


def describe_state(state: dict[str, Any], profile: DeviceProfile, killed_by_us: bool) -> str:
    """How a container ended, from `docker inspect`'s State."""
    if state.get("OOMKilled"):
        return f"OOM-killed at {profile.memory_mb} MB ({profile.name})"
    code = state.get("ExitCode")
    text = describe_exit(int(code) if code is not None else None)
    if killed_by_us and code == 137:
        return "was killed by the harness (it did not end by itself)"
    if state.get("Error"):
        text += f" ({state['Error']})"
    return text


# -- the container's configuration (pure: unit-tested without an engine) --------------------
def container_path(index: int, path: Path) -> str:
    return f"{DATA_ROOT}/{index}/{path.name}"


def container_config(
    profile: DeviceProfile,
    files: Sequence[Path],
    threads: int,
    image: str,
    host_cpus: int | None = None,
    llama_cpp: Path | None = None,
) -> tuple[dict[str, Any], dict[Path, str]]:
    """Keyword arguments for containers.create, and host path -> path inside the container.

    A device with more cores than the engine's machine gets all the machine has (Docker refuses
    a CPU quota above it); Target.limits then shows the cpus actually applied. `llama_cpp`, the
    llama.cpp runtime set for a GGUF model (harness.images.llamacpp), is mounted read-only."""
    from docker.types import DeviceRequest, LogConfig, Mount

    environment = {
        "OMP_NUM_THREADS": str(threads),
        "PYTHONHASHSEED": "0",
        "PYTHONPATH": f"{Path(HARNESS_MOUNT).parent}:/opt/site",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "ORT_DISABLE_TELEMETRY": "1",  # onnxruntime 1.32 otherwise starts a telemetry thread
    }
    if profile.emulated and profile.cpu:
        environment["QEMU_CPU"] = profile.cpu  # empty QEMU_CPU is an error: never set it empty
    mounts = [Mount(HARNESS_MOUNT, str(HARNESS_DIR), type="bind", read_only=True)]
    if profile.cpuinfo is not None:
        mounts.append(Mount("/proc/cpuinfo", str(profile.cpuinfo), type="bind", read_only=True))
    if llama_cpp is not None:
        mounts.append(Mount(LLAMA_CPP_MOUNT, str(llama_cpp), type="bind", read_only=True))
        environment[LLAMA_CPP_ENV] = LLAMA_CPP_MOUNT
    path_map: dict[Path, str] = {}
    # Files of one host folder share one container folder: ONNX external data must sit beside
    # its model, as on the host.
    folders: dict[Path, int] = {}
    for file in files:
        host = Path(file).resolve()
        if host in path_map:
            continue
        index = folders.setdefault(host.parent, len(folders))
        path_map[host] = container_path(index, host)
        mounts.append(Mount(path_map[host], str(host), type="bind", read_only=True))
    config: dict[str, Any] = {
        "image": image,
        "command": list(WORKER_COMMAND),
        "stdin_open": True,
        "tty": False,
        # detach=False makes the SDK set StdinOnce: the worker's stdin closes when our attach
        # stream does, so a pytest that dies without closing its workers leaves no container
        # running forever (only stopped ones, label harness=1).
        "detach": False,
        "environment": environment,
        "mounts": mounts,
        "labels": {LABEL: "1", f"{LABEL}.device": profile.name},
        "network_mode": "none",  # the worker needs no network: nothing leaves the machine
        "working_dir": "/",
        "platform": profile.platform,
        # The worker's replies travel over the attach stream; a log driver would copy them to
        # disk for nothing.
        "log_config": LogConfig(type=LogConfig.types.NONE),
    }
    if profile.cpus:
        cpus = min(profile.cpus, host_cpus) if host_cpus else profile.cpus
        config["nano_cpus"] = int(cpus * 1_000_000_000)
    if profile.memory_mb:
        config["mem_limit"] = f"{profile.memory_mb}m"
        config["memswap_limit"] = f"{profile.memory_mb}m"  # equal: no swap beyond the memory
    if profile.accelerator == "cuda":
        config["device_requests"] = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    return config, path_map


# -- checks that say why a device cannot be realised here -----------------------------------
_CLIENT: Any = None


def docker_client() -> Any:
    """A docker SDK client that answers (cached), or BackendUnavailable."""
    global _CLIENT
    if _CLIENT is not None:
        return _CLIENT
    import docker

    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:  # DockerException, requests and socket errors
        raise BackendUnavailable(
            f"no Docker engine answers ({exc}); start dockerd or run scripts/setup-docker.sh"
        ) from exc
    _CLIENT = client
    return client


def binfmt_problem(arch: str, root: Path = BINFMT) -> str | None:
    """Why containers of `arch` cannot run on this host through binfmt_misc, or None."""
    handler = BINFMT_HANDLER.get(arch, f"qemu-{arch}")
    fix = (
        "run scripts/setup-docker.sh as root (or: apt-get install qemu-user-static "
        f"binfmt-support && update-binfmts --enable {handler})"
    )
    if not (root / "status").exists():
        return f"binfmt_misc is not mounted at {root}, so {arch} binaries cannot run; {fix}"
    entry = root / handler
    if not entry.exists():
        return f"no {handler} binfmt_misc handler is registered; {fix}"
    text = entry.read_text()
    if not text.startswith("enabled"):
        return f"the {handler} binfmt_misc handler is disabled; {fix}"
    flags = next(
        (line.split(":", 1)[1] for line in text.splitlines() if line.startswith("flags")), ""
    )
    if "F" not in flags:
        return (
            f"the {handler} binfmt_misc handler lacks the F flag, so containers cannot find the "
            f"emulator; {fix}"
        )
    return None


def gpu_problem(client: Any, profile: DeviceProfile) -> str | None:
    """Why `profile`'s GPU cannot be given to a container here, or None."""
    if profile.emulated:
        return (
            f"{profile.name} needs an NVIDIA GPU on a {profile.target_arch} host; QEMU cannot "
            f"emulate CUDA on this {HOST_ARCH} machine"
        )
    if not Path("/dev/nvidiactl").exists() and shutil.which("nvidia-smi") is None:
        return f"{profile.name}: no NVIDIA GPU on this machine (no /dev/nvidiactl, no nvidia-smi)"
    try:
        runtimes = client.info().get("Runtimes") or {}
    except Exception:  # noqa: BLE001 - an engine that cannot say: treat as no runtime
        runtimes = {}
    hooks = ("nvidia-container-runtime-hook", "nvidia-container-cli", "nvidia-container-runtime")
    if "nvidia" not in runtimes and not any(shutil.which(hook) for hook in hooks):
        return (
            f"{profile.name}: Docker has no NVIDIA runtime; install nvidia-container-toolkit "
            "and run `nvidia-ctk runtime configure --runtime=docker`"
        )
    return None


class DockerBackend:
    """Backend for `backend = "docker"` devices."""

    def __init__(self, client: Any = None) -> None:
        self._client = client

    def start(self, profile: DeviceProfile, files: Sequence[Path], threads: int) -> Target:
        import docker.errors

        from harness.images import image_exists, image_tag

        client = self._client if self._client is not None else docker_client()
        if profile.accelerator != "none":
            problem = gpu_problem(client, profile)
            if problem:
                raise BackendUnavailable(problem, skip=True)
        if profile.emulated:
            problem = binfmt_problem(profile.target_arch)
            if problem:
                raise BackendUnavailable(f"{profile.name} is emulated: {problem}")
            if profile.cpuinfo is None:
                raise BackendUnavailable(
                    f"{profile.name} is emulated ({profile.target_arch}) but its profile "
                    f"({profile.source}) names no cpuinfo file; onnxruntime hangs under QEMU "
                    'reading the host\'s /proc/cpuinfo: add cpuinfo = "cpuinfo/<model>.txt"'
                )
            if profile.target_arch == "arm64" and not profile.cpu:
                # Measured: under QEMU 7.2's default `max` CPU the int8 TFLite digits model
                # scored 0.2444 instead of 0.9733 (float and ONNX were right).
                raise BackendUnavailable(
                    f"{profile.name} is an emulated arm64 board but its profile "
                    f"({profile.source}) names no cpu; QEMU's default `max` CPU gave wrong int8 "
                    'results here: add the board\'s core, e.g. cpu = "cortex-a72"'
                )
        tag = image_tag(profile)
        if not image_exists(client, profile):
            raise BackendUnavailable(
                f"device image {tag} for {profile.name} is not built; run: "
                f"harness images build --device {profile.name}"
            )
        try:
            host_cpus = int(client.info().get("NCPU") or 0) or None
        except Exception:  # noqa: BLE001 - unknown: let Docker judge the quota
            host_cpus = None
        llama_cpp = None
        from harness.images import llamacpp

        if llamacpp.needed_by(files):  # a GGUF model: the llama.cpp runtime set, mounted
            llama_cpp = llamacpp.installed(profile.target_arch)
            if llama_cpp is None:
                raise BackendUnavailable(
                    llamacpp.missing_message(profile.target_arch, profile.name)
                )
        config, path_map = container_config(profile, files, threads, tag, host_cpus, llama_cpp)
        container = None
        try:
            container = client.containers.create(**config)
            attached = container.attach_socket(
                params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
            )
            channel = ContainerChannel(container, attached, profile)
            container.start()
            container.reload()
        except docker.errors.APIError as exc:
            if container is not None:
                with contextlib.suppress(docker.errors.APIError):
                    container.remove(force=True)
            raise BackendUnavailable(
                f"cannot start a container for {profile.name} ({tag}): {exc.explanation or exc}"
            ) from exc
        host = container.attrs.get("HostConfig", {})
        memory = int(host.get("Memory") or 0)
        swap = int(host.get("MemorySwap") or 0)
        limits = {
            "cpus": (host.get("NanoCpus") or 0) / 1e9 or None,
            "cpus_device": profile.cpus or None,  # more than "cpus" where the host has fewer
            "memory_mb": memory // 2**20 or None,
            "memswap_mb": swap // 2**20 if swap > 0 else None,
            "qemu_cpu": config["environment"].get("QEMU_CPU"),
            "threads": threads,
            "image": tag,
            "platform": profile.platform,
            "container_id": container.id[:12],
        }
        return Target(channel, fidelity=profile.fidelity, limits=limits, path_map=path_map)


def remove_leftovers(client: Any) -> int:
    """Remove stopped containers that a killed harness left behind (label harness=1; a worker's
    container stops by itself when its pytest dies). Running ones may belong to another session
    and are left alone. Returns how many were removed."""
    count = 0
    filters = {"label": f"{LABEL}=1", "status": "exited"}
    for container in client.containers.list(all=True, filters=filters):
        container.remove(force=True)
        count += 1
    return count
