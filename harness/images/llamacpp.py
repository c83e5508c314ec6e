"""The llama.cpp runtime set: Debian unstable's llama.cpp packages with sid's C and C++ runtime,
extracted into one folder per arch, run through that folder's own dynamic loader.

Debian packages llama.cpp (`libllama0`, `libggml0` with CPU backends for every x86-64 level and
armv8.0 up, `llama.cpp-tools` with llama-bench and llama-quantize) for amd64 and arm64, but only
in sid, built against glibc 2.43; the device images are Debian bookworm (glibc 2.36). Rather than
a second image family or a source build, the .debs of the pinned llama.cpp and of what it links
(libc6, libstdc++6, libgcc-s1, libgomp1, libssl3t64, libzstd1, zlib1g) are downloaded with apt
(a private configuration: the system's apt state is not touched) and extracted into
$HARNESS_CACHE/llama.cpp/<version>-<arch>/. A program runs against them as

    <set>/usr/lib/<triplet>/ld-linux-*.so.* --library-path <set libs> PROGRAM ARGS

(glibc is backward compatible: bookworm's python3 runs under sid's loader and libc, and then
loads libllama with ctypes; harness.runtimes.llamacpp). The host's worker reads the set where it
lies; a container gets it mounted read-only at /opt/llama.cpp (docker backend), so the default
device images do not change. `manifest.json` in the set says the packages, loader and paths.

The llama.cpp version is pinned: the ctypes structures in harness.runtimes.llamacpp are those of
this version's llama.h. When sid moves on, fetching fails and says what to update.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from harness.images.common import BuildError, harness_cache, locked
from harness.runtimes import llamacpp_set

LLAMA_CPP_VERSION = "1:0.7.0+dfsg-2"  # libllama0 and llama.cpp-tools: the binding's llama.h
GGML_VERSION = "0.27.0-1"
PINNED = {
    "libllama0": LLAMA_CPP_VERSION,
    "llama.cpp-tools": LLAMA_CPP_VERSION,
    "libggml0": GGML_VERSION,
}
# What libllama, libggml and the tools link, from the same suite (any version sid has).
RUNTIME = ("libc6", "libgcc-s1", "libstdc++6", "libgomp1", "libssl3t64", "libzstd1", "zlib1g")
TOOLS = ("llama-bench", "llama-quantize")  # kept from the tools package (bin/ and their -impl)
SUITE = "sid"
TRIPLETS = {"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}
LOADERS = {"amd64": "ld-linux-x86-64.so.2", "arm64": "ld-linux-aarch64.so.1"}
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
FIX = "harness images llama-cpp --arch {arch}"


def version_name() -> str:
    """The folder name's version part: 0.7.0+dfsg-2 (no epoch, no colon)."""
    return LLAMA_CPP_VERSION.split(":", 1)[-1]


def set_folder(arch: str) -> Path:
    """Where the runtime set for `arch` lies (made or not)."""
    return harness_cache("llama.cpp") / f"{version_name()}-{arch}"


def installed(arch: str) -> Path | None:
    """The complete runtime set for `arch`, or None."""
    folder = set_folder(arch)
    return folder if (folder / "manifest.json").is_file() else None


def needed_by(files: Sequence[Path]) -> bool:
    """Whether a worker that sees `files` runs a GGUF model (and so needs the set)."""
    return any(Path(f).suffix.lower() == ".gguf" for f in files)


def missing_message(arch: str, device: str) -> str:
    return (
        f"{device} runs a GGUF model with llama.cpp, but the llama.cpp runtime set for {arch} "
        f"is not fetched; run: {FIX.format(arch=arch)} (Debian sid's llama.cpp "
        f"{version_name()} .debs, about 20 MB)"
    )


def mirror() -> str:
    """The Debian mirror: $HARNESS_DEBIAN_MIRROR, else the one apt uses for Debian, else
    deb.debian.org."""
    from harness.images import apt

    configured = os.environ.get("HARNESS_DEBIAN_MIRROR")
    if configured:
        return configured.rstrip("/")
    for entry in apt.parse(apt.read_sources()):
        for uri in entry.uris:
            if "debian" in uri and "security" not in uri and "deb" in entry.types:
                return uri.rstrip("/")
    return "http://deb.debian.org/debian"


