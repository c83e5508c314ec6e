"""False alarms of the stored-baseline latency comparison, beside the paired one.

A stored baseline (`--baseline=results.json`) is another session: its samples cannot be
interleaved with the new ones, so whatever moved between the two sessions (another process,
another minute of machine load) looks like a change of the model. This measures how often that
fails a gate when nothing changed: S sessions of one identical model (each a fresh worker on the
host, measured as the latency item measures under a regression gate, seconds apart),
every ordered pair of distinct sessions compared as the item compares them. Beside it:

- the method used before (a bootstrap of the two sessions' raw samples, as if independent);
- the paired comparison (`--baseline=<git ref>`: base and new interleaved in one worker),
  identical model against itself in fresh workers.

The rates come with a 95% interval from resampling sessions (pairs sharing a session are not
independent). Gates: any slowdown (max_regression 0) and the examples' 10%. "changed" is what
the report's "Needs a look" lists: an interval that excludes no change, either way.

The sessions' spread also gives the session level's own standard deviation (sd(log) between
sessions, less what chunks explain), which latency.STORED_SESSION_SD carries into every stored
comparison: `--config` runs it on any harness.toml, e.g. the real-model corpus
(benchmarks/realmodels/corpus.py project DIR).

    python benchmarks/bench_stored_baseline.py [--sessions 16] [--paired 8] [--gap 1]
        [--config PATH] [--models NAME ...]
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from harness import stats
from harness.baseline import BaselineContext
from harness.config import GateSpec, load_config
from harness.devices import load_profiles
from harness.pairs import PairPool
from harness.suites import latency

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "digits" / "harness.toml"
GATES = (0.0, 0.10)
CONFIDENCE = 0.95  # latency.confidence's default: what a stored comparison is decided at


def session(config: Any, model: Any) -> dict[str, Any]:
    """One session's raw latency figures, measured as the item does under a regression gate."""
    pool = PairPool(config)
    pair = pool.get(model, load_profiles()["host"])
    try:
        # Under a regression gate and no baseline, the item keeps the session's spread (its
        # chunks), as a later session's stored-baseline comparison reads it.
        return latency.measure(pair).raw
    finally:
        pool.close()


def raw_bootstrap(base: dict[str, Any], new: dict[str, Any], seed: int) -> tuple[float, float]:
    """The interval used before: medians of raw samples resampled as independent draws."""
    rng = np.random.default_rng(seed)
    b = np.asarray(base["samples_ns"], dtype=np.float64)
    m = np.asarray(new["samples_ns"], dtype=np.float64)
    ratios = np.median(rng.choice(m, (2000, m.size)), 1) / np.median(
        rng.choice(b, (2000, b.size)), 1
    )
    tail = (1.0 - CONFIDENCE) / 2.0
    low, high = np.quantile(ratios, [tail, 1.0 - tail])
    return float(low), float(high)


def rate(fails: np.ndarray, rng: np.random.Generator) -> tuple[float, float, float]:
    """Fraction of ordered pairs i != j that failed, with a 95% interval from resampling the
    sessions themselves."""
    count = int(fails.shape[0])
    off = ~np.eye(count, dtype=bool)
    point = float(fails[off].mean())
    draws = []
    for _ in range(2000):
        pick = rng.integers(0, count, count)
        sub = fails[np.ix_(pick, pick)]
        distinct = pick[:, None] != pick[None, :]
        if distinct.any():
            draws.append(float(sub[distinct].mean()))
    low, high = np.quantile(draws, [0.025, 0.975])
    return point, float(low), float(high)


