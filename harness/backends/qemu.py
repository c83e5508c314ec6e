"""Counting mode's counted run: the worker under QEMU user-mode emulation with the
instruction-counting plugin, and the count of a model's inferences read back from it.

The worker runs under the dynamic `qemu-aarch64` / `qemu-x86_64` of Debian's qemu-user (the static
build has no -plugin), with `-plugin libinsn_count.so,outfile=...` (harness.counting.build) and
`-cpu` from the profile. It needs an interpreter, numpy and a runtime of the target arch: the
device image's trees from harness.images (the debootstrap rootfs plus the wheels tree that becomes
/opt/site), cached under $HARNESS_CACHE/images. For the host's own arch with no image trees it
falls back to the host's interpreter (sys.executable), labelled so in the results.

No root, no chroot: QEMU's `-L PREFIX` makes the emulated process look every absolute path up
under PREFIX first. PREFIX is a per-worker folder of symlinks to the rootfs' top-level folders,
plus what the container would have mounted:

    /proc/cpuinfo            the profile's cpuinfo (onnxruntime crashes under QEMU reading the
                             host's; the rest of /proc falls through to QEMU's own emulation)
    /opt/site                the target-arch wheels (symlink)
    /opt/harness/harness     a copy of the worker's modules (WORKER_SOURCES; no __pycache__)
    /data/<i>/file<.ext>     the files the worker reads (symlinks; the names do not depend on the
                             host's names, so the worker's requests are the same bytes for any
                             model with that suffix)
    /opt/llama.cpp           for a GGUF model, the llama.cpp runtime set (harness.images.llamacpp;
                             symlink). Its libraries need a newer glibc than the image's, so QEMU
                             runs the set's loader with the interpreter as its program, as the
                             worker re-executes itself in a container: a re-exec under QEMU would
                             leave the plugin behind.

Determinism (the same instruction count on every run; each item below was seen to change counts):

- `setarch -R`: no address randomisation.
- A fixed, minimal environment: PYTHONHASHSEED=0, one thread for OpenMP/OpenBLAS, the caller's
  intra-op threads (1 in counting mode), ORT_DISABLE_TELEMETRY=1 (onnxruntime 1.32 otherwise
  starts a telemetry thread that writes a SQLite database under ~/.cache while the model runs).
- Working directory `/`, PYTHONSAFEPATH=1, only the worker's modules copied in, the data files
  under fixed names: Python lists the folders it imports from, and any difference in a listing,
  a path or a request changes the heap layout, and with it the counts.
- A virtual clock (vclock.c, LD_PRELOAD into QEMU, which serves the guest's clock system calls
  from the host C library): each clock read advances 1 µs. onnxruntime runs extra code in Run()
  once every 2 s of wall time, which landed inside a counted loop more often the busier the
  machine was.
- Bytecode caches that never change: PYTHONDONTWRITEBYTECODE=1 (whether a module was compiled
  or loaded from its .pyc changes the heap); the host-Python fallback always compiles.
- The counting worker (harness.worker.counting) reports no times, pid or memory figures.
"""

from __future__ import annotations

import functools
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import harness
from harness.backends.base import (
    Backend,
    BackendUnavailable,
    Target,
    WorkerClient,
    greet,
    load,
)
from harness.backends.local import ProcessChannel
from harness.counting import CountingError, CountResult
from harness.counting.build import PluginBuildError, build_plugin, installed_qemu, qemu_banner
from harness.devices import HOST_ARCH, UNAME_MACHINE, DeviceProfile
from harness.runtimes import llamacpp_set

