"""Language models through the harness, at the field's scale and at the example's.

Default: field-scale decoders (random weights of published shapes: SmolLM2-135M, SmolLM2-360M,
Qwen2.5-0.5B; benchmarks/make_slm_models.py makes them) in both runtimes (ONNX Runtime GenAI
fp32/int8/int4, llama.cpp GGUF F16/Q8_0/Q4_K_M), every suite through pytest on each device, one
table row per model x runtime x device: the wall time of the suites, each headline figure and
its fidelity label (measured natively, emulated under QEMU, estimated by the timing model).
Random weights: time, memory and the runtimes are real; perplexity and agreement are not
quality (a random model's perplexity is about its vocabulary's size), and the table says so.

    python benchmarks/bench_slm.py [--shapes smollm2-135m] [--variants onnx-int4 q4_k_m.gguf]
                                   [--device host --device rpi4] [--cache DIR --passes 2]
                                   [--log DIR]

--cache DIR: what boards answered and what the timing plugin counted are kept in DIR (empty at
first: a cold run), everything else (device images, llama.cpp sets, counting plugins, models)
linked from the real cache; --passes 2 runs the table again on it (warm). Each row gives the
load average when it ended: the suites' wall time on a shared machine depends on it.

--example: the example's trained 3.2 M models natively on this machine instead: perplexity, time
to first token by prompt length, decode step time, and peak memory by context length, each
variant in a worker of its own (one thread). With --estimate, also the timing model's estimates
of one greedy run (a 32-token prompt, 8 tokens) on this machine's x86-64 (counted under
qemu-x86_64) beside the natively measured figures, and on a Raspberry Pi 4 (cortex-a72).

    python benchmarks/bench_slm.py --example [--runs 30] [--estimate]
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
import xml.etree.ElementTree as ElementTree
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np

from harness import language_scores, stats
from harness.backends.base import WorkerClient
from harness.backends.local import LocalBackend
from harness.devices import load_profiles

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("slm-float", "slm-int8", "slm-int4", "slm-random")
TIMEOUT = 300.0


def cached_models() -> Path:
    script = ROOT / "examples" / "slm" / "build_model.py"
    done = subprocess.run(
        [sys.executable, str(script), "--venv", "--cache-only"],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(done.stdout.strip().splitlines()[-1])


def measure(folder: Path, text: str, runs: int) -> None:
    client = WorkerClient(LocalBackend().start(load_profiles()["host"], [], 1), "host")
    try:
        empty = client.request("hello", TIMEOUT, formats=["genai"])["empty_peak_kb"] / 1024
        loaded = client.request("load", TIMEOUT, model_id="m", path=str(folder), threads=1)
        nll = client.request("perplexity", TIMEOUT, model_id="m", text=text, window=64, stride=32)[
            "nll"
        ]
        print(
            f"{folder.name}: perplexity {language_scores.perplexity(nll):.3f} "
            f"({len(nll)} tokens); empty worker {empty:.1f} MB, "
            f"after load {loaded['peak_kb'] / 1024:.1f} MB"
        )
        # First, in growing order: VmHWM is a high-water mark, so each reading is the peak so far.
        for context in (64, 128, 256):
            filled = client.request(
                "fill_context",
                TIMEOUT,
                model_id="m",
                text=text,
                context_tokens=context,
                new_tokens=16,
            )
            print(f"  context {context:>3}: peak {filled['peak_kb'] / 1024:.1f} MB")
        for prompt in (8, 32, 128):
            bench = client.request(
                "decode_bench",
                TIMEOUT,
                model_id="m",
                text=text,
                prompt_tokens=prompt,
                new_tokens=16,
                repeats=runs,
            )
            ttft = stats.summary(np.asarray(bench["first_token_ns"][1:]) / 1e6)
            steps = stats.summary(np.concatenate(bench["step_ns"][1:]) / 1e6)
            print(
                f"  prompt {prompt:>3}: ttft p50 {ttft.p50:.3f} p90 {ttft.p90:.3f} ms; decode "
                f"p50 {steps.p50:.3f} p90 {steps.p90:.3f} ms "
                f"({language_scores.tokens_per_second(steps.p50):.0f} tokens/s)"
            )
    finally:
        client.close()


def estimates(folder: Path, text: str, runs: int) -> None:
    """Timing-model estimates of ttft and decode step against the native ones (32 + 8 tokens)."""
    from harness.timing import estimate_generation, load_cpu_model

    prompt, new = 32, 8
    profiles = load_profiles()
    client = WorkerClient(LocalBackend().start(profiles["host"], [], 1), "host")
    try:
        client.request("hello", TIMEOUT, formats=["genai"])
        client.request("load", TIMEOUT, model_id="m", path=str(folder), threads=1)
        bench = client.request(
            "decode_bench", TIMEOUT, model_id="m", text=text, prompt_tokens=prompt,
            new_tokens=new, repeats=runs,
        )  # fmt: skip
    finally:
        client.close()
    ttft = float(np.median(bench["first_token_ns"][1:])) / 1e6
    step = float(np.median(np.concatenate(bench["step_ns"][1:]))) / 1e6
    print(f"  native x86-64: ttft p50 {ttft:.4f} ms, decode p50 {step:.4f} ms ({runs - 1} runs)")
    for cpu in ("x86-64-host-fitted", "x86-64-host"):
        model = load_cpu_model(cpu)
        est = estimate_generation(profiles["host"], folder, text, prompt, new, cpu=model)
        print(
            f"  {cpu} estimate: ttft {est.ttft.ms:.4f} ms ({est.ttft.ms / ttft - 1:+.0%}), "
            f"decode {est.decode.ms:.4f} ms ({est.decode.ms / step - 1:+.0%}); "
            f"band ±{model.band_fraction or 0:.0%}"
        )
    est = estimate_generation(profiles["rpi4"], folder, text, prompt, new)
    print(
        f"  rpi4 estimate: ttft {est.ttft} ; decode {est.decode.ms:.3f} ms/token "
        f"({est.tokens_per_s:.0f} tokens/s), {est.decode.instructions_per_inference:,.0f} "
        "instructions per step"
    )


# The field-scale table ------------------------------------------------------------------------

BENCH_LINES = 120  # of the example's text: ~870 tokens, 13 perplexity windows of 128
SCALE_VARIANTS = ("onnx-fp32", "onnx-int8", "onnx-int4", "f16.gguf", "q8_0.gguf", "q4_k_m.gguf")
BASES = {"onnx": "onnx-fp32", "gguf": "f16.gguf"}  # what a quantized variant is compared with
# Gates wide enough that a healthy model of these sizes passes: they make the suites decide
# (PASS or FAIL, never a verdict without a gate), as a user's config would.
SCALE_CONFIG = """\
devices = ["host"]
timeout_s = 1800

