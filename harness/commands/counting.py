"""`harness counting build | prepare --device D | count --device D MODEL [DATASET] |
estimate --device D MODEL [DATASET]`.

build    fetch qemu-plugin.h for the installed qemu-user and compile the plugin (cached)
prepare  the plugin, and the device image's trees (debootstrap rootfs + wheels) a device counts in
         (root; the trees are shared with `harness images build`, and taken out of the device
         image where it is built and they are not); --packages first installs the Debian
         packages counting needs (qemu-user, gcc, ...; with sudo where not root)
count    instructions per inference of a model on a device (deterministic)
estimate the model's milliseconds per inference on the device from the timing model, with the
         error band measured for its CPU (docs/timing-model.md)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from harness.devices import DeviceProfile, load_profiles, select


def _profile(args: argparse.Namespace) -> DeviceProfile:
    profiles = load_profiles(Path(args.matrix) if args.matrix else None)
    return select(profiles, [args.device], "--device")[0]


def _build(args: argparse.Namespace) -> int:
    from harness.backends.qemu import qemu_binary, qemu_version
    from harness.counting.build import PluginBuildError, build_plugin
    from harness.devices import UNAME_MACHINE

    started = time.monotonic()
    try:
        plugin = build_plugin(force=args.force)
    except PluginBuildError as exc:
        print(f"harness counting: {exc}", file=sys.stderr)
        return 1
    versions = []
    for arch, machine in UNAME_MACHINE.items():
        try:
            versions.append(f"qemu-{machine} {qemu_version(qemu_binary(arch))}")
        except Exception as exc:  # noqa: BLE001 - report and go on
            versions.append(f"qemu-{machine}: {exc}")
    how = (
        "cached"
        if plugin.cached
        else f"built in {time.monotonic() - started:.1f} s (header {plugin.header_s:.1f} s, "
        f"compile {plugin.compile_s:.1f} s)"
    )
    print(f"plugin {plugin.path}: {how}; qemu-user {plugin.qemu.version}")
    for line in versions:
        print(f"  {line}")
    return 0


# What counting needs from Debian (scripts/setup-counting.sh installs the same): the dynamic
# qemu-user (it loads plugins), the plugin's compiler and headers, apt's source tools for
# qemu-plugin.h, and debootstrap for the trees where no device image holds them.
PACKAGES = (
    "qemu-user", "gcc", "libglib2.0-dev", "pkg-config", "dpkg-dev", "debootstrap", "xz-utils",
    "ca-certificates",
)  # fmt: skip


def missing_packages(packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """Those of `packages` dpkg does not list as installed."""
    import subprocess

    missing = []
    for package in packages:
        done = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True
        )
        if "install ok installed" not in done.stdout:
            missing.append(package)
    return missing


def install_packages(packages: list[str]) -> None:
    """apt-get install `packages`: as root directly, else through sudo (a runner's user)."""
    import os
    import shutil
    import subprocess

    prefix: list[str] = []
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            raise RuntimeError(
                f"installing {' '.join(packages)} needs root, and sudo is not installed: "
                "run `harness counting prepare --packages` as root"
            )
        prefix = ["sudo", "DEBIAN_FRONTEND=noninteractive"]
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"installing {' '.join(packages)}", flush=True)
    subprocess.run([*prefix, "apt-get", "update", "-qq"], check=True, env=environment)
    subprocess.run(
        [*prefix, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        check=True,
        env=environment,
    )


def _prepare(args: argparse.Namespace) -> int:
    import subprocess

    from harness.backends.qemu import find_interpreter
    from harness.counting.build import PluginBuildError, build_plugin
    from harness.images.common import BuildError, Progress, locked
    from harness.images.debootstrap import ensure_rootfs, ensure_site, trees_from_image
    from harness.images.recipe import recipe_for

    profile = _profile(args)
    if args.packages:
        missing = missing_packages()
        try:
            if missing:
                install_packages(missing)
        except (RuntimeError, subprocess.CalledProcessError, OSError) as exc:
            print(f"harness counting: {exc}", file=sys.stderr)
            return 1
    try:
        plugin = build_plugin()
        print(f"plugin {plugin.path}: {'cached' if plugin.cached else 'built'}")
        recipe = recipe_for(profile)
        with locked(recipe.tag):  # the lock `harness images build` takes for this recipe
            progress = Progress(None)
            if not _trees_from_image(recipe, progress, trees_from_image):
                ensure_rootfs(recipe, progress)
                ensure_site(recipe, progress)
    except (PluginBuildError, BuildError) as exc:
        print(f"harness counting: {exc}", file=sys.stderr)
        return 1
    print(f"{profile.name}: counts in {find_interpreter(profile, 'rootfs').describe()}")
    return 0


def _trees_from_image(recipe: Any, progress: Any, take: Any) -> bool:
    """The trees out of the device image, where Docker answers and holds it."""
    try:
        import docker

        client = docker.from_env()
        client.ping()
    except Exception:  # noqa: BLE001 - no Docker here: build the trees
        return False
    return bool(take(recipe, client, progress))


def _count(args: argparse.Namespace) -> int:
    from harness.backends.base import BackendUnavailable, WorkerError, WorkerFailure
    from harness.backends.qemu import QemuBackend, count_instructions

    profile = _profile(args)
    started = time.monotonic()
    try:
        result = count_instructions(
            profile,
            Path(args.model),
            Path(args.dataset) if args.dataset else None,
            samples=args.samples,
            warmup=args.warmup,
            backend=QemuBackend(mode=args.mode, prefer=args.interpreter),
        )
    except (BackendUnavailable, WorkerError, WorkerFailure) as exc:
        print(f"harness counting: {exc}", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - started
    if args.json:
        data = result.as_json()
        data["wall_s"] = elapsed
        print(json.dumps(data, indent=2))
    else:
        print(result)
        print(
            f"  total {result.total:,} instructions in {result.samples} inferences "
            f"({result.interpreter}; {elapsed:.1f} s)"
        )
    return 0


def _estimate(args: argparse.Namespace) -> int:
    """The timing model's milliseconds per inference on the device, with its band."""
    from harness.backends.base import BackendUnavailable
    from harness.timing import estimate_latency, load_cpu_model
    from harness.timing.run import TimingRunError

    profile = _profile(args)
    try:
        cpu = load_cpu_model(args.cpu) if args.cpu else None
        result = estimate_latency(
            profile, Path(args.model), Path(args.dataset) if args.dataset else None, cpu=cpu
        )
    except (BackendUnavailable, TimingRunError, ValueError) as exc:
        print(f"harness counting: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result.as_json(), indent=2) if args.json else str(result))
    return 0


def _run(args: argparse.Namespace) -> int:
    handlers = {"build": _build, "prepare": _prepare, "count": _count, "estimate": _estimate}
    return handlers[args.counting_command](args)


def add_parser(commands: Any) -> None:
    counting = commands.add_parser(
        "counting",
        help="instruction counting under QEMU: build the plugin, prepare a device, count a model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    counting.add_argument("--matrix", help="folder of extra device profiles (TOML)")
    sub = counting.add_subparsers(dest="counting_command", required=True)
    build = sub.add_parser("build", help="build the plugin for the installed qemu-user")
    build.add_argument("--force", action="store_true", help="rebuild even when cached")
    prepare = sub.add_parser("prepare", help="plugin + the trees a device counts in")
    prepare.add_argument("--device", required=True)
    prepare.add_argument(
        "--packages",
        action="store_true",
        help="first apt-get install the Debian packages counting needs where missing (as root, "
        "else with sudo): " + ", ".join(PACKAGES),
    )
    count = sub.add_parser("count", help="instructions per inference of a model")
    count.add_argument("--device", required=True)
    count.add_argument("model")
    count.add_argument("dataset", nargs="?")
    count.add_argument("--samples", type=int, default=200)
    count.add_argument("--warmup", type=int, default=20)
    count.add_argument("--mode", choices=("callback", "inline"), default="callback")
    count.add_argument("--interpreter", choices=("auto", "rootfs", "host"), default="auto")
    count.add_argument("--json", action="store_true")
    estimate = sub.add_parser(
        "estimate", help="a model's latency on a device, from the timing model (with its band)"
    )
    estimate.add_argument("--device", required=True)
    estimate.add_argument("--cpu", help="a timing model other than the profile's (cpus/<name>)")
    estimate.add_argument("model")
    estimate.add_argument("dataset", nargs="?")
    estimate.add_argument("--json", action="store_true", help="every field, as JSON")
    counting.set_defaults(handler=_run)