HARNESS_DIR = Path(harness.__file__).resolve().parent
# Where the profile names no `cpu`: QEMU's "max" (every feature its TCG emulates; x86_64's
# default qemu64 lacks SSE4.2, which numpy 2 needs).
DEFAULT_CPU = "max"
DATA_ROOT = "/data"
HARNESS_GUEST = "/opt/harness"
SITE_GUEST = "/opt/site"
HOME_GUEST = "/home/worker"
GUEST_PYTHON = "/usr/bin/python3"
# Rootfs folders not linked into the prefix: the host's (or QEMU's) are the right ones, or the
# prefix provides its own.
NOT_LINKED = frozenset({"proc", "sys", "dev", "run", "tmp", "opt", "home", "root", "data"})
PLUGIN_MODES = ("callback", "inline")
# What the worker imports (files, and folders whose .py files it may import).
WORKER_SOURCES = ("__init__.py", "worker", "runtimes")
WORKER_MODULE = "harness.worker.counting"  # harness.worker, with run-to-run-stable replies
MODEL_ID = "model"  # the same id in every counting worker: requests are identical bytes


@dataclass(frozen=True)
class Interpreter:
    """What runs the worker: the device image's trees, or the host's own Python."""

    kind: str  # "rootfs" | "host"
    python: Path  # the interpreter binary on the host
    rootfs: Path | None = None
    site: Path | None = None
    guest_python: str | None = None  # argv[0] seen by the worker (rootfs: /usr/bin/python3.X)

    def describe(self) -> str:
        if self.kind == "rootfs" and self.rootfs is not None:
            return f"rootfs {self.rootfs.name}"
        return f"host {self.python}"


def image_trees(profile: DeviceProfile) -> tuple[Path, Path]:
    """The debootstrap rootfs and the /opt/site tree harness.images builds for `profile`."""
    from harness.images.common import cache_root
    from harness.images.recipe import SITE_DIR, recipe_for

    recipe = recipe_for(profile)
    rootfs = cache_root() / "rootfs" / recipe.rootfs_key()
    site = cache_root() / "site" / recipe.site_key() / SITE_DIR.strip("/")
    return rootfs, site


def _resolve_inside(root: Path, guest: str) -> str | None:
    """`guest` (an absolute path inside `root`) with its symlinks followed inside `root`."""
    current = guest
    for _ in range(16):
        host = root / current.lstrip("/")
        if not host.is_symlink():
            return current if host.exists() else None
        target = os.readlink(host)
        current = target if target.startswith("/") else str(Path(current).parent / target)
        current = os.path.normpath(current)
    return None


def find_interpreter(profile: DeviceProfile, prefer: str = "auto") -> Interpreter:
    """The image trees where they are built; the host's Python for the host's arch otherwise.

    prefer: "auto", "rootfs" (the image trees or BackendUnavailable) or "host" (the host's
    Python; only for the host's arch)."""
    arch = profile.target_arch
    if prefer not in ("auto", "rootfs", "host"):
        raise ValueError(f"prefer={prefer!r} is not auto, rootfs or host")
    if prefer != "host":
        rootfs, site = image_trees(profile)
        guest = _resolve_inside(rootfs, GUEST_PYTHON)
        complete = (site / ".harness-complete").exists()
        if guest is not None and complete:
            return Interpreter("rootfs", rootfs / guest.lstrip("/"), rootfs, site, guest)
        if prefer == "rootfs" or arch != HOST_ARCH:
            missing = rootfs if guest is None else site
            raise BackendUnavailable(
                f"{profile.name} ({arch}) needs the device image's trees to count instructions "
                f"and {missing} is not built; run as root: harness counting prepare "
                f"--device {profile.name} --packages"
            )
    if arch != HOST_ARCH:
        raise BackendUnavailable(f"the host's Python cannot run {profile.name} ({arch})")
    return Interpreter("host", Path(sys.executable))


@functools.lru_cache(maxsize=4)
def qemu_binary(arch: str) -> str:
    machine = UNAME_MACHINE.get(arch)  # qemu-<uname -m of the guest>
    if machine is None:
        raise BackendUnavailable(f"counting supports arm64 and amd64, not {arch}")
    path = shutil.which(f"qemu-{machine}")
    if path is None:
        raise BackendUnavailable(
            f"qemu-{machine} (package qemu-user) is not installed; run "
            "`harness counting prepare --packages --device DEVICE` (root, or with sudo)"
        )
    return path


