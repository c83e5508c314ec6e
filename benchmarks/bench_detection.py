"""Detection power of the latency regression gate.

(a) A base model and two variants — one identical, one doing 5% more work — compared N times
against the base, each trial in a fresh worker with base and variant interleaved in rounds
(`--baseline` mode). A trial *detects* a regression when the paired ratio's whole confidence
interval lies above 1 (the gate `latency_max_regression = 0` fails); it is a *false alarm* when
that happens for the identical variant. Reported for wall-clock, and for instruction counts
(counting mode, deterministic) where the QEMU counting plugin is available.

(b) How the time to a decision grows as the effect shrinks.

    python benchmarks/bench_detection.py [--trials 40] [--budget 6] [--confidence 0.99]
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from harness.baseline import BaselineContext
from harness.config import GateSpec, HarnessConfig, LatencySettings, ModelSpec
from harness.devices import load_profiles
from harness.modelgen import onnx as onnx_models
from harness.pairs import Pair, PairPool, WorkerHandle
from harness.suites import latency

STEPS = 200  # loop steps of the base model; a variant with 5% more work has 210
SIZE = 48  # matrix size per step: ~ a few µs per step, a fraction of a ms per inference


def trial(pool: PairPool, model: ModelSpec, base: ModelSpec) -> tuple[str, float, int, float]:
    """(decision, seconds, rounds, ratio) of one paired comparison in a fresh worker."""
    profile = load_profiles()["host"]
    worker = WorkerHandle(model, profile, pool.config, base=base)
    context = BaselineContext(label="base", base=base)
    pair = Pair(model, profile, pool.config, worker, context, pool.shared)
    started = time.monotonic()
    try:
        figures = latency.measure(pair).figures
    finally:
        worker.close()
    elapsed = time.monotonic() - started
    if figures.get("ratio_low", 0) > 1.0:
        decision = "fail"
    elif figures.get("ratio_high", 2) <= 1.0:
        decision = "pass"
    else:
        decision = "undecided"
    # Too few rounds for an interval: no ratio at all (the item says INCONCLUSIVE).
    return decision, elapsed, int(figures["rounds"]), float(figures.get("ratio", math.nan))


def twin(path: Path) -> Path:
    """The same graph in other bytes (a doc string): the same work, which the latency suite does
    not decide by identity (a byte-identical model cannot regress), so it is measured."""
    import onnx

    model = onnx.load(str(path))
    model.doc_string = "twin"
    out = path.with_name(f"{path.stem}-twin.onnx")
    onnx.save(model, str(out))
    return out


def counted_ratio(base: Path, variant: Path) -> float | None:
    """Instructions per inference, variant / base, or None where counting is unavailable."""
    try:
        from harness.backends.qemu import count_instructions
    except ImportError:
        return None
    profile = load_profiles()["x86-64"]
    try:
        runs = [count_instructions(profile, path, samples=20) for path in (base, variant)]
    except Exception as exc:  # no qemu-user / plugin here: say so, do not guess
        print(f"counting unavailable: {exc}")
        return None
    return runs[1].instructions_per_inference / runs[0].instructions_per_inference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument(
        "--budget",
        type=float,
        default=10.0,
        help="seconds per comparison (latency.time_budget_s; 10 is the default)",
    )
    parser.add_argument("--confidence", type=float, default=0.99)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        paths = {
            work: onnx_models.slow(root / f"loop{work}.onnx", iterations=work, size=SIZE)
            for work in (STEPS, STEPS + 1, STEPS + 4, STEPS + 10, STEPS + 20, STEPS + 40)
        }
        config = HarnessConfig(
            source=root / "harness.toml",
            latency=LatencySettings(
                time_budget_s=args.budget, confidence=args.confidence, warmup=5
            ),
            profiles=load_profiles(),
        )
        spec = ModelSpec(
            name="m",
            path=paths[STEPS],
            input_shapes={"x": (1, 8)},
            gates=GateSpec(latency_max_regression=0.0),
        )
        base = replace(spec, path=paths[STEPS])
        pool = PairPool(config)
        print(
            f"(a) {args.trials} trials each, {args.budget:g} s budget, "
            f"{args.confidence:.0%} confidence, gate: regression > 0"
        )
        identical = twin(paths[STEPS])
        for label, work in (("identical", STEPS), ("+5% work", STEPS + 10)):
            path = identical if work == STEPS else paths[work]
            results = [trial(pool, replace(spec, path=path), base) for _ in range(args.trials)]
            detected = sum(r[0] == "fail" for r in results) / len(results)
            times = [r[1] for r in results if r[0] == "fail"] or [float("nan")]
            ratios = [r[3] for r in results]
            name = "false-alarm rate" if work == STEPS else "detection rate"
            print(
                f"  wall-clock {label:10} {name:17} {detected:6.1%}   median ratio "
                f"{statistics.median(ratios):.4f}   median time to detect "
                f"{statistics.median(times):.2f} s"
            )
        for label, work in (("identical", STEPS), ("+0.5% work", STEPS + 1)):
            ratio = counted_ratio(paths[STEPS], paths[work])
            if ratio is not None:
                print(
                    f"  counts     {label:10} instructions ratio {ratio:.6f} "
                    f"({'regression' if ratio > 1 else 'no change'}; deterministic)"
                )
        print("(b) time to a decision vs effect size (median of 5 trials)")
        for work in (STEPS + 4, STEPS + 10, STEPS + 20, STEPS + 40):
            results = [trial(pool, replace(spec, path=paths[work]), base) for _ in range(5)]
            decided = [r for r in results if r[0] != "undecided"]
            effect = work / STEPS - 1
            times = [r[1] for r in decided] or [float("nan")]
            print(
                f"  +{effect:5.1%} work: decided {len(decided)}/5, median "
                f"{statistics.median(times):5.2f} s, median rounds "
                f"{statistics.median([r[2] for r in results]):.0f}"
            )
        pool.close()


if __name__ == "__main__":
    main()
