"""Device profiles: TOML files, the built-in ones (the repository's device-matrix/ folder) plus
the user's own.

A user profile with a built-in's name overrides it. Each file's stem is the device name.
"""

from __future__ import annotations

import platform
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, check_keys, expect_type

# The built-in profiles: the wheel ships the repository's device-matrix/ folder as
# harness/device_matrix/ (pyproject.toml's force-include); a source checkout (an editable
# install) has it beside the package.
_PACKAGED = Path(__file__).with_name("device_matrix")
BUILTIN_DIR = _PACKAGED if _PACKAGED.is_dir() else Path(__file__).parent.parent / "device-matrix"
# The one map between the two names of each arch: Debian's and Docker's (amd64, arm64) and the
# kernel's `uname -m`, which QEMU (qemu-x86_64, qemu-aarch64) and the wheel tags also use.
UNAME_MACHINE = {"amd64": "x86_64", "arm64": "aarch64"}
_MACHINE = platform.machine().lower()
HOST_ARCH = next((a for a, m in UNAME_MACHINE.items() if _MACHINE in (a, m)), _MACHINE)
ACCELERATORS = ("none", "cuda")


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    backend: str  # local | docker | ssh
    arch: str  # amd64 | arm64 | native
    cpus: int  # 0: all of the host's
    threads: int  # intra-op threads the runtime is given
    memory_mb: int | None  # container memory limit; None: unlimited
    cpu: str = ""  # QEMU CPU model for emulated devices
    accelerator: str = "none"
    cpuinfo: Path | None = None  # shown as /proc/cpuinfo inside the target
    image: str = "debian-bookworm"  # image recipe
    runtimes: tuple[str, ...] = ("onnxruntime", "ai-edge-litert")
    emulates: str = ""  # a real board: the built-in (emulated) profile it is the counterpart of
    timing_model: Path | None = None  # a calibrated timing-model CPU file (harness calibrate)
    # backend = "ssh": how to reach the board (harness.backends.ssh)
    host: str = ""  # a host name, an address, or an alias from ~/.ssh/config
    port: int | None = None  # None: ssh's (22, or the alias's Port)
    user: str = ""  # "": ssh's (the alias's User, or yours)
    identity_file: Path | None = None  # None: ssh's keys (the alias's, ~/.ssh/id_*, the agent)
    known_hosts: Path | None = None  # None: ~/.ssh/known_hosts
    python: str = "python3"  # the board's interpreter
    source: Path | None = None

    @property
    def target_arch(self) -> str:
        return HOST_ARCH if self.arch == "native" else self.arch

    @property
    def emulated(self) -> bool:
        """Run under QEMU here; a board reached over SSH is the real thing, whatever its arch."""
        return self.backend != "ssh" and self.target_arch != HOST_ARCH

    @property
    def fidelity(self) -> str:
        return "emulated" if self.emulated else "measured"

    @property
    def platform(self) -> str:
        return f"linux/{self.target_arch}"

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "backend": self.backend,
            "arch": self.target_arch,
            "machine": UNAME_MACHINE.get(self.target_arch, self.target_arch),
            "cpu": self.cpu,
            "cpus": self.cpus,
            "threads": self.threads,
            "memory_mb": self.memory_mb,
            "accelerator": self.accelerator,
            "fidelity": self.fidelity,
            "image": self.image,
            "runtimes": list(self.runtimes),
            "emulates": self.emulates,
            "timing_model": str(self.timing_model) if self.timing_model else None,
        }


_FIELDS = [
    "description",
    "backend",
    "arch",
    "cpu",
    "cpus",
    "threads",
    "memory",
    "accelerator",
    "cpuinfo",
    "image",
    "runtimes",
    "emulates",
    "timing_model",
]
SSH_FIELDS = ["host", "port", "user", "identity_file", "known_hosts", "python"]
BACKEND_NAMES = ("local", "docker", "ssh")


