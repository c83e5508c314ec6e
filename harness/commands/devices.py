"""`harness devices`: the device profiles, as a table, as JSON, or as the device matrix a GitHub
Actions workflow builds its jobs from (`--github-matrix`, GITHUB_OUTPUT lines)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.devices import DeviceProfile, load_profiles, select
from harness.errors import ConfigError


def ci_matrix(
    profiles: Mapping[str, DeviceProfile], wanted: list[str], default: list[str]
) -> list[dict[str, str]]:
    """One entry per device job: name, backend, arch, fidelity, and the device image's tag (the
    image cache key; "" for devices that need no image). `wanted` (else `default`, the config's
    devices) names the devices; `all` means every CPU profile: a GPU device runs only where it is
    named, since it needs a runner of its own."""
    names = wanted or default
    if "all" in names:
        names = [n for n in names if n != "all"]
        names += [n for n, p in profiles.items() if p.accelerator == "none" and n not in names]
    chosen = select(dict(profiles), names, "--devices" if wanted else "the config's devices")
    entries = []
    for profile in chosen:
        image = ""
        if profile.backend == "docker":
            from harness.images.recipe import image_tag

            image = image_tag(profile)
        entries.append(
            {
                "name": profile.name,
                "backend": profile.backend,
                "arch": profile.target_arch,
                "fidelity": profile.fidelity,
                "image": image,
            }
        )
    return entries


def _github_matrix(args: argparse.Namespace) -> int:
    from harness.config import load_config, search_config

    config_path = Path(args.config) if args.config else search_config(Path.cwd())
    if config_path is None:
        raise ConfigError(
            "no harness config here or above (harness.toml, or [tool.harness] in "
            "pyproject.toml): pass --config PATH"
        )
    if not config_path.is_file():
        raise ConfigError(f"--config {args.config}: no such file")
    config = load_config(config_path)  # its profiles: the built-ins and its own `matrix`
    wanted = (args.devices or "").replace(",", " ").split()
    baseline = None
    if args.baseline:  # the base decides the devices and their profiles (harness.boundary)
        from harness.boundary import under_base

        baseline, boundary = under_base(config, args.baseline, args.allow_gate_changes, wanted)
        if boundary is not None:
            config = boundary.config
    try:
        entries = ci_matrix(config.profiles, wanted, list(config.devices))
    finally:
        if baseline is not None:
            baseline.close()
    print("devices=" + json.dumps(entries))
    print("names=" + ",".join(entry["name"] for entry in entries))
    # For a single job that runs every device (action.yml): does any need QEMU, which need images.
    print("emulated=" + str(any(e["fidelity"] == "emulated" for e in entries)).lower())
    print("docker=" + " ".join(e["name"] for e in entries if e["backend"] == "docker"))
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.github_matrix:
        return _github_matrix(args)
    profiles = load_profiles(Path(args.matrix) if args.matrix else None)
    if args.json:
        print(json.dumps([p.as_json() for p in profiles.values()], indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table("device", "arch", "cpu", "cpus", "memory", "accel", "fidelity", "description")
    for p in profiles.values():
        memory = f"{p.memory_mb} MB" if p.memory_mb else "-"
        table.add_row(
            p.name,
            p.target_arch,
            p.cpu or "-",
            str(p.cpus or "all"),
            memory,
            p.accelerator,
            p.fidelity,
            p.description,
        )
    Console().print(table)
    return 0


def add_parser(commands: Any) -> None:
    devices = commands.add_parser(
        "devices",
        help="list the device profiles",
        description="The device profiles: built-in ones, and those in --matrix DIR (a profile "
        "there with a built-in's name overrides it).",
    )
    devices.add_argument("--json", action="store_true", help="print JSON")
    devices.add_argument(
        "--matrix", help="folder of extra device profiles (TOML); --github-matrix: the config's"
    )
    devices.add_argument(
        "--github-matrix",
        action="store_true",
        help="print the device matrix of a config as GitHub step outputs: devices=<JSON list "
        "of name, backend, arch, fidelity, image>, names=<comma-separated>, emulated=<true if "
        "any device is emulated> and docker=<space-separated Docker devices>",
    )
    devices.add_argument(
        "--config",
        metavar="PATH",
        help="with --github-matrix: the harness config (default: found from here upwards)",
    )
    devices.add_argument(
        "--devices",
        metavar="NAMES",
        help="with --github-matrix: comma- or space-separated device names (default: the "
        "config's devices; all: every CPU profile)",
    )
    devices.add_argument(
        "--baseline",
        metavar="REF_OR_PATH",
        help="with --github-matrix: the base whose config decides the devices and profiles",
    )
    devices.add_argument(
        "--allow-gate-changes",
        action="store_true",
        help="with --baseline: the change's own devices and profiles are accepted",
    )
    devices.set_defaults(handler=_run)
