"""Build the instruction-counting QEMU plugin (insn_count.c) for the installed qemu-user.

Debian ships neither plugins nor qemu-plugin.h, and the header must match the QEMU that loads the
plugin. So the header comes from Debian's source package of exactly the installed version:

1. `dpkg-query` names the installed qemu-user and its source package/version.
2. A private apt configuration under the cache (a deb-src twin of each system apt entry for this
   release, its own lists and archives; the system's apt setup is not touched) runs
   `apt-get update` and `apt-get source --download-only qemu=<version>`: the .dsc, the .orig
   tarball and the Debian tarball, verified by apt against the signed Sources index.
3. include/qemu/qemu-plugin.h is read out of the .orig tarball. Were any Debian patch to touch it,
   the whole source is unpacked with `dpkg-source -x` (patches applied) instead.
4. gcc compiles insn_count.c against it and glib (`pkg-config glib-2.0`), and vclock.c, the
   virtual clock that QEMU runs with (LD_PRELOAD; see that file).

Everything lands under $HARNESS_CACHE/counting (default ~/.cache/harness/counting): the header per
source version, the plugin per (installed qemu version, hash of the C source and the flags). The
tarballs are deleted once the header is out. Set HARNESS_QEMU_PLUGIN_HEADER=/path/qemu-plugin.h to
use a header you have (no download).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.images.apt import APT_SOURCES, deb_src_sources, read_sources
from harness.images.common import BuildError, harness_cache, locked, run_logged

SOURCE = Path(__file__).with_name("insn_count.c")
MARKERS = Path(__file__).with_name("markers.h")  # the marker handler, shared with the timing plugin
PLUGIN_NAME = "libinsn_count.so"
VCLOCK_SOURCE = Path(__file__).with_name("vclock.c")  # the virtual clock QEMU is run with
VCLOCK_NAME = "libvclock.so"
QEMU_PACKAGE = "qemu-user"
HEADER_MEMBER = "include/qemu/qemu-plugin.h"
CFLAGS = ("-shared", "-fPIC", "-O2", "-std=gnu11", "-Wall", "-Wno-unused-parameter")
OS_RELEASE = Path("/etc/os-release")
SETUP_HINT = "run `harness counting prepare --packages --device DEVICE` (root, or with sudo)"


class PluginBuildError(BuildError):
    """The plugin could not be built; the message names the step and what to do."""


@dataclass(frozen=True)
class QemuPackage:
    """The installed qemu-user: the plugin is built for exactly this."""

    version: str  # the binary package's version, e.g. 1:7.2+dfsg-7+deb12u18+b3
    source: str  # its source package, e.g. qemu
    source_version: str  # e.g. 1:7.2+dfsg-7+deb12u18 (binNMUs add +bN to the binary only)

    @property
    def key(self) -> str:
        return re.sub(r"[^A-Za-z0-9.+-]", "_", self.version)


@dataclass(frozen=True)
class Plugin:
    path: Path
    vclock: Path
    qemu: QemuPackage
    cached: bool
    header_s: float = 0.0  # fetching the header (download + extraction); 0 when cached
    compile_s: float = 0.0


def counting_cache() -> Path:
    """$HARNESS_CACHE/counting, default ~/.cache/harness/counting."""
    return harness_cache("counting")


def installed_qemu(package: str = QEMU_PACKAGE) -> QemuPackage:
    """The installed `package` (qemu-user: the dynamic qemu-<arch> binaries that load plugins)."""
    try:
        out = subprocess.run(
            [
                "dpkg-query",
                "-W",
                "-f=${Status}\t${Version}\t${source:Package}\t${source:Version}",
                package,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as exc:
        raise PluginBuildError(
            f"dpkg-query is not available ({exc}): counting needs a Debian/Ubuntu host with "
            f"{package}; {SETUP_HINT}"
        ) from exc
    fields = out.stdout.split("\t")
    if out.returncode != 0 or len(fields) != 4 or "install ok installed" not in fields[0]:
        raise PluginBuildError(
            f"package {package} is not installed (it has the qemu-<arch> binaries that load "
            f"plugins; qemu-user-static has no -plugin option); {SETUP_HINT}"
        )
    return QemuPackage(version=fields[1], source=fields[2], source_version=fields[3])


def qemu_banner(binary: str) -> str:
    """`qemu-aarch64 --version`'s first line, e.g. 'qemu-aarch64 version 7.2.22 (Debian ...)'."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    except OSError:
        return ""
    return out.stdout.splitlines()[0].strip() if out.stdout else ""


def source_hash(header_override: bytes = b"") -> str:
    digest = hashlib.sha256(SOURCE.read_bytes())
    digest.update(MARKERS.read_bytes())
    digest.update(VCLOCK_SOURCE.read_bytes())
    digest.update("\0".join(CFLAGS).encode())
    digest.update(header_override)
    return digest.hexdigest()[:12]


def _header_override() -> Path | None:
    value = os.environ.get("HARNESS_QEMU_PLUGIN_HEADER")
    return Path(value).expanduser() if value else None