def parse_memory(text: str | int, where: str) -> int | None:
    """'4g' / '512m' / 512 (MB) -> MB; 'none' -> None."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", str(text).lower())
    if str(text).lower() == "none":
        return None
    if not match:
        raise ConfigError(f'{where}: memory {text!r} is not a size; write e.g. "512m" or "4g"')
    factor = {"k": 1 / 1024, "": 1, "m": 1, "g": 1024, "t": 1024 * 1024}[match.group(2)]
    return int(float(match.group(1)) * factor)


def load_profile(path: Path) -> DeviceProfile:
    where = str(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read device profile: {exc}") from exc
    retired = [key for key in ("cpi", "clock_mhz") if key in data]
    if retired:
        raise ConfigError(
            f"{where}: {' and '.join(retired)} are no longer read: board latency comes from the "
            "timing model of the profile's `cpu` (harness/timing/cpus/<cpu>.toml) or from a "
            "`timing_model` that `harness calibrate` fits; remove those lines"
        )
    check_keys(data, _FIELDS + SSH_FIELDS, where)
    backend = data.get("backend", "docker")
    if backend not in BACKEND_NAMES:
        raise ConfigError(f"{where}: backend {backend!r} is not one of {', '.join(BACKEND_NAMES)}")
    ssh = _ssh_fields(data, path, backend)
    arch = data.get("arch", "native")
    if arch not in ("native", "amd64", "arm64"):
        raise ConfigError(f"{where}: arch {arch!r} is not one of native, amd64, arm64")
    accelerator = data.get("accelerator", "none")
    if accelerator not in ACCELERATORS:
        raise ConfigError(f"{where}: accelerator {accelerator!r} is not one of {ACCELERATORS}")
    cpus = expect_type(data.get("cpus", 0), int, where, "cpus")
    threads = expect_type(data.get("threads", cpus or 1), int, where, "threads")
    cpuinfo = data.get("cpuinfo")
    cpuinfo_path = (path.parent / cpuinfo).resolve() if cpuinfo else None
    if cpuinfo_path is not None and not cpuinfo_path.is_file():
        raise ConfigError(f"{where}: cpuinfo file {cpuinfo_path} does not exist")
    timing_model = data.get("timing_model")
    timing_model_path = (path.parent / timing_model).resolve() if timing_model else None
    if timing_model_path is not None and not timing_model_path.is_file():
        raise ConfigError(
            f"{where}: timing_model file {timing_model_path} does not exist "
            "(`harness calibrate --device <board>` writes one)"
        )
    return DeviceProfile(
        name=path.stem,
        description=str(data.get("description", "")),
        backend=backend,
        arch=arch,
        cpus=cpus,
        threads=threads,
        memory_mb=parse_memory(data.get("memory", "none"), where),
        cpu=str(data.get("cpu", "")),
        accelerator=accelerator,
        cpuinfo=cpuinfo_path,
        image=str(data.get("image", "debian-bookworm")),
        runtimes=tuple(data.get("runtimes", ("onnxruntime", "ai-edge-litert"))),
        emulates=str(data.get("emulates", "")),
        timing_model=timing_model_path,
        **ssh,
        source=path,
    )


def _ssh_fields(data: dict[str, Any], path: Path, backend: str) -> dict[str, Any]:
    """The ssh fields of a profile, checked: only for backend = "ssh", where host and arch are
    required and the key and known_hosts files (relative to the profile) must exist."""
    where = str(path)
    given = [key for key in SSH_FIELDS if key in data]
    if backend != "ssh":
        if given:
            raise ConfigError(
                f"{where}: {', '.join(given)} only apply to boards reached over SSH; "
                'add backend = "ssh" or remove them'
            )
        return {}
    host = expect_type(data.get("host", ""), str, where, "host")
    if not host:
        raise ConfigError(
            f'{where}: an ssh board needs host = "<name or address>" (or an alias from '
            "~/.ssh/config)"
        )
    if data.get("arch", "native") == "native":
        raise ConfigError(
            f'{where}: an ssh board needs its arch: arch = "arm64" or "amd64" (what `uname -m` '
            "says on the board: aarch64 or x86_64)"
        )
    port = data.get("port")
    if port is not None and (
        not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536
    ):
        raise ConfigError(f"{where}: port {port!r} is not a TCP port (1-65535)")
    files: dict[str, Path | None] = {}
    for key in ("identity_file", "known_hosts"):
        value = expect_type(data.get(key, ""), str, where, key)
        files[key] = (path.parent / Path(value).expanduser()).resolve() if value else None
        found = files[key]
        if found is not None and not found.is_file():
            raise ConfigError(f"{where}: {key} {found} does not exist")
    key_file = files["identity_file"]
    if key_file is not None and key_file.stat().st_mode & 0o077:
        raise ConfigError(
            f"{where}: identity_file {key_file} can be read by others, and ssh refuses such "
            f"keys: chmod 600 {key_file}"
        )
    return {
        "host": host,
        "port": port,
        "user": expect_type(data.get("user", ""), str, where, "user"),
        "python": expect_type(data.get("python", "python3"), str, where, "python"),
        **files,
    }


def load_profiles(extra_dir: Path | None = None) -> dict[str, DeviceProfile]:
    """Built-in profiles, overridden or extended by those in `extra_dir`."""
    profiles = {p.stem: load_profile(p) for p in sorted(BUILTIN_DIR.glob("*.toml"))}
    if extra_dir is not None and extra_dir.is_dir():
        profiles.update({p.stem: load_profile(p) for p in sorted(extra_dir.glob("*.toml"))})
    return profiles


def select(profiles: dict[str, DeviceProfile], names: list[str], where: str) -> list[DeviceProfile]:
    """Profiles for `names` ('all' expands); unknown names list the known ones."""
    chosen: list[DeviceProfile] = []
    for name in names:
        if name == "all":
            chosen.extend(p for p in profiles.values() if p not in chosen)
            continue
        if name not in profiles:
            raise ConfigError(
                f"{where}: unknown device {name!r}; known devices: {', '.join(sorted(profiles))} "
                "(or 'all'; add your own as TOML files in the matrix folder)"
            )
        if profiles[name] not in chosen:
            chosen.append(profiles[name])
    return chosen