@functools.lru_cache(maxsize=4)
def qemu_version(binary: str) -> str:
    """E.g. '7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)'."""
    banner = qemu_banner(binary)
    return banner.split(" version ", 1)[-1] if banner else "unknown"


def guest_path(index: int, path: Path) -> str:
    """Where the worker sees the `index`th file: only the suffix of the host's name is kept."""
    return f"{DATA_ROOT}/{index}/file{path.suffix}"


def copy_worker_sources(destination: Path) -> None:
    """The harness modules the counting worker imports, and no others: Python lists the folders
    it imports from, so any file added to the package would change the heap, and the counts."""
    for entry in WORKER_SOURCES:
        source = HARNESS_DIR / entry
        if source.is_dir():
            for module in sorted(source.glob("*.py")):
                target = destination / entry / module.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(module, target)
        else:
            (destination / entry).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, destination / entry)


def llama_cpp_set(profile: DeviceProfile, files: Sequence[Path]) -> Path | None:
    """The llama.cpp runtime set of `profile`'s arch where `files` hold a GGUF model (None
    otherwise); BackendUnavailable, saying how to fetch it, where it is missing."""
    from harness.images import llamacpp

    if not llamacpp.needed_by(files):
        return None
    folder = llamacpp.installed(profile.target_arch)
    if folder is None:
        raise BackendUnavailable(llamacpp.missing_message(profile.target_arch, profile.name))
    return folder


def build_prefix(
    root: Path,
    interpreter: Interpreter,
    files: Sequence[Path],
    cpuinfo: Path | None,
    llama_cpp: Path | None = None,
) -> dict[Path, str]:
    """Fill `root` as the -L prefix (module docstring); returns host file -> path in the guest."""
    root.mkdir(parents=True)
    if interpreter.rootfs is not None:
        for entry in sorted(interpreter.rootfs.iterdir()):
            if entry.name not in NOT_LINKED:
                (root / entry.name).symlink_to(entry)
    (root / "proc").mkdir()
    if cpuinfo is not None:
        shutil.copyfile(cpuinfo, root / "proc" / "cpuinfo")
    opt = root / "opt"
    opt.mkdir()
    if interpreter.site is not None:
        (opt / "site").symlink_to(interpreter.site)
    if llama_cpp is not None:
        (root / llamacpp_set.CONTAINER_PATH.lstrip("/")).symlink_to(llama_cpp)
    copy_worker_sources(root / HARNESS_GUEST.lstrip("/") / "harness")
    (root / HOME_GUEST.lstrip("/")).mkdir(parents=True)
    path_map: dict[Path, str] = {}
    for index, file in enumerate(files):
        host = Path(file).resolve()
        if host in path_map:
            continue
        path_map[host] = guest_path(index, host)
        link = root / path_map[host].lstrip("/")
        link.parent.mkdir(parents=True)
        link.symlink_to(host)
    return path_map


def worker_environment(
    threads: int, interpreter: Interpreter, llama_cpp: bool = False
) -> dict[str, str]:
    """The worker's whole environment: fixed, so that nothing about the host's changes counts.
    `llama_cpp`: the worker runs under the llama.cpp set's loader already (no re-exec)."""
    pythonpath = [HARNESS_GUEST] + ([SITE_GUEST] if interpreter.site is not None else [])
    extra: dict[str, str] = {}
    if llama_cpp:
        extra[llamacpp_set.ENV] = extra[llamacpp_set.UNDER_LOADER] = llamacpp_set.CONTAINER_PATH
    if interpreter.kind == "host":
        # The host's bytecode caches come and go (any host process may write one), and whether a
        # module was compiled or loaded from its .pyc changes the counts: always compile. (The
        # image trees' caches never change: nothing writes there.)
        extra["PYTHONPYCACHEPREFIX"] = "/nonexistent/pycache"
    return {
        **extra,
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": HOME_GUEST,
        "PYTHONPATH": ":".join(pythonpath),
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "PYTHONSAFEPATH": "1",
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "ORT_DISABLE_TELEMETRY": "1",
    }