def plugin_dir(qemu: QemuPackage) -> Path:
    override = _header_override()
    extra = override.read_bytes() if override is not None and override.is_file() else b""
    return counting_cache() / "plugins" / f"{qemu.key}-{source_hash(extra)}"


def cached_plugin(qemu: QemuPackage | None = None) -> Path | None:
    """The built plugin for the installed qemu and the current source, if there is one."""
    qemu = qemu or installed_qemu()
    path = plugin_dir(qemu) / PLUGIN_NAME
    return path if path.is_file() and path.with_name(VCLOCK_NAME).is_file() else None


# -- the release (its deb-src twins: harness.images.apt) -------------------------------------
def os_codename(text: str | None = None) -> str:
    """VERSION_CODENAME (or UBUNTU_CODENAME) from /etc/os-release."""
    if text is None:
        try:
            text = OS_RELEASE.read_text()
        except OSError:
            text = ""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip().strip('"')
    codename = values.get("VERSION_CODENAME") or values.get("UBUNTU_CODENAME") or ""
    if not codename:
        raise PluginBuildError(f"no VERSION_CODENAME in {OS_RELEASE}: cannot tell the release")
    return codename


def run(command: Sequence[str], log: Path, what: str, cwd: Path | None = None) -> None:
    """run_logged, failing as PluginBuildError (what the counting callers catch)."""
    try:
        run_logged(command, log, what, cwd=cwd)
    except BuildError as exc:
        raise PluginBuildError(str(exc)) from exc


# -- fetching the header ------------------------------------------------------------------------
def _apt_options(root: Path) -> list[str]:
    options = [
        f"Dir::Etc::SourceList={root / 'sources.sources'}",
        f"Dir::Etc::SourceParts={root / 'sources.list.d'}",
        f"Dir::State::Lists={root / 'lists'}",
        f"Dir::Cache={root / 'cache'}",
        "Debug::NoLocking=1",
        "APT::Get::List-Cleanup=0",
    ]
    if os.geteuid() == 0:
        options.append("APT::Sandbox::User=root")  # _apt cannot write into the user's cache
    return [arg for option in options for arg in ("-o", option)]


def _dsc_files(dsc: Path) -> list[str]:
    names: list[str] = []
    in_files = False
    for line in dsc.read_text(errors="replace").splitlines():
        if re.match(r"^(Files|Checksums-Sha256):", line):
            in_files = True
            continue
        if in_files and line.startswith(" "):
            parts = line.split()
            if len(parts) == 3 and parts[2] not in names:
                names.append(parts[2])
        else:
            in_files = False
    return names


def _read_member(archive: Path, suffix: str) -> bytes | None:
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith("/" + suffix):
                handle = tar.extractfile(member)
                assert handle is not None
                return handle.read()
    return None


def debian_patches_touching(debian_tarball: Path, member: str = HEADER_MEMBER) -> list[str]:
    """Names of the patches in the quilt series of a *.debian.tar.* that change `member`."""
    touching: list[str] = []
    with tarfile.open(debian_tarball, "r:*") as tar:
        patches: dict[str, bytes] = {}
        series = b""
        for item in tar:
            if not item.isfile() or not item.name.startswith("debian/patches/"):
                continue
            handle = tar.extractfile(item)
            assert handle is not None
            name = item.name[len("debian/patches/") :]
            if name == "series":
                series = handle.read()
            else:
                patches[name] = handle.read()
    for line in series.decode(errors="replace").splitlines():
        name = line.split("#", 1)[0].strip().split(" ")[0]
        if name and member.encode() in patches.get(name, b""):
            touching.append(name)
    return touching


def fetch_header(qemu: QemuPackage, log: Path) -> Path:
    """qemu-plugin.h of `qemu`'s source package, cached per source version."""
    override = _header_override()
    if override is not None:
        if not override.is_file():
            raise PluginBuildError(f"HARNESS_QEMU_PLUGIN_HEADER={override}: no such file")
        return override
    folder = counting_cache() / "headers" / re.sub(r"[^A-Za-z0-9.+-]", "_", qemu.source_version)
    header = folder / "qemu-plugin.h"
    if header.is_file():
        return header
    if shutil.which("apt-get") is None:
        raise PluginBuildError(
            "apt-get is not available, so qemu-plugin.h cannot be fetched from the qemu source "
            "package; set HARNESS_QEMU_PLUGIN_HEADER to the header of QEMU " + qemu.source_version
        )
    apt_root = counting_cache() / "apt"
    (apt_root / "sources.list.d").mkdir(parents=True, exist_ok=True)
    for sub in ("lists/partial", "cache/archives/partial"):
        (apt_root / sub).mkdir(parents=True, exist_ok=True)
    sources = deb_src_sources(read_sources(), os_codename())
    if not sources:
        raise PluginBuildError(
            f"no apt entry for this release in {APT_SOURCES}/sources.list*: cannot derive a "
            "deb-src entry to fetch the qemu source package from"
        )
    (apt_root / "sources.sources").write_text(sources)
    try:
        return _download_header(qemu, apt_root, folder, log)
    finally:
        shutil.rmtree(apt_root, ignore_errors=True)  # the lists are only needed once per version


