"""The example's language models natively on this machine: perplexity, time to first token by
prompt length, decode step time, and peak memory by context length, each variant in a worker of
its own (one thread), as the harness measures them. With --estimate, also the timing model's
estimates of one greedy run (a 32-token prompt, 8 tokens): on this machine's x86-64 (counted
under qemu-x86_64, with the fitted and the pipe model of this CPU) beside the natively measured
figures, which gives their error, and on a Raspberry Pi 4 (cortex-a72), where nothing native
exists to compare with.

    python benchmarks/bench_slm.py [--runs 30] [--estimate]

Needs the cached models: python examples/slm/build_model.py --venv --cache-only
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

from harness import stats, textscore
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
            f"{folder.name}: perplexity {textscore.perplexity(nll):.3f} "
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
                f"({textscore.tokens_per_second(steps.p50):.0f} tokens/s)"
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="timed runs per prompt length")
    parser.add_argument(
        "--estimate", action="store_true", help="also the timing model's estimates (needs QEMU)"
    )
    args = parser.parse_args()
    models = cached_models()
    text = (models / "data" / "valid.txt").read_text()
    for name in VARIANTS:
        measure(models / "models" / name, text, args.runs + 1)  # the first run is a warm-up
        if args.estimate and name != "slm-random":
            estimates(models / "models" / name, text, 10 * args.runs + 1)


if __name__ == "__main__":
    main()
