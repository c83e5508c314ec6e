"""Latency: warm-up, then timed runs inside the worker, in chunks, until enough samples or the
time budget ends. Raw samples come back for the reports and for recomputing statistics."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from harness.runner import Pair
from harness.suites.base import Measurement

CHUNK_SECONDS = 1.0  # aim for about one second of timed runs per worker request


def measure(pair: Pair) -> Measurement:
    settings = pair.config.latency
    pair.worker()
    started = time.monotonic()
    first = pair.request("bench", samples=1, warmup=settings.warmup)["samples_ns"]
    samples: list[int] = list(first)
    while len(samples) < settings.samples:
        elapsed = time.monotonic() - started
        if elapsed >= settings.time_budget_s:
            break
        per_run = max(float(np.median(samples)) * 1e-9, 1e-6)
        left = min(settings.time_budget_s - elapsed, CHUNK_SECONDS)
        chunk = int(max(1, min(settings.samples - len(samples), left / per_run)))
        samples += pair.request("bench", samples=chunk)["samples_ns"]
    ms = np.asarray(samples, dtype=np.float64) / 1e6
    figures: dict[str, Any] = {
        "n": len(samples),
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "min_ms": float(ms.min()),
        "threads": pair.profile.threads,
    }
    if len(samples) < settings.min_samples:
        figures["inconclusive"] = (
            f"latency: only n={len(samples)} samples within the {settings.time_budget_s:g} s "
            f"budget; {settings.min_samples} needed (raise latency.time_budget_s)"
        )
    assert pair.target is not None
    return Measurement(figures, pair.target.fidelity, {"samples_ns": samples})
