"""A generated results document the size of a real matrix: MODELS models × the six shipped
devices, each measured for size, accuracy, latency and memory against a baseline, with verdicts
decided by the real gates (harness.gates.decide) from seeded figures. Nothing in it is a report's
own output, so a report test reads it the way it reads a CI run's results.

Three items stand out, and a report must put them first:
- FAILED_ACCURACY: accuracy below accuracy_min (FAIL);
- FAILED_MEMORY: the board estimate over memory_peak_mb_max (FAIL);
- REGRESSED: latency slower than its base beyond noise (the ratio's interval above 1) but
  within latency_max_regression, so it PASSes and is listed as a change.
Every other figure stays within noise of its base: latency intervals span 1, memory moves under
1%, size and accuracy equal their base.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from harness.config import GateSpec
from harness.gates import decide
from harness.results import Flags, Measurement, Record, record

MODELS = tuple(f"model-{i:02d}" for i in range(20))
# name, fidelity, memory limit (MB): the shipped device profiles
DEVICES = (
    ("host", "measured", None),
    ("cuda-gpu", "measured", 16384),
    ("jetson-orin-nano", "emulated", 8192),
    ("rpi4", "emulated", 4096),
    ("rpi-zero-2w", "emulated", 512),
    ("x86-64", "emulated", 2048),
)
GATES = GateSpec(
    accuracy_min=0.95,
    latency_max_regression=0.05,
    memory_peak_mb_max=300.0,
    memory_max_growth=0.25,
    size_kb_max=512.0,
)
FAILED_ACCURACY = ("accuracy", "model-07", "rpi4")
FAILED_MEMORY = ("memory", "model-13", "rpi-zero-2w")
REGRESSED = ("latency", "model-04", "x86-64")
CLASSES = tuple(str(c) for c in range(10))


def _record(suite: str, model: str, device: str, fidelity: str, measurement: Measurement) -> Record:
    verdict = decide(suite, measurement.figures, GATES, device, fidelity, measurement.flags)
    return record(
        f"harness.toml::{suite}[{model}@{device}]",
        suite,
        model,
        device,
        verdict,
        measurement,
        fidelity=fidelity,
        worker={"versions": {"onnxruntime": "1.20.1", "numpy": "2.1.3"}},
    )


def _latency(rng: np.random.Generator, key: tuple[str, str, str], fidelity: str) -> Measurement:
    scale_ms = float(rng.uniform(0.05, 40.0))
    base = rng.lognormal(np.log(scale_ms * 1e6), 0.08, 400)
    slower = 1.035 if key == REGRESSED else 1.0
    head = rng.lognormal(np.log(scale_ms * 1e6 * slower), 0.08, 400)
    p90 = float(np.percentile(head, 90)) / 1e6
    # The paired interval of 40 rounds of lognormal samples (sigma 0.08) is about ±1%: an
    # unchanged model's spans 1, the regressed one's lies above 1 and below the 5% gate.
    ratio = 1.03 if key == REGRESSED else 1.0 + float(rng.uniform(-0.004, 0.004))
    figures = {
        "n": 400,
        "p50_ms": float(np.median(head)) / 1e6,
        "p90_ms": p90,
        "p90_low_ms": p90 * 0.98,
        "p90_high_ms": p90 * 1.02,
        "baseline_p90_ms": float(np.percentile(base, 90)) / 1e6,
        "ratio": ratio,
        "ratio_low": ratio - 0.01,
        "ratio_high": ratio + 0.01,
        "rounds": 40,
        "paired": True,
    }
    raw = {"samples_ns": head.round().tolist(), "baseline_samples_ns": base.round().tolist()}
    return Measurement(figures, fidelity, raw, Flags(baseline="main"))


def _accuracy(rng: np.random.Generator, key: tuple[str, str, str], fidelity: str) -> Measurement:
    per_class = {c: float(rng.uniform(0.95, 1.0)) for c in CLASSES}
    if key == FAILED_ACCURACY:
        per_class = {c: v - 0.12 for c, v in per_class.items()}
    accuracy = float(np.mean(list(per_class.values())))
    base = accuracy if key != FAILED_ACCURACY else accuracy + 0.12
    raw = {
        "per_class": {c: {"n": 30, "accuracy": v} for c, v in per_class.items()},
        "baseline_per_class": {
            c: {"n": 30, "accuracy": v + (0.12 if key == FAILED_ACCURACY else 0.0)}
            for c, v in per_class.items()
        },
    }
    figures = {"n": 300, "nonfinite": 0, "accuracy": accuracy, "baseline_accuracy": base}
    figures["accuracy_drop"] = base - accuracy
    return Measurement(figures, fidelity, raw, Flags(baseline="main"))


def _memory(
    rng: np.random.Generator, key: tuple[str, str, str], fidelity: str, limit: int | None
) -> Measurement:
    empty = float(rng.uniform(40.0, 60.0))
    share = float(rng.uniform(2.0, 80.0)) + (400.0 if key == FAILED_MEMORY else 0.0)
    base_share = share * float(rng.uniform(0.995, 1.005))
    figures: dict[str, Any] = {
        "peak_mb": empty + share,
        "empty_peak_mb": empty,
        "model_share_mb": share,
        "limit_mb": limit,
        "baseline_model_share_mb": base_share,
        "memory_growth": share / base_share - 1.0,
    }
    if fidelity == "emulated":
        native_empty = empty * 0.6
        figures |= {
            "peak_mb": empty + share + 70.0,  # QEMU's own memory, which the board does not pay
            "empty_peak_mb": empty + 70.0,
            "native_empty_peak_mb": native_empty,
            "board_peak_mb": share + native_empty,
        }
    return Measurement(figures, fidelity, {}, Flags(baseline="main"))


def results_document(models: tuple[str, ...] = MODELS, seed: int = 14) -> dict[str, Any]:
    """The merged document of one CI run over `models` × DEVICES."""
    rng = np.random.default_rng(seed)
    records: list[Record] = []
    for device, fidelity, limit in DEVICES:
        for model in models:
            size = float(rng.uniform(20.0, 400.0))
            figures = {"size_kb": size, "baseline_size_kb": size}
            records.append(
                _record("size", model, device, "measured", Measurement(figures, "measured"))
            )
            for suite in ("accuracy", "latency", "memory"):
                key = (suite, model, device)
                if suite == "accuracy":
                    measured = _accuracy(rng, key, fidelity)
                elif suite == "latency":
                    measured = _latency(rng, key, fidelity)
                else:
                    measured = _memory(rng, key, fidelity, limit)
                records.append(_record(suite, model, device, fidelity, measured))
    devices = [
        {"name": name, "fidelity": fidelity, "memory_mb": limit, "arch": "arm64"}
        for name, fidelity, limit in DEVICES
    ]
    return {
        "schema": "harness-results/2",
        "harness_version": "0.0.0-fixture",
        "created": "2026-12-01T03:00:00Z",
        "config": "harness.toml",
        "git": {"commit": "f" * 40, "ref": "refs/pull/14/merge"},
        "baseline": "main",
        "host": {"fingerprint": "0123456789abcdef"},
        "exitstatus": 1,
        "devices": devices,
        "results": sorted(records, key=lambda r: (r["device"], r["model"], r["suite"])),
    }


def nights(document: dict[str, Any], count: int = 8, step_at: int = 5) -> list[dict[str, Any]]:
    """`count` nightly documents of the same matrix; REGRESSED's p90 steps up 30% from night
    `step_at` on (commit `step_at` in hex), everything else wobbles within 1%."""
    rng = np.random.default_rng(7)
    out = []
    for night in range(count):
        copied = copy.deepcopy(document)
        copied["created"] = f"2026-11-{night + 1:02d}T03:00:00Z"
        copied["git"] = {"commit": f"{night:x}" * 40, "ref": "refs/heads/main"}
        for rec in copied["results"]:
            figures = rec["figures"]
            for figure in ("p90_ms", "accuracy", "board_peak_mb", "peak_mb", "size_kb"):
                if isinstance(figures.get(figure), float):
                    figures[figure] *= float(rng.uniform(0.995, 1.005))
            if (rec["suite"], rec["model"], rec["device"]) == REGRESSED and night >= step_at:
                figures["p90_ms"] *= 1.3
        out.append(copied)
    return out