def paired_trial(config: Any, model: Any) -> tuple[float, float]:
    pool = PairPool(config)
    gated = replace(model, gates=GateSpec(latency_max_regression=0.0))
    pair = pool.get(gated, load_profiles()["host"])
    pair.worker.base = model  # the same file as its own base, in the same worker
    pair.baseline = BaselineContext(label="itself", base=model)
    try:
        figures = latency.measure(pair).figures
    finally:
        pool.close()
    return float(figures.get("ratio_low", 0.0)), float(figures.get("ratio_high", np.inf))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=16, help="sessions per model")
    parser.add_argument("--paired", type=int, default=8, help="paired trials per model")
    parser.add_argument("--gap", type=float, default=1.0, help="seconds between sessions")
    parser.add_argument("--config", type=Path, default=CONFIG, help="a harness.toml")
    parser.add_argument("--models", nargs="*", help="models of the config (default: all)")
    args = parser.parse_args()
    config = load_config(args.config)
    rng = np.random.default_rng(0)
    print(
        f"host, {args.config}: {args.sessions} sessions per model ({args.gap:g} s apart), "
        f"every ordered pair compared; {CONFIDENCE:.0%} intervals; rates with 95% intervals"
    )
    print(
        f"{'model':13} {'comparison':44} "
        + " ".join(f"{'FAIL @' + f'{g:.0%}':>21}" for g in GATES)
        + f" {'straddles @10%':>15} {'changed':>8}"
    )
    for model in config.models:
        if args.models and model.name not in args.models:
            continue
        raws = []
        for _ in range(args.sessions):
            raws.append(session(config, model))
            time.sleep(args.gap)
        chunks = [latency.session_chunks(raw) for raw in raws]
        count = len(raws)
        sizes = sorted(len(c) for c in chunks)
        levels = np.log([np.median(c) for c in chunks])
        within = np.median([np.std(np.log(c), ddof=1) for c in chunks])
        between = float(np.std(levels, ddof=1))
        # A session level's own sd: what the levels spread beyond their chunks' sampling error.
        own = math.sqrt(max(0.0, between**2 - within**2 / np.mean(sizes)))
        print(
            f"{model.name:13} session medians {np.exp(levels.min()) / 1e3:.2f}-"
            f"{np.exp(levels.max()) / 1e3:.2f} us: sd(log) between sessions {between:.3f}, "
            f"between chunks of a session {within:.3f}; session level sd {own:.3f}"
        )
        methods = (
            (f"unpaired, chunk medians ({sizes[0]}-{sizes[-1]} chunks), no session sd", 0.0),
            (f"unpaired, with session_sd {latency.STORED_SESSION_SD:g} (now)",
             latency.STORED_SESSION_SD),
        )  # fmt: skip
        for label, session_sd in methods:
            fails = np.zeros((len(GATES), count, count), dtype=bool)
            straddle = np.zeros((count, count), dtype=bool)
            changed = np.zeros((count, count), dtype=bool)
            for i, j in ((i, j) for i in range(count) for j in range(count) if i != j):
                estimate = stats.unpaired_ratio(chunks[i], chunks[j], CONFIDENCE, session_sd)
                for g, gate in enumerate(GATES):
                    fails[g, i, j] = stats.decide_ratio(estimate, gate) == "fail"
                straddle[i, j] = stats.decide_ratio(estimate, 0.10) == "undecided"
                changed[i, j] = estimate.nominal and not estimate.low <= 1.0 <= estimate.high
            cells = [
                f"{p:6.1%} [{lo:5.1%}, {hi:5.1%}]" for p, lo, hi in (rate(f, rng) for f in fails)
            ]
            extra = f"{rate(straddle, rng)[0]:15.1%} {rate(changed, rng)[0]:8.1%}"
            print(f"{model.name:13} {label:44} " + " ".join(f"{c:>21}" for c in cells) + extra)
        before = np.zeros((len(GATES), count, count), dtype=bool)
        for i, j in ((i, j) for i in range(count) for j in range(count) if i != j):
            low, _ = raw_bootstrap(raws[i], raws[j], seed=i * count + j)
            for g, gate in enumerate(GATES):
                before[g, i, j] = low > 1.0 + gate
        cells = [f"{p:6.1%} [{lo:5.1%}, {hi:5.1%}]" for p, lo, hi in (rate(f, rng) for f in before)]
        label = "unpaired, raw-sample bootstrap (before)"
        print(f"{model.name:13} {label:44} " + " ".join(f"{c:>21}" for c in cells))
        trials = [paired_trial(config, model) for _ in range(args.paired)]
        cells = [f"{sum(low > 1.0 + g for low, _ in trials)}/{len(trials)}" for g in GATES]
        print(
            f"{model.name:13} {'paired, same worker (--baseline=<ref>)':44} "
            + " ".join(f"{c:>21}" for c in cells)
        )


if __name__ == "__main__":
    main()
