"""Build the timing plugin (timing_plugin.c) for the installed qemu-user.

The header and the virtual clock come from counting mode's build (the same qemu-plugin.h of the
installed QEMU's source package, the same libvclock.so); this compiles timing_plugin.c against
them, cached under $HARNESS_CACHE/timing/plugins/<qemu version>-<hash of source and flags>/.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from harness.counting.build import (
    CFLAGS,
    MARKERS,
    PluginBuildError,
    build_plugin,
    fetch_header,
    glib_flags,
)
from harness.images.common import harness_cache, locked, run_logged

SOURCE = Path(__file__).with_name("timing_plugin.c")
PLUGIN_NAME = "libtiming.so"


@dataclass(frozen=True)
class TimingPlugin:
    path: Path
    vclock: Path  # counting mode's virtual clock, LD_PRELOADed into QEMU
    qemu_version: str
    cached: bool
    compile_s: float = 0.0


def source_hash() -> str:
    digest = hashlib.sha256(SOURCE.read_bytes())
    digest.update(MARKERS.read_bytes())
    digest.update("\0".join(CFLAGS).encode())
    return digest.hexdigest()[:12]


def build_timing_plugin(force: bool = False) -> TimingPlugin:
    """The plugin for the installed qemu-user: from the cache, or compiled now (seconds).
    Raises PluginBuildError (saying what to install) where it cannot be built."""
    counting = build_plugin()  # fetches the header if needed; gives the virtual clock
    folder = harness_cache("timing") / "plugins" / f"{counting.qemu.key}-{source_hash()}"
    path = folder / PLUGIN_NAME
    with locked("timing-plugin", "timing"):
        if path.is_file() and not force:
            return TimingPlugin(path, counting.vclock, counting.qemu.version, cached=True)
        if shutil.which("gcc") is None:
            raise PluginBuildError(
                "gcc is not installed; run `harness counting prepare --packages --device DEVICE`"
            )
        log = harness_cache("timing") / "logs" / f"plugin-{folder.name}.log"
        log.unlink(missing_ok=True)
        header = fetch_header(counting.qemu, log)
        include = folder / "include"
        include.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(header, include / "qemu-plugin.h")
        cflags, libs = glib_flags()
        partial = path.with_suffix(".partial")
        started = time.monotonic()
        command = ["gcc", *CFLAGS, *cflags, f"-I{include}", f"-I{MARKERS.parent}", str(SOURCE)]
        command += ["-o", str(partial), *libs]
        run_logged(command, log, f"compiling {SOURCE.name}")
        partial.rename(path)
        return TimingPlugin(
            path,
            counting.vclock,
            counting.qemu.version,
            cached=False,
            compile_s=time.monotonic() - started,
        )