def plugin_option(plugin: Path, outfile: Path, **options: object) -> str:
    """QEMU's `-plugin` value: the library, its outfile and the plugin's own options (a path in
    it cannot hold a ',', which separates them)."""
    paths = [plugin, outfile, *(v for v in options.values() if isinstance(v, Path))]
    for path in paths:
        if "," in str(path):
            raise BackendUnavailable(f"{path}: QEMU's -plugin option cannot take a ',' in a path")
    return ",".join([str(plugin), f"outfile={outfile}", *(f"{k}={v}" for k, v in options.items())])


def qemu_command(
    qemu: str,
    cpu: str,
    prefix: Path,
    plugin_argument: str,
    interpreter: Interpreter,
    loader: Sequence[str] = (),
) -> list[str]:
    """The command line; it runs with worker_environment() plus LD_PRELOAD=<libvclock.so>.
    `loader`: a dynamic loader and its options (guest paths) that run the interpreter."""
    command = [
        "env", "-C", "/",  # the emulated process's working directory is the host's
        "setarch", platform.machine(), "-R",
        qemu, "-cpu", cpu, "-L", str(prefix),
        "-U", "LD_PRELOAD",  # the virtual clock is for QEMU, not for the emulated program
        "-plugin", plugin_argument,
    ]  # fmt: skip
    if loader:
        # QEMU runs the loader (through the prefix, as the interpreter below), and the loader
        # opens the interpreter by its guest path, which QEMU looks up under -L.
        command += ["-0", loader[0], f"{prefix}{loader[0]}", *loader[1:]]
    if interpreter.kind == "rootfs":
        assert interpreter.guest_python is not None
        # Run it through the prefix's symlinks with the guest's argv[0]: Python then finds its
        # prefix at /usr (looked up under -L) and no host path reaches the worker.
        if loader:
            command.append(interpreter.guest_python)
        else:
            command += ["-0", interpreter.guest_python, f"{prefix}{interpreter.guest_python}"]
    else:
        command.append(str(interpreter.python))
    return [*command, "-s", "-m", WORKER_MODULE]


@dataclass(frozen=True)
class EmulatedWorker:
    """A worker process started under qemu-user with a plugin (start_under_plugin)."""

    channel: QemuChannel
    path_map: dict[Path, str]  # host file -> its path in the guest
    outfile: Path  # where the plugin writes
    arch: str
    cpu: str  # QEMU's CPU model
    qemu_version: str
    interpreter: Interpreter


def start_under_plugin(
    profile: DeviceProfile,
    files: Sequence[Path],
    threads: int,
    *,
    plugin: Path,
    vclock: Path,
    options: dict[str, object],
    cpu: str | None = None,
    prefer: str = "auto",
    scratch: str = "harness-qemu-",
    outname: str = "counts.txt",
) -> EmulatedWorker:
    """Start the worker for `profile`'s arch under dynamic qemu-user with `plugin` (counting's
    insn_count or the timing model's), as both modes need it to count the same on every run
    (module docstring): the -L prefix holding `files`, the fixed environment, setarch -R, the
    virtual clock `vclock`. `options`: the plugin's own options. Its scratch folder
    (named `scratch`..., a fixed length: the binary's path reaches the guest's stack) goes when
    the channel closes."""
    arch = profile.target_arch
    qemu = qemu_binary(arch)
    if shutil.which("setarch") is None:
        raise BackendUnavailable("setarch (util-linux) is missing: it turns off ASLR")
    if profile.cpuinfo is None and arch != HOST_ARCH:
        raise BackendUnavailable(
            f"{profile.name} is emulated ({arch}) but its profile ({profile.source}) names "
            "no cpuinfo file; onnxruntime crashes under QEMU reading the host's "
            '/proc/cpuinfo: add cpuinfo = "cpuinfo/<model>.txt"'
        )
    interpreter = find_interpreter(profile, prefer)
    llama_cpp = llama_cpp_set(profile, files)
    qemu_cpu = cpu or profile.cpu or DEFAULT_CPU
    workdir = Path(tempfile.mkdtemp(prefix=scratch))
    try:
        prefix = workdir / "root"
        path_map = build_prefix(prefix, interpreter, files, profile.cpuinfo, llama_cpp)
        outfile = workdir / outname
        argument = plugin_option(plugin, outfile, **options)
        loader = (
            llamacpp_set.loader_command(llama_cpp, llamacpp_set.CONTAINER_PATH)
            if llama_cpp is not None
            else []
        )
        command = qemu_command(qemu, qemu_cpu, prefix, argument, interpreter, loader)
        env = {
            **worker_environment(threads, interpreter, llama_cpp is not None),
            "LD_PRELOAD": str(vclock),
        }
        channel = QemuChannel(command, env, workdir)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return EmulatedWorker(
        channel, path_map, outfile, arch, qemu_cpu, qemu_version(qemu), interpreter
    )


