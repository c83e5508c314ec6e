"""The board side of an SSH device: the probe, the runtimes cached on the board (pushed once
per wheel set, pruned after KEEP_DAYS unused), the worker's files as one tar stream, the C library
check, and the command that starts the worker under its tether."""

from __future__ import annotations

import dataclasses
import io
import re
import shlex
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import harness
from harness.backends.base import BackendUnavailable
from harness.devices import UNAME_MACHINE, DeviceProfile

HARNESS_DIR = Path(harness.__file__).resolve().parent
WORKER_SOURCES = ("__init__.py", "worker", "runtimes")  # what the worker and the tether import
BOARD_CACHE = ".cache/harness-board"  # under the board user's home: the installed runtimes
KEEP_DAYS = 30  # runtimes no session used for this long are removed from the board


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


def tree_bytes(path: Path) -> int:
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
