"""Harness latency vs a bare runtime loop, on the same model and thread count.

Each round times N inferences in the harness worker (its `bench` operation, as the latency suite
uses it) and N in a bare process that only loops `session.run` (or `interpreter.invoke`), one
after the other, so machine drift hits both alike. Prints the per-round median ratio
harness/bare and the median over rounds. Goal: ratio <= 1.02.

    python benchmarks/bench_overhead.py [--rounds 15] [--samples 2000]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from harness.backends.base import WorkerClient
from harness.backends.local import LocalBackend, worker_environment
from harness.devices import load_profiles

ROOT = Path(__file__).resolve().parent.parent
MODELS = {
    "digits.onnx": ROOT / "examples/digits/models/digits.onnx",
    "digits_float.tflite": ROOT / "examples/digits/models/digits_float.tflite",
}
DATASET = ROOT / "examples/digits/data/digits_test.npz"

# The bare loop: the thinnest timing loop a user would write, in its own process.
BARE = textwrap.dedent(
    """
    import sys, time, numpy as np
    path, threads = sys.argv[1], int(sys.argv[2])
    x = np.load(sys.argv[3])["X"][:1].astype(np.float32)
    if path.endswith(".onnx"):
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        feeds = {session.get_inputs()[0].name: x}
        def once():
            session.run(None, feeds)
    else:
        from ai_edge_litert.interpreter import Interpreter
        interpreter = Interpreter(model_path=path, num_threads=threads)
        interpreter.allocate_tensors()
        index = interpreter.get_input_details()[0]["index"]
        out = interpreter.get_output_details()[0]["index"]
        def once():
            interpreter.set_tensor(index, x)
            interpreter.invoke()
            interpreter.get_tensor(out)
    clock = time.perf_counter_ns
    for line in sys.stdin:
        n, warmup = map(int, line.split())
        for _ in range(warmup):
            once()
        timings = []
        for _ in range(n):
            start = clock()
            once()
            timings.append(clock() - start)
        print(sorted(timings)[n // 2], flush=True)
    """
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    profile = load_profiles()["host"]
    print(
        f"{'model':22} {'harness p50 µs':>15} {'bare p50 µs':>12} {'ratio':>7}  "
        f"(median of {args.rounds} rounds of {args.samples}, {args.threads} thread)"
    )
    for name, path in MODELS.items():
        client = WorkerClient(LocalBackend().start(profile, [], args.threads), "host")
        client.request("hello", 60, formats=["onnx", "tflite"])
        client.request(
            "load", 60, model_id="m", path=str(path), threads=args.threads, dataset=str(DATASET)
        )
        bare = subprocess.Popen(
            [sys.executable, "-c", BARE, str(path), str(args.threads), str(DATASET)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=worker_environment(args.threads),
        )
        assert bare.stdin is not None and bare.stdout is not None
        ratios, ours, theirs = [], [], []
        for _ in range(args.rounds):
            samples = client.request("bench", 120, model_id="m", samples=args.samples, warmup=100)[
                "samples_ns"
            ]
            harness_median = float(np.median(samples))
            bare.stdin.write(f"{args.samples} 100\n")
            bare.stdin.flush()
            bare_median = float(bare.stdout.readline())
            ours.append(harness_median)
            theirs.append(bare_median)
            ratios.append(harness_median / bare_median)
        bare.stdin.close()
        bare.wait()
        client.close()
        print(
            f"{name:22} {statistics.median(ours) / 1e3:15.2f} "
            f"{statistics.median(theirs) / 1e3:12.2f} {statistics.median(ratios):7.3f}"
        )


if __name__ == "__main__":
    main()
