"""The `harness` command: devices, images (and more as the project grows)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from harness.errors import ConfigError


def _devices(args: argparse.Namespace) -> int:
    from harness.devices import load_profiles

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


def _images(args: argparse.Namespace) -> int:
    from harness import images

    return images.main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Gate ML model merges on accuracy, latency and memory across a device matrix. "
        "Tests run through pytest (`pytest --device=NAME`); this command manages devices and "
        "reports.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    devices = commands.add_parser("devices", help="list the device profiles")
    devices.add_argument("--json", action="store_true", help="print JSON (for CI matrices)")
    devices.add_argument("--matrix", help="folder of extra device profiles (TOML)")
    devices.set_defaults(handler=_devices)

    image = commands.add_parser("images", help="build or list the device container images")
    image_commands = image.add_subparsers(dest="images_command", required=True)
    build = image_commands.add_parser("build", help="build the images the devices need")
    build.add_argument("--device", action="append", help="device name (repeatable; default all)")
    build.add_argument(
        "--method",
        choices=("auto", "debootstrap", "dockerfile"),
        default="auto",
        help="debootstrap: no registry needed; dockerfile: FROM a public Python image; "
        "auto: dockerfile where a registry answers, else debootstrap",
    )
    build.add_argument("--matrix", help="folder of extra device profiles (TOML)")
    listing = image_commands.add_parser("list", help="list the images and whether they are built")
    listing.add_argument("--matrix", help="folder of extra device profiles (TOML)")
    image.set_defaults(handler=_images)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