def _apt(work: Path, arch: str) -> list[str]:
    """apt-get options for a private configuration under `work` (sid, one arch)."""
    for sub in ("lists/partial", "archives/partial", "preferences.d"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    (work / "status").touch()
    signed = f"signed-by={KEYRING} " if KEYRING.is_file() else ""
    (work / "sources.list").write_text(f"deb [{signed}arch={arch}] {mirror()} {SUITE} main\n")
    options = {
        "Dir::Etc::SourceList": work / "sources.list",
        "Dir::Etc::SourceParts": "/dev/null",
        "Dir::Etc::Preferences": "/dev/null",
        "Dir::Etc::PreferencesParts": work / "preferences.d",
        "Dir::State::Lists": work / "lists",
        "Dir::State::Status": work / "status",
        "Dir::Cache": work,
        "Dir::Cache::Archives": work / "archives",
        "APT::Architecture": arch,
        "APT::Architectures": arch,
        "APT::Sandbox::User": "root",
    }
    return [f"-o{key}={value}" for key, value in options.items()]


def _run(command: list[str], what: str, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError(f"{what}: {exc}") from exc
    if done.returncode:
        raise BuildError(f"{what} failed:\n{(done.stdout + done.stderr)[-2000:]}")
    return done.stdout


def _candidates(options: list[str], packages: list[str], arch: str) -> dict[str, str]:
    """{package: the version sid offers}."""
    shown = _run(["apt-cache", *options, "show", *[f"{p}:{arch}" for p in packages]], "apt-cache")
    found: dict[str, str] = {}
    package = ""
    for line in shown.splitlines():
        if line.startswith("Package: "):
            package = line.split(": ", 1)[1]
        elif line.startswith("Version: ") and package not in found:
            found[package] = line.split(": ", 1)[1]
    return found


def fetch(arch: str) -> Path:
    """The runtime set for `arch`, downloaded and extracted unless it is there."""
    if arch not in TRIPLETS:
        raise BuildError(f"no llama.cpp runtime set for arch {arch!r}; known: amd64, arm64")
    done = installed(arch)
    if done is not None:
        return done
    for tool in ("apt-get", "apt-cache", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise BuildError(
                f"{tool} is not installed: the llama.cpp runtime set is made from Debian packages "
                "with apt (a Debian or Ubuntu host)"
            )
    with locked(f"llama.cpp-{arch}", "llama.cpp"):
        if installed(arch) is not None:
            return set_folder(arch)
        return _fetch(arch)


def _fetch(arch: str) -> Path:
    target = set_folder(arch)
    with tempfile.TemporaryDirectory(prefix="harness-llama-apt-") as scratch:
        work = Path(scratch)
        options = _apt(work, arch)
        _run(["apt-get", *options, "-q", "update"], f"apt-get update of Debian {SUITE} ({arch})")
        offered = _candidates(options, [*PINNED, *RUNTIME], arch)
        for package, version in PINNED.items():
            if offered.get(package) != version:
                raise BuildError(
                    f"Debian {SUITE} offers {package} {offered.get(package, '(none)')}, not the "
                    f"pinned {version}: harness's ctypes binding (harness/runtimes/llamacpp.py) "
                    "follows that version's llama.h; update LLAMA_CPP_VERSION/GGML_VERSION in "
                    "harness/images/llamacpp.py together with the binding's structures"
                )
        wanted = [f"{p}:{arch}={v}" for p, v in PINNED.items()]
        wanted += [f"{p}:{arch}={offered[p]}" for p in RUNTIME if p in offered]
        debs = work / "debs"
        debs.mkdir()
        _run(["apt-get", *options, "-q", "download", *wanted], "apt-get download", cwd=debs)
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        packages = {}
        for deb in sorted(debs.glob("*.deb")):
            _run(["dpkg-deb", "-x", str(deb), str(partial)], f"dpkg-deb -x {deb.name}")
            digest = hashlib.sha256(deb.read_bytes()).hexdigest()
            packages[deb.name] = digest
    _prune(partial, arch)
    triplet = TRIPLETS[arch]
    libs = f"usr/lib/{triplet}"
    manifest = {
        "arch": arch,
        "suite": SUITE,
        "llama_cpp": LLAMA_CPP_VERSION,
        "ggml": GGML_VERSION,
        "debs": packages,
        "loader": f"{libs}/{LOADERS[arch]}",
        "library_path": [libs, f"{libs}/llama"],
        "backends": f"{libs}/ggml/backends0",
        "tools": {tool: f"usr/bin/{tool}" for tool in TOOLS},
    }
    (partial / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def _prune(root: Path, arch: str) -> None:
    """Keep the libraries, the loader and the tools harness uses; drop docs, headers, locales,
    the server's web UI and the other programs."""
    for sub in ("usr/share", "usr/include", "etc", "usr/lib/gcc", "usr/libexec"):
        shutil.rmtree(root / sub, ignore_errors=True)
    for program in (root / "usr/bin").glob("*"):
        if program.name not in TOOLS:
            program.unlink()
    gconv = root / f"usr/lib/{TRIPLETS[arch]}/gconv"
    shutil.rmtree(gconv, ignore_errors=True)
    for impl in (root / f"usr/lib/{TRIPLETS[arch]}/llama").glob("libllama-*-impl.so"):
        if not any(f"-{tool.removeprefix('llama-')}-impl" in impl.name for tool in TOOLS):
            impl.unlink()


def quantize(folder: Path, source: Path, target: Path, kind: str, threads: int = 1) -> Path:
    """`llama-quantize SOURCE TARGET KIND` (Q8_0, Q4_K_M, Q2_K...) with the set's tool."""
    try:
        return llamacpp_set.quantize(folder, source, target, kind, threads)
    except llamacpp_set.SetError as exc:
        raise BuildError(str(exc)) from None
