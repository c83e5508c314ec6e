"""What the trust boundary costs honest pull requests: how often a change that leaves the model
alone, or improves it, fails the gate when the base decides (docs/security.md).

    python benchmarks/bench_false_alarms.py [--devices host,x86-64,rpi4] [--runs 3] [--realscale]

Builds a git repository from examples/digits (its config, its three models, its data; its gates
hold accuracy_max_drop 0.01 and latency_max_regression 0.10; memory_max_growth 0.10 is added), then
judges pull requests against it exactly as the reusable workflow's device and gate steps do
(`harness run --baseline <base>`, `harness merge --baseline <base> --expect-commit`):

- a pull request that changes only its README, `--runs` times;
- one that brings a better digits-onnx model (the base ships it with noise on its first layer);

and with --realscale the same README-only pull request on MobileNetV2 fp32 + int8 (the model
of benchmarks/realscale/generate.sh, random weights; its gates as benchmarks/bench_matrix.py
sets them). Prints, per run: the merged verdict, the counts, the items that did not pass, the
policy's listed changes and the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT), str(ROOT / "benchmarks")]

from bench_matrix import REALSCALE_CONFIG, realscale_models  # noqa: E402
from test_trust_boundary import worse_digits  # noqa: E402

HARNESS = str(Path(sys.executable).parent / "harness")
RELATIVE = "accuracy_max_drop = 0.01\nlatency_max_regression = 0.10\nmemory_max_growth = 0.10\n"


def git(root: Path, *arguments: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.email=bench@example.invalid", "-c", "user.name=bench", *arguments],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def commit(root: Path, message: str) -> str:
    git(root, "add", "-A")
    git(root, "commit", "-qm", message, "--allow-empty")
    return git(root, "rev-parse", "HEAD")


def digits_repository(root: Path, worse_base: bool) -> str:
    shutil.copytree(ROOT / "examples" / "digits", root, ignore=shutil.ignore_patterns(".github"))
    config = (root / "harness.toml").read_text()
    # its gates hold accuracy_max_drop 0.01 and latency_max_regression 0.10 already
    config = config.replace("[models.gates]\n", "[models.gates]\nmemory_max_growth = 0.10\n")
    if worse_base:  # the base's gates let its worse model through
        config = config.replace("accuracy_min = 0.95", "accuracy_min = 0.85", 1)
        worse_digits(root / "models" / "digits.onnx")
    (root / "harness.toml").write_text(config)
    git(root, "init", "-q")
    return commit(root, "base")


def realscale_repository(root: Path) -> str:
    models = realscale_models()
    root.mkdir(parents=True)
    for name in ("mobilenet_v2_fp32.tflite", "mobilenet_v2_int8.tflite", "mobilenet_v2_data.npz"):
        shutil.copy(models / name, root / name)
    config = REALSCALE_CONFIG.replace("[models.gates]\n", "[models.gates]\n" + RELATIVE)
    (root / "harness.toml").write_text(config)
    git(root, "init", "-q")
    return commit(root, "base")


def judge(root: Path, base: str, devices: list[str], out: Path) -> tuple[float, dict[str, object]]:
    """The workflow's device steps (one per device) and gate step; (seconds, the summary)."""
    head = git(root, "rev-parse", "HEAD")
    results = out / "results"
    results.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    started = time.perf_counter()
    for device in devices:
        command = [HARNESS, "run", "--config", "harness.toml", "--device", device, "--baseline"]
        command += [base, "--results", str(results / f"{device}.json"), "--"]
        command += ["-q", "--harness-history=none"]
        subprocess.run(command, cwd=root, capture_output=True, text=True, env=env)
    merge = [HARNESS, "merge", str(results), "--out", str(out / "report"), "--expect-device"]
    merge += [",".join(devices), "--baseline", base, "--config", str(root / "harness.toml")]
    merge += ["--expect-commit", head]
    merged = subprocess.run(merge, cwd=out, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    if not (out / "report" / "results.json").is_file():
        raise SystemExit(f"harness merge wrote no report: {merged.stdout[-2000:]}{merged.stderr}")
    document = json.loads((out / "report" / "results.json").read_text())
    records = document["results"]
    counts: dict[str, int] = {}
    for record in records:
        status = str(record["verdict"]["status"])
        counts[status] = counts.get(status, 0) + 1
    not_passed = [
        f"{r['suite']}[{r['model']}@{r['device']}] {r['verdict']['status']}: "
        + "; ".join(r["verdict"]["reasons"])[:200]
        for r in records
        if r["verdict"]["status"] not in ("PASS", "NO GATE")
    ]
    changes = sorted({c for r in records if r["suite"] == "policy"
                      for c in (r["figures"].get("changes") or [])})  # fmt: skip
    verdict = merged.stdout.strip().splitlines()[-1] if merged.stdout.strip() else merged.stderr
    return elapsed, {"exit": merged.returncode, "verdict": verdict, "counts": counts,
                     "not_passed": not_passed, "changes": changes}  # fmt: skip


def report(label: str, elapsed: float, summary: dict[str, object]) -> None:
    print(f"{label:34} exit {summary['exit']}  {elapsed:7.1f} s  {summary['counts']}")
    for line in summary["not_passed"] or []:  # type: ignore[attr-defined]
        print(f"    not passed: {line}")
    for line in summary["changes"] or []:  # type: ignore[attr-defined]
        print(f"    policy lists: {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="host,x86-64,rpi4")
    parser.add_argument("--runs", type=int, default=3, help="README-only pull requests")
    parser.add_argument("--realscale", action="store_true", help="also MobileNetV2 fp32 + int8")
    args = parser.parse_args()
    devices = args.devices.split(",")
    load = os.getloadavg()[0]
    print(f"devices {', '.join(devices)}; load average {load:.1f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="false-alarms-") as temporary:
        folder = Path(temporary)
        root = folder / "digits"
        base = digits_repository(root, worse_base=False)
        for run in range(args.runs):
            (root / "README.md").write_text(f"documentation, revision {run}\n")
            commit(root, f"README {run}")
            elapsed, summary = judge(root, base, devices, folder / f"readme-{run}")
            report(f"digits, README only ({run + 1}/{args.runs})", elapsed, summary)
        better = folder / "better"
        base = digits_repository(better, worse_base=True)
        shutil.copy(ROOT / "examples" / "digits" / "models" / "digits.onnx",
                    better / "models" / "digits.onnx")  # fmt: skip
        commit(better, "a better digits-onnx")
        elapsed, summary = judge(better, base, devices, folder / "better-run")
        report("digits, a better model", elapsed, summary)
        if args.realscale:
            real = folder / "realscale"
            base = realscale_repository(real)
            (real / "README.md").write_text("documentation\n")
            commit(real, "README")
            elapsed, summary = judge(real, base, devices, folder / "realscale-run")
            report("MobileNetV2 fp32 + int8, README only", elapsed, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
