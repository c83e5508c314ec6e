"""python -m harness.timing estimate --device rpi4 MODEL [DATASET] [--json]

Estimated milliseconds per inference of MODEL on a device, from one counted inference under QEMU
with the timing plugin (cached), and the CPU model's error band."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.timing", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    estimate = commands.add_parser("estimate", help="estimated latency of a model on a device")
    estimate.add_argument("--device", required=True, help="a device profile, e.g. rpi4")
    estimate.add_argument("--cpu", default=None, help="a timing model other than the profile's")
    estimate.add_argument("model", type=Path)
    estimate.add_argument("dataset", type=Path, nargs="?", default=None)
    estimate.add_argument("--json", action="store_true", help="every field, as JSON")
    args = parser.parse_args(argv)

    from harness.backends.base import BackendUnavailable
    from harness.devices import load_profiles
    from harness.timing import estimate_latency, load_cpu_model

    profiles = load_profiles()
    if args.device not in profiles:
        parser.error(f"unknown device {args.device!r}; known: {', '.join(sorted(profiles))}")
    try:
        cpu = load_cpu_model(args.cpu) if args.cpu else None
        result = estimate_latency(profiles[args.device], args.model, args.dataset, cpu=cpu)
    except (BackendUnavailable, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.as_json(), indent=2) if args.json else str(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
