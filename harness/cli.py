"""The `harness` command: its groups live in harness.commands, one module each (devices,
images, counting, calibrate, run/base/needs, merge/report/comment, history and nightly)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from harness.commands import calibrate, counting, devices, gate, history, images, reports
from harness.errors import ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Gate ML model merges on accuracy, latency and memory across a device matrix. "
        "Tests run through pytest (`pytest --device=NAME`); this command manages devices and "
        "reports.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    for group in (devices, images, counting, calibrate, gate, reports, history):
        group.add_parser(commands)
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