[robustness]
examples = 10

"""
SCALE_MODEL = """\
[[models]]
name = "{name}"
task = "generate"
path = "{path}"
text = "data/bench.txt"
prompts = "data/prompts.jsonl"
{parity}[models.generate]
prompt_tokens = 32
new_tokens = 16
context_tokens = 512
window = 128
stride = 64
[models.gates]
ttft_p90_ms_max = 2000.0
tokens_per_s_min = 2
memory_peak_mb_max = 3500
"""


def scale_models(shapes: list[str], variants: list[str]) -> Path:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "make_slm_models.py"), "--shapes", *shapes,
         "--variants", *variants],
        text=True, stdout=subprocess.PIPE,
    )  # fmt: skip
    if done.returncode:
        sys.exit("make_slm_models.py failed")
    return Path(done.stdout.strip().splitlines()[-1])


def runtime_of(variant: str) -> str:
    return "gguf" if variant.endswith(".gguf") else "onnx"


def own_cache(folder: Path) -> dict[str, str]:
    """The environment of a cache folder of its own for the board's answers and the timing
    counts (HARNESS_CACHE=`folder`, empty of them at first), with every other entry of the real
    cache linked into it: nothing is rebuilt, only what a cold run would compute again."""
    real = Path(os.environ.get("HARNESS_CACHE") or Path.home() / ".cache" / "harness")
    for source, target in ((real, folder), (real / "timing", folder / "timing")):
        target.mkdir(parents=True, exist_ok=True)
        for entry in source.iterdir() if source.is_dir() else ():
            if entry.name not in ("answers", "timing", "counts"):
                link = target / entry.name
                if not link.exists() and not link.is_symlink():
                    link.symlink_to(entry)
    env = {k: v for k, v in os.environ.items() if k != "HARNESS_ANSWERS_CACHE"}
    return env | {"HARNESS_CACHE": str(folder)}


def scale_run(
    folder: Path,
    shape: str,
    variant: str,
    device: str,
    root: Path,
    parity: bool = True,
    env: dict[str, str] | None = None,
    log: Path | None = None,
) -> tuple[float, dict[str, Any], dict[str, float]]:
    """pytest on one model and device: (wall seconds, results by suite, seconds by suite)."""
    name = f"{shape}-{variant.removesuffix('.gguf')}"
    base = BASES[runtime_of(variant)]
    models = [(variant, "")]
    if variant != base and parity:
        models.append((base, ""))
        models[0] = (variant, f'parity_with = "{shape}-{base.removesuffix(".gguf")}"\n')
    config = SCALE_CONFIG
    for entry, parity_line in models:
        entry_name = f"{shape}-{entry.removesuffix('.gguf')}"
        config += SCALE_MODEL.format(
            name=entry_name, path=folder / shape / entry, parity=parity_line
        )
    (root / "harness.toml").write_text(config)
    out, junit = root / f"{name}@{device}.json", root / f"{name}@{device}.xml"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", f"--device={device}", "-k", f"{name} and {device}",
         f"--harness-json={out}", f"--junitxml={junit}", "-p", "no:cacheprovider", "-q",
         "--rootdir", str(root)],
        cwd=root, capture_output=True, text=True, env=env,
    )  # fmt: skip
    wall = time.monotonic() - started
    if log is not None:  # pytest's own output: progress lines, the gates table
        log.mkdir(parents=True, exist_ok=True)
        (log / f"{name}@{device}-{int(time.time())}.log").write_text(done.stdout + done.stderr)
    if not out.is_file():
        sys.exit(f"pytest wrote no results for {name} on {device}:\n{done.stdout[-3000:]}")
    found = {r["suite"]: r for r in json.loads(out.read_text())["results"] if r["model"] == name}
    seconds = {}
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        suite = case.get("name", "").split("[", 1)[0]
        seconds[suite] = float(case.get("time", 0.0))
    return wall, found, seconds


def _figure(found: dict[str, Any], suite: str, name: str, digits: int = 1) -> str:
    value = found.get(suite, {}).get("figures", {}).get(name)
    return "-" if value is None else f"{value:.{digits}f}"


def scale_table(
    shapes: list[str],
    variants: list[str],
    devices: list[str],
    parity: bool = True,
    cache: Path | None = None,
    passes: int = 1,
    log: Path | None = None,
) -> None:
    needed = [v for v in SCALE_VARIANTS if v in variants or (parity and v in BASES.values())]
    folder = scale_models(shapes, needed)
    header: tuple[str, ...] = ("model", "runtime", "device", "suites s", "verdicts", "ppl*")
    header += ("KLD*", "agree*", "ttft p50 ms", "prefill t/s", "decode t/s", "peak MB")
    header += ("fidelity", "slowest", "load", "pass")
    env = own_cache(cache) if cache is not None else None
    print("\t".join(header), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-slm-") as scratch:
        root = Path(scratch)
        shutil.copytree(folder / shapes[0] / "data", root / "data")
        lines = (root / "data" / "valid.txt").read_text().splitlines(keepends=True)
        (root / "data" / "bench.txt").write_text("".join(lines[:BENCH_LINES]))
        for run, shape, variant, device in product(range(1, passes + 1), shapes, variants, devices):
            wall, found, seconds = scale_run(folder, shape, variant, device, root, parity, env, log)
            verdicts: dict[str, int] = {}
            for record in found.values():
                status = record["verdict"]["status"]
                verdicts[status] = verdicts.get(status, 0) + 1
            generation = found.get("generation", {})
            figures = generation.get("figures", {})
            decode = figures.get("estimated_tokens_per_s", figures.get("tokens_per_s"))
            fidelity = generation.get("fidelity", "-")
            if "estimated_tokens_per_s" in figures:
                fidelity += " (decode: estimated)"
            memory = found.get("memory", {}).get("figures", {})
            peak = memory.get("board_peak_mb", memory.get("peak_mb"))
            slowest = max(seconds.items(), key=lambda kv: kv[1], default=("-", 0.0))
            row = (
                f"{shape}-{variant.removesuffix('.gguf')}",
                "llama.cpp" if runtime_of(variant) == "gguf" else "onnxruntime-genai",
                device,
                f"{wall:.0f}",
                " ".join(f"{k} {v}" for k, v in sorted(verdicts.items())),
                _figure(found, "perplexity", "perplexity", 0),
                _figure(found, "token_parity", "kld_mean", 3),
                _figure(found, "token_parity", "token_agreement", 2),
                _figure(found, "generation", "ttft_p50_ms", 1),
                _figure(found, "generation", "prefill_tokens_per_s", 0),
                "-" if decode is None else f"{decode:.1f}",
                "-" if peak is None else f"{peak:.0f}",
                fidelity,
                f"{slowest[0]} {slowest[1]:.0f} s",
                " ".join(f"{x:.1f}" for x in os.getloadavg()),
                f"{run} ({'cold' if run == 1 and cache is not None else 'again'})",
            )
            print("\t".join(row), flush=True)
            for suite, record in found.items():  # why an item did not pass
                if record["verdict"]["status"] in ("FAIL", "INCONCLUSIVE", "ERROR"):
                    reasons = record["verdict"].get("reasons") or [record.get("error")]
                    print(f"    {suite}: {'; '.join(map(str, reasons))[:300]}")
    print(
        "* random weights: perplexity (about the vocabulary's size), KL divergence and top-1 "
        "agreement against the fp32/F16 variant are not quality; they show the suites ran."
    )


def main() -> None:
    from harness.modelgen.decoder import SHAPES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--example", action="store_true", help="the example's trained models")
    parser.add_argument("--runs", type=int, default=30, help="--example: timed runs per length")
    parser.add_argument(
        "--estimate", action="store_true", help="--example: the timing model's estimates too"
    )
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=["smollm2-135m"])
    parser.add_argument("--variants", nargs="+", choices=SCALE_VARIANTS,
                        default=list(SCALE_VARIANTS))  # fmt: skip
    parser.add_argument("--device", action="append", help="repeatable; default host")
    parser.add_argument(
        "--no-parity", action="store_true", help="no token_parity (no fp32/F16 base to build)"
    )
    parser.add_argument(
        "--cache", type=Path, help="the boards' answers and timing counts here (empty: cold)"
    )
    parser.add_argument("--passes", type=int, default=1, help="the table this many times")
    parser.add_argument("--log", type=Path, help="each pytest run's output into this folder")
    args = parser.parse_args()
    if not args.example:
        scale_table(args.shapes, args.variants, args.device or ["host"], not args.no_parity,
                    args.cache, args.passes, args.log)  # fmt: skip
        return
    models = cached_models()
    text = (models / "data" / "valid.txt").read_text()
    for name in VARIANTS:
        measure(models / "models" / name, text, args.runs + 1)  # the first run is a warm-up
        if args.estimate and name != "slm-random":
            estimates(models / "models" / name, text, 10 * args.runs + 1)


if __name__ == "__main__":
    main()
