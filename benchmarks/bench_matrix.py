"""Wall time of the whole device matrix on the digits model: host, x86-64 and emulated rpi4;
accuracy, latency and memory. Image builds are excluded (run `harness images build` first).

cold: the first session after dropping the page cache (root only; otherwise just the first run);
warm: the same session again right after. Goal on 2 cores: < 3 min cold, < 60 s warm.

    python benchmarks/bench_matrix.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMAND = [
    sys.executable,
    "-m",
    "pytest",
    "-q",
    "-p",
    "no:cacheprovider",
    "--device=host",
    "--device=x86-64",
    "--device=rpi4",
    "-k",
    "digits-onnx and (accuracy or latency or memory)",
]


def drop_caches() -> bool:
    if os.geteuid() != 0:
        return False
    subprocess.run(["sync"], check=True)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def run(folder: Path) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(COMMAND, cwd=folder, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-2000:], file=sys.stderr)
    return elapsed, summary


def main() -> None:
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary) / "digits"
        shutil.copytree(ROOT / "examples" / "digits", folder)
        dropped = drop_caches()
        cold, cold_summary = run(folder)
        warm, warm_summary = run(folder)
    label = "cold (page cache dropped)" if dropped else "cold (first run; cache not dropped)"
    print(
        f"matrix host + x86-64 + rpi4, digits-onnx, accuracy/latency/memory, {os.cpu_count()} cores"
    )
    print(f"{label:38} {cold:7.1f} s   {cold_summary}")
    print(f"{'warm':38} {warm:7.1f} s   {warm_summary}")
    print(
        f"goals: cold < 180 s ({'met' if cold < 180 else 'MISSED'}), "
        f"warm < 60 s ({'met' if warm < 60 else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
