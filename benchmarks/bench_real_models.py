"""The real-model corpus (benchmarks/realmodels/corpus.py) through the harness on each device, as
a new user runs it: a model repository with the configs of docs/real-models.md, then
`pytest --device=<device>` in it. Prints every model's items per device (verdict and headline
figure), the rows that are not PASS with their reasons, and each device's wall time.

    python benchmarks/bench_real_models.py [--device host --device x86-64 --device rpi4]
        [--out DIR] [NAME ...]

The project folder (default: a temporary one) keeps results-<device>.json and reports; the
model files come from the cache ($HARNESS_REAL_MODELS, fetched with pip on first use).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from realmodels.corpus import BY_NAME, write_project  # noqa: E402

from harness.report.figures import headline  # noqa: E402


def run(folder: Path, device: str) -> tuple[int, float, list[dict[str, Any]]]:
    """`pytest --device=<device>` in the project: exit status, wall seconds, result records."""
    out = folder / f"results-{device}.json"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--device={device}",
         f"--harness-json={out}", f"--harness-report={folder / ('report-' + device)}"],
        cwd=folder, capture_output=True, text=True,
    )  # fmt: skip
    wall = time.monotonic() - started
    (folder / f"pytest-{device}.log").write_text(done.stdout + done.stderr)
    results = json.loads(out.read_text())["results"] if out.exists() else []
    return done.returncode, wall, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"models (default all): {', '.join(BY_NAME)}")
    parser.add_argument("--device", action="append", default=None)
    parser.add_argument("--out", type=Path, default=None, help="the project folder to keep")
    args = parser.parse_args()
    folder = args.out or Path(tempfile.mkdtemp(prefix="harness-real-models-"))
    write_project(folder, args.names)
    print(f"project: {folder}")
    for device in args.device or ["host", "x86-64", "rpi4"]:
        status, wall, results = run(folder, device)
        print(f"\n== {device}: exit {status}, {wall:.0f} s, {len(results)} items")
        by_model: dict[str, list[dict[str, Any]]] = {}
        for record in results:
            by_model.setdefault(record["model"], []).append(record)
        for model, records in sorted(by_model.items()):
            cells = [f"{r['suite']} {r['verdict']['status']} ({headline(r).text})" for r in records]
            print(f"{model:20} " + "; ".join(cells))
        for record in results:
            if record["verdict"]["status"] not in ("PASS", "NO GATE"):
                why = "; ".join(record["verdict"]["reasons"]) or record.get("error") or ""
                print(f"  {record['suite']}[{record['model']}@{device}] "
                      f"{record['verdict']['status']}: {why}")  # fmt: skip


if __name__ == "__main__":
    main()
