"""Wall time of a model repository's pull-request check, run end to end under act on this machine
(tests/actlocal.py: the reusable model-gate.yml, the actions from ../shared/actions, act's cache
and artifact servers), cold and warm, on host + x86-64 + rpi4:

    python benchmarks/bench_pr_check.py                 # the digits example
    python benchmarks/bench_pr_check.py --realscale     # MobileNetV2 fp32 + int8 (500 samples)

cold: a fresh act state: no Actions cache entry (no board answers, timing counts or counting
plugin), the jobs' ~/.cache/harness empty but for what the machine holds as a self-hosted runner
would (the device images in Docker). warm: the same pull request again, every cache restored.
Each run is a README-only change against the models' merge base (`--baseline`: paired, with
the base's models); the verdict and each job's step times are printed beside the wall time.

--realscale needs the models: `nice bash benchmarks/realscale/generate.sh --only mobilenet_v2`
(a ~1.7 GB TensorFlow venv of its own; the models land in ~/.cache/harness/models).
Figures are measured here, on a shared 2-core VM: compare them as ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import actlocal  # noqa: E402

GOALS_S = {  # issue 22
    ("digits", "warm"): 120,
    ("realscale", "warm"): 240,
    ("realscale", "cold"): 600,
}
REALSCALE_CONFIG = """# MobileNetV2 fp32 + full int8, random weights (latency does not read them)
devices = ["host", "x86-64", "rpi4"]

[[models]]
name = "mnv2-fp32"
path = "models/mobilenet_v2_fp32.tflite"
dataset = "data/mobilenet_v2_data.npz"
[models.gates]
accuracy_min = 0.9
device_top1_min = 0.9
latency_p90_ms_max = 200
latency_max_regression = 0.10
memory_peak_mb_max = 900
size_kb_max = 20000

[[models]]
name = "mnv2-int8"
path = "models/mobilenet_v2_int8.tflite"
dataset = "data/mobilenet_v2_data.npz"
parity_with = "mnv2-fp32"
[models.gates]
device_top1_min = 0.9
latency_p90_ms_max = 200
latency_max_regression = 0.10
memory_peak_mb_max = 900
size_kb_max = 8000
"""


def realscale_models() -> Path:
    roots = sorted(
        (actlocal.act_cache().parent / "models").glob("realscale-*/mobilenet_v2_fp32.tflite")
    )
    if not roots:
        raise SystemExit(
            "no real-scale models: run `nice bash benchmarks/realscale/generate.sh --only "
            "mobilenet_v2` first"
        )
    return Path(roots[-1]).parent


def repository(root: Path, wheel: Path, realscale: bool) -> actlocal.Repository:
    repo = actlocal.example_repository(root, wheel, "host, x86-64, rpi4")
    if realscale:
        models = realscale_models()
        files: dict[str, bytes | str | None] = {
            "harness.toml": REALSCALE_CONFIG,
            "models/mobilenet_v2_fp32.tflite": (models / "mobilenet_v2_fp32.tflite").read_bytes(),
            "models/mobilenet_v2_int8.tflite": (models / "mobilenet_v2_int8.tflite").read_bytes(),
            "data/mobilenet_v2_data.npz": (models / "mobilenet_v2_data.npz").read_bytes(),
        }
        for old in (
            "models/digits.onnx",
            "models/digits_float.tflite",
            "models/digits_int8.tflite",
        ):
            files[old] = None
        files["data/digits_test.npz"] = None
        repo.commit("real-scale models", files)
        actlocal.git(repo.work, "push", "-q", "origin", "main")
    return repo


def step_times(run: actlocal.Run) -> dict[str, float]:
    """Seconds per (job, step) from act's `✅ Success - Main NAME [1m2.5s]` lines, the longest."""
    found: dict[str, float] = {}
    for line in run.log.splitlines():
        match = re.match(
            r"^\[[^/]*/[^/]*/([^\]]+?)\s*\]\s+[✅❌]\s+\w+ - Main (.*) \[(.*)\]$", line
        )
        if not match:
            continue
        seconds = 0.0
        for amount, unit in re.findall(r"([\d.]+)(ms|m|s)", match[3]):
            seconds += float(amount) * {"ms": 0.001, "m": 60, "s": 1}[unit]
        if seconds >= 5:
            found[f"{match[1]}: {match[2]}"] = seconds
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realscale", action="store_true", help="MobileNetV2 fp32 + int8")
    parser.add_argument("--warm-runs", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args()
    why = actlocal.missing()
    if why:
        raise SystemExit(f"cannot run the workflows here: {why}")
    scale = "realscale" if args.realscale else "digits"
    folder = Path(tempfile.mkdtemp(prefix=f"bench-pr-check-{scale}-"))
    figures: list[dict[str, object]] = []
    try:
        wheel = actlocal.build_wheel(folder / "wheel")
        repo = repository(folder / "repository", wheel, args.realscale)
        act = actlocal.Act(folder / "state", wheel)
        workflow = repo.work / ".github" / "workflows" / "model-gate.yml"
        with actlocal.branch(repo, "readme"):
            repo.commit("readme", {"README.md": "# a README-only change\n"})
            event = actlocal.pull_request_event(repo, 1, [])
            for index, kind in enumerate(["cold"] + ["warm"] * args.warm_runs):
                started = time.monotonic()
                run = act.run(repo, "pull_request", event, workflow, timeout=3600)
                wall = time.monotonic() - started
                verdict = run.outputs("gate").get("verdict", "?")
                goal = GOALS_S.get((scale, kind))
                print(
                    f"{scale} {kind} #{index}: {wall:.0f} s, exit {run.status}, verdict "
                    f"{verdict}" + (f" (goal < {goal} s)" if goal else ""),
                    flush=True,
                )
                for step, seconds in sorted(step_times(run).items(), key=lambda x: -x[1])[:12]:
                    print(f"    {seconds:7.1f} s  {step}")
                figures.append(
                    {"scale": scale, "kind": kind, "wall_s": wall, "exit": run.status,
                     "verdict": verdict, "steps": step_times(run)}
                )  # fmt: skip
                if run.status and verdict not in ("PASS", "FAIL"):
                    (folder / f"run-{index}.log").write_text(run.log)
                    print(f"    log: {folder / f'run-{index}.log'}")
        if len(figures) > 1:
            cold = float(figures[0]["wall_s"])  # type: ignore[arg-type]
            for entry in figures[1:]:
                print(f"warm / cold: {float(entry['wall_s']) / cold:.2f}")  # type: ignore[arg-type]
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
