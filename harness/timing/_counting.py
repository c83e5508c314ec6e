"""Everything the timing model takes from counting mode, in one place (harness.counting builds
the plugins, harness.backends.qemu runs the counted worker). Only host-side code imports this."""

from __future__ import annotations

from harness.backends.base import BackendUnavailable, Target, WorkerClient, greet, load
from harness.backends.qemu import (
    DEFAULT_CPU,
    MODEL_ID,
    QemuChannel,
    build_prefix,
    find_interpreter,
    qemu_binary,
    qemu_command,
    qemu_version,
    worker_environment,
)
from harness.counting.build import (
    CFLAGS,
    MARKERS,
    PluginBuildError,
    build_plugin,
    fetch_header,
    glib_flags,
    installed_qemu,
)
from harness.images.common import harness_cache, locked, run_logged

__all__ = [
    "greet",
    "load",
    "CFLAGS",
    "MARKERS",
    "DEFAULT_CPU",
    "MODEL_ID",
    "BackendUnavailable",
    "PluginBuildError",
    "QemuChannel",
    "Target",
    "WorkerClient",
    "build_plugin",
    "build_prefix",
    "fetch_header",
    "find_interpreter",
    "glib_flags",
    "harness_cache",
    "installed_qemu",
    "locked",
    "qemu_binary",
    "qemu_command",
    "qemu_version",
    "run_logged",
    "worker_environment",
]