def _download_header(qemu: QemuPackage, apt_root: Path, folder: Path, log: Path) -> Path:
    header = folder / "qemu-plugin.h"
    options = _apt_options(apt_root)
    run(["apt-get", "-q", *options, "update"], log, "apt-get update (private deb-src lists)")
    with tempfile.TemporaryDirectory(dir=counting_cache(), prefix="qemu-src-") as scratch:
        work = Path(scratch)
        wanted = f"{qemu.source}={qemu.source_version}"
        # apt-get source downloads into the current directory.
        run(
            ["apt-get", "-q", *options, "source", "--download-only", wanted],
            log,
            f"apt-get source --download-only {wanted}",
            cwd=work,
        )
        dscs = sorted(work.glob("*.dsc"))
        if not dscs:
            raise PluginBuildError(f"apt-get source gave no .dsc for {qemu.source}; log: {log}")
        names = _dsc_files(dscs[0])
        debian = next((work / n for n in names if ".debian.tar." in n), None)
        upstream = next((work / n for n in names if ".orig.tar." in n), None)
        if upstream is None:  # a native package: one tarball with everything
            upstream = next((work / n for n in names if ".tar." in n), None)
        if upstream is None:
            raise PluginBuildError(f"{dscs[0].name} names no source tarball")
        patched = debian_patches_touching(debian) if debian is not None else []
        if patched:
            tree = work / "tree"
            run(
                ["dpkg-source", "--no-check", "-x", str(dscs[0]), str(tree)],
                log,
                f"dpkg-source -x (patches {', '.join(patched)} change the header)",
            )
            content: bytes | None = (tree / HEADER_MEMBER).read_bytes()
        else:
            content = _read_member(upstream, HEADER_MEMBER)
        if not content:
            raise PluginBuildError(f"{upstream.name} holds no {HEADER_MEMBER}")
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / "qemu-plugin.h.partial"
        partial.write_bytes(content)
        partial.rename(header)
        (folder / "origin.json").write_text(
            json.dumps({"dsc": dscs[0].name, "tarball": upstream.name, "patches": patched}) + "\n"
        )
    return header


def glib_flags() -> tuple[list[str], list[str]]:
    try:
        cflags = subprocess.run(
            ["pkg-config", "--cflags", "glib-2.0"], capture_output=True, text=True, check=True
        ).stdout.split()
        libs = subprocess.run(
            ["pkg-config", "--libs", "glib-2.0"], capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise PluginBuildError(
            f"pkg-config finds no glib-2.0 ({exc}): install pkg-config and libglib2.0-dev; "
            + SETUP_HINT
        ) from exc
    return cflags, libs


def compile_plugin(header: Path, out: Path, log: Path, compiler: str = "gcc") -> None:
    if shutil.which(compiler) is None:
        raise PluginBuildError(f"{compiler} is not installed; {SETUP_HINT}")
    cflags, libs = glib_flags()
    include = out.parent / "include"
    include.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(header, include / "qemu-plugin.h")
    partial = out.with_suffix(".partial")
    command: Sequence[str] = [
        compiler,
        *CFLAGS,
        *cflags,
        f"-I{include}",
        f"-I{MARKERS.parent}",
        str(SOURCE),
        "-o",
        str(partial),
        *libs,
    ]
    run(command, log, f"compiling {SOURCE.name}")
    partial.rename(out)
    vclock = out.with_name(VCLOCK_NAME)
    partial = vclock.with_suffix(".partial")
    run(
        [compiler, *CFLAGS, str(VCLOCK_SOURCE), "-o", str(partial)],
        log,
        f"compiling {VCLOCK_SOURCE.name}",
    )
    partial.rename(vclock)


def build_plugin(force: bool = False) -> Plugin:
    """The plugin for the installed qemu-user: from the cache, or fetched and compiled now."""
    qemu = installed_qemu()
    folder = plugin_dir(qemu)
    path = folder / PLUGIN_NAME
    vclock = folder / VCLOCK_NAME
    with locked("plugin", "counting"):
        if path.is_file() and vclock.is_file() and not force:
            return Plugin(path, vclock, qemu, cached=True)
        log = counting_cache() / "logs" / f"plugin-{folder.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.unlink(missing_ok=True)
        started = time.monotonic()
        header = fetch_header(qemu, log)
        header_s = time.monotonic() - started
        folder.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        compile_plugin(header, path, log)
        compile_s = time.monotonic() - started
        plugin = Plugin(path, vclock, qemu, cached=False, header_s=header_s, compile_s=compile_s)
        record = {**asdict(plugin), "path": str(path), "vclock": str(vclock), "header": str(header)}
        (folder / "build.json").write_text(json.dumps(record, indent=2) + "\n")
    return plugin
