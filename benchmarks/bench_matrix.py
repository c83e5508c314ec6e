"""Wall time of the whole device matrix: host, x86-64 and emulated rpi4. Image builds are
excluded (run `harness images build` first).

cold: the first session after dropping the page cache (root only; otherwise just the first run);
warm: the same session again right after. The real-scale case's cold session starts with an empty
answer cache of its own (HARNESS_ANSWERS_CACHE, a fresh folder: the emulated boards answer every
sampled row), and its warm session finds there what the cold one answered. Device images and
timing counts ($HARNESS_CACHE/timing) stay as they are in both. The load average is printed
before each session: the machine may be shared.

    python benchmarks/bench_matrix.py              # digits-onnx, accuracy/latency/memory
    python benchmarks/bench_matrix.py --realscale  # MobileNetV2 fp32 + int8, 500 samples,
                                                   # every suite (benchmarks/realscale/generate.sh
                                                   # makes the models)
    python benchmarks/bench_matrix.py --determinism  # the same rows through two fresh rpi4
                                                     # workers: are the answers bit-identical?

Goals on 2 cores: digits < 3 min cold, < 60 s warm; real scale < 5 min cold, < 2 min warm, every
suite answered. The real-scale case prints what each suite took (pytest's JUnit times).
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
REALSCALE_CONFIG = """\
devices = ["host", "x86-64", "rpi4"]
[robustness]
examples = 10
[[models]]
name = "mnv2-fp32"
path = "mobilenet_v2_fp32.tflite"
dataset = "mobilenet_v2_data.npz"
[models.gates]
accuracy_min = 0.0
size_kb_max = 20000
latency_p90_ms_max = 500
memory_peak_mb_max = 1000
[[models]]
name = "mnv2-int8"
path = "mobilenet_v2_int8.tflite"
dataset = "mobilenet_v2_data.npz"
parity_with = "mnv2-fp32"
[models.gates]
size_kb_max = 6000
latency_p90_ms_max = 500
memory_peak_mb_max = 1000
device_top1_min = 0.5
"""
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


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run(
    folder: Path, command: list[str] = COMMAND, env: dict[str, str] | None = None
) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True, check=False, env=env)
    elapsed = time.perf_counter() - started
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-2000:], file=sys.stderr)
    return elapsed, summary


def realscale_models() -> Path:
    found = sorted(Path.home().glob(".cache/harness/models/realscale-*/mobilenet_v2_data.npz"))
    if not found:
        raise SystemExit(
            "no generated real-scale models: run `bash benchmarks/realscale/generate.sh` first"
        )
    return found[-1].parent


def suite_times(junit: Path) -> dict[str, float]:
    """Seconds per suite, summed over models and devices, from pytest's JUnit XML."""
    import xml.etree.ElementTree as ElementTree

    times: dict[str, float] = {}
    for case in ElementTree.parse(junit).iter("testcase"):
        suite = case.get("name", "?").split("[")[0]
        times[suite] = times.get(suite, 0.0) + float(case.get("time", 0))
    return times


def realscale() -> None:
    models = realscale_models()
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary) / "realscale"
        folder.mkdir()
        for name in ("mobilenet_v2_fp32.tflite", "mobilenet_v2_int8.tflite",
                     "mobilenet_v2_data.npz"):  # fmt: skip
            (folder / name).symlink_to(models / name)
        (folder / "harness.toml").write_text(REALSCALE_CONFIG)
        command = [*COMMAND[:6], "--junitxml=junit.xml", "--harness-json=results.json"]
        env = os.environ | {"HARNESS_ANSWERS_CACHE": str(Path(temporary) / "answers")}
        dropped = drop_caches()
        cold_load = load_average()
        cold, cold_summary = run(folder, command, env)
        cold_suites = suite_times(folder / "junit.xml")
        cached_cold = answers_from_cache(folder / "results.json")
        warm_load = load_average()
        warm, warm_summary = run(folder, command, env)
        warm_suites = suite_times(folder / "junit.xml")
        cached_warm = answers_from_cache(folder / "results.json")
        unanswered = not_applied(folder / "results.json")
    label = "cold (page cache dropped)" if dropped else "cold (first run; cache not dropped)"
    print(
        f"matrix host + x86-64 + rpi4, MobileNetV2 fp32 + int8, 500 samples, {os.cpu_count()} cores"
    )
    print(f"{label:38} {cold:7.1f} s   {cold_summary}   (load before: {cold_load})")
    print(f"{'warm':38} {warm:7.1f} s   {warm_summary}   (load before: {warm_load})")
    print(f"items with board answers from the cache: cold {cached_cold}, warm {cached_warm}")
    print("seconds per suite (all models and devices): cold / warm")
    for suite in sorted(cold_suites, key=lambda s: -cold_suites[s]):
        print(f"  {suite:14} {cold_suites[suite]:7.1f} / {warm_suites.get(suite, 0):7.1f}")
    print("checks not applied: " + ("; ".join(unanswered) if unanswered else "none"))
    print(
        f"goals: cold < 300 s ({'met' if cold < 300 else 'MISSED'}), "
        f"warm < 120 s ({'met' if warm < 120 else 'MISSED'})"
    )


def answers_from_cache(results: Path) -> int:
    import json

    return sum(1 for r in json.loads(results.read_text())["results"]
               if (r.get("figures") or {}).get("board_answers"))  # fmt: skip


def not_applied(results: Path) -> list[str]:
    import json

    return [
        f"{r['suite']}[{r['model']}@{r['device']}]: {c['message']}"
        for r in json.loads(results.read_text())["results"]
        for c in r["verdict"]["checks"]
        if c["passed"] is None
    ]


def determinism(rows: tuple[int, ...] = (0, 250, 499)) -> None:
    """What the answer cache rests on, at real scale: MobileNetV2 fp32 and int8 answer the same
    dataset rows in two fresh rpi4 workers (the profile's threads); are the bytes the same?"""
    from harness.config import parse_config
    from harness.devices import load_profiles
    from harness.pairs import WorkerHandle

    models = realscale_models()
    import tomllib

    config = parse_config(tomllib.loads(REALSCALE_CONFIG), models / "harness.toml")
    rpi4 = load_profiles()["rpi4"]
    print(f"rpi4 ({rpi4.threads} threads), rows {list(rows)}, two fresh workers per model")
    for model in config.models:
        answers = []
        for _ in range(2):
            worker = WorkerHandle(model, rpi4, config)
            started = time.perf_counter()
            try:
                worker.request("hold", rows=[0, *rows])
                answers.append(
                    worker.request("evaluate", task="classification", indices=list(rows))
                )
            finally:
                worker.close()
            elapsed = time.perf_counter() - started
        first, second = answers
        same = first["values"].tobytes() == second["values"].tobytes()
        print(
            f"  {model.name:10} top-1 {first['top1']} / {second['top1']}; scores "
            f"{'bit-identical' if same else 'DIFFER'} ({elapsed:.1f} s per worker)"
        )


def main() -> None:
    if "--realscale" in sys.argv[1:]:
        realscale()
        return
    if "--determinism" in sys.argv[1:]:
        determinism()
        return
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