@dataclass(frozen=True)
class PluginCount:
    """One line the plugin appended at an end marker."""

    instructions: int
    pair: int
    vcpus: int  # vCPUs (guest threads) that ran between the markers; 0: unknown (inline mode)
    mode: str


def parse_counts(text: str) -> list[PluginCount]:
    counts: list[PluginCount] = []
    for line in text.splitlines():
        if not line.startswith("count "):
            continue
        fields = dict(item.split("=", 1) for item in line.split()[1:] if "=" in item)
        counts.append(
            PluginCount(
                instructions=int(fields["insns"]),
                pair=int(fields.get("pair", "0")),
                vcpus=int(fields.get("vcpus", "0")),
                mode=fields.get("mode", "?"),
            )
        )
    return counts


class QemuChannel(ProcessChannel):
    """The worker process under QEMU; its scratch folder goes when the channel closes."""

    def __init__(self, command: list[str], env: dict[str, str], workdir: Path) -> None:
        self.workdir = workdir
        super().__init__(command, env)

    def close(self, kill: bool = False) -> None:
        try:
            super().close(kill)
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass
class CountingTarget(Target):
    """A Target whose worker runs under the counting plugin; `read_counts()` gives the plugin's
    lines so far (one per `bench(count=True)`)."""

    counts_file: Path = field(default_factory=Path)
    qemu_version: str = ""
    cpu: str = ""
    arch: str = ""
    plugin_mode: str = "callback"
    interpreter: str = ""

    def read_counts(self) -> list[PluginCount]:
        try:
            return parse_counts(self.counts_file.read_text())
        except FileNotFoundError:
            return []


class QemuBackend:
    """Starts workers under qemu-user with the instruction-counting plugin (counting mode)."""

    def __init__(self, mode: str = "callback", prefer: str = "auto") -> None:
        if mode not in PLUGIN_MODES:
            raise ValueError(f"mode {mode!r} is not one of {', '.join(PLUGIN_MODES)}")
        self.mode = mode
        self.prefer = prefer

    def start(self, profile: DeviceProfile, files: Sequence[Path], threads: int) -> CountingTarget:
        try:
            installed_qemu()
            built = build_plugin()
        except PluginBuildError as exc:
            raise BackendUnavailable(f"the counting plugin cannot be built: {exc}") from exc
        worker = start_under_plugin(
            profile,
            files,
            threads,
            plugin=built.path,
            vclock=built.vclock,
            options={"mode": self.mode},
            prefer=self.prefer,
        )
        limits = {
            "threads": threads,
            "qemu": worker.qemu_version,
            "qemu_cpu": worker.cpu,
            "interpreter": worker.interpreter.describe(),
            "plugin": str(built.path),
            "clock": "virtual",
            "plugin_mode": self.mode,
            "cpus_device": profile.cpus or None,
        }
        return CountingTarget(
            worker.channel,
            fidelity="emulated",  # the wall-clock samples from this worker; counts: "counted"
            limits=limits,
            path_map=worker.path_map,
            counts_file=worker.outfile,
            qemu_version=worker.qemu_version,
            cpu=worker.cpu,
            arch=worker.arch,
            plugin_mode=self.mode,
            interpreter=worker.interpreter.describe(),
        )


# -- the counted run ----------------------------------------------------------------------------
def counted_bench(
    client: WorkerClient,
    model_id: str,
    samples: int,
    warmup: int = 20,
    timeout: float = 600.0,
) -> CountResult:
    """`bench(count=True)` on a worker started by QemuBackend, and the plugin's count for it."""
    target = client.target
    if not isinstance(target, CountingTarget):
        raise TypeError(
            f"the worker on {client.device} does not run under the counting plugin: start it "
            "with harness.backends.qemu.QemuBackend"
        )
    if samples < 1:
        raise ValueError("samples must be at least 1")
    before = len(target.read_counts())
    reply = client.request(
        "bench", timeout, model_id=model_id, samples=samples, warmup=warmup, count=True
    )
    counts = target.read_counts()[before:]
    if len(counts) != 1:
        tail = target.channel.stderr_tail().strip()
        raise CountingError(
            f"the counting plugin on {client.device} reported {len(counts)} counts for one "
            f"counted loop (expected 1): the worker's marker system calls did not reach it"
            + (f"; worker output:\n{tail}" if tail else "")
        )
    count = counts[0]
    return CountResult(
        instructions_per_inference=count.instructions / samples,
        total=count.instructions,
        samples=samples,
        warmup=warmup,
        device=client.device,
        arch=target.arch,
        cpu=target.cpu,
        qemu_version=target.qemu_version,
        plugin_mode=count.mode,
        vcpus=count.vcpus,
        interpreter=target.interpreter,
        samples_ns=tuple(int(t) for t in reply.get("samples_ns", [])),
    )


def count_instructions(
    profile: DeviceProfile,
    model_path: Path,
    dataset: Path | None = None,
    samples: int | Callable[[CountResult], tuple[int, int]] = 200,
    warmup: int = 20,
    *,
    output: str | None = None,
    input_shapes: dict[str, list[int]] | None = None,
    input_values: dict[str, Any] | None = None,
    timeout: float = 600.0,
    backend: Backend | None = None,
) -> CountResult:
    """Instructions per inference of `model_path` on `profile`'s arch and CPU model, counted in a
    fresh worker under QEMU (one intra-op thread). Raises BackendUnavailable where counting is not
    set up here (the reason says what to run), WorkerError/WorkerFailure as any worker does.
    `samples` may be a function that gives (samples, warmup) from a first counted loop of one
    inference after one warm-up (a probe, deterministic like every count): the count is sized
    from the model's own instructions, and the same model always counts as many inferences.

    Counts depend on everything the worker did before (heap layout): compare models counted in
    fresh workers that made the same requests, as this does."""
    model_path = Path(model_path)
    data = Path(dataset) if dataset is not None else None
    files: Sequence[Path] = [model_path] + ([data] if data is not None else [])
    chosen = backend if backend is not None else QemuBackend()
    client = WorkerClient(chosen.start(profile, files, threads=1), profile.name)
    try:
        greet(client, [model_path], timeout)
        load(
            client,
            MODEL_ID,
            model_path,
            data,
            timeout,
            threads=1,
            output=output,
            input_shapes=input_shapes,
            input_values=input_values,
            rows=[0] if data is not None else None,  # bench runs the first sample: hold only it
        )
        if callable(samples):
            samples, warmup = samples(counted_bench(client, MODEL_ID, 1, 1, timeout))
        return counted_bench(client, MODEL_ID, samples, warmup, timeout)
    finally:
        client.close()
