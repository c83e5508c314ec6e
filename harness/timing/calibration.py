"""Calibration: a CPU's timing-model parameters fitted to latencies measured on a real device.
Pure: no I/O (harness.commands.calibrate measures, counts and writes).

Each calibration model gives its counts (the busiest vCPU's, per inference) and the latency
measured natively. Two fits, chosen by how many models there are:

- `linear` (at least len(FEATURES) + 2 models): cycles per instruction of each class group and a
  weight on the base model's stall cycles, non-negative, fitted on relative error
  (harness.timing.validation.fit_nonnegative). It becomes a CPU model with one pipe group, no
  issue bound, the fitted costs and the stall weight as (1 - overlap) or as scaled latencies.
- `scale` (fewer models: a linear fit would have as many parameters as models): the base model
  with its `calibration` scaled by the geometric mean of measured / estimated.

Each model's held-out estimate comes from parameters fitted on the other models only; the band
of the fitted model is the largest held-out |error| (leave-one-out), so the stated error is one
no model was fitted to. The fitted model also records the conditions that band was measured
under: the instruction mix of the models (each group's share range, model.MixRange), which
estimates are checked against, and the machine where it is this one. Each model is also checked
against the mix of the others (`outside_others`): a model outside it was an extrapolation in
its leave-one-out fit, as a user's model outside the recorded mix would be.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

from harness.timing.model import (
    CLASSES,
    FEATURE_GROUPS,
    CpuModel,
    MixRange,
    VcpuCounts,
    estimate_cycles,
    group_shares,
)
from harness.timing.validation import (
    ErrorSummary,
    fit_nonnegative,
    fit_scale,
    leave_one_out_predictions,
    leave_one_out_scales,
    summarize,
)

__all__ = [
    "FEATURE_GROUPS",
    "Calibration",
    "CalibrationPoint",
    "calibrate",
    "features",
    "fitted_cpu",
    "mix_of",
    "outside_others",
    "size_range",
]

# Instructions that share a fitted cost: one weight per group of model.FEATURE_GROUPS (SIMD split
# by width, see there) and one on the stall cycles.
FEATURES = (*FEATURE_GROUPS, "stall")
NO_ISSUE_BOUND = 1e6  # instructions per cycle: the linear model has no issue-width bound


@dataclass(frozen=True)
class CalibrationPoint:
    """One calibration model: what QEMU counted (the busiest vCPU, over `samples` inferences)
    and the latency measured on the device (ms per inference)."""

    name: str
    counts: VcpuCounts
    samples: int
    measured_ms: float


@dataclass(frozen=True)
class Calibration:
    method: str  # "linear" or "scale"
    cpu: CpuModel  # fitted on every point, its band from the held-out errors
    before_ms: tuple[float, ...]  # the base model's estimates
    after_ms: tuple[float, ...]  # the fitted model's (fitted on every point: in-sample)
    held_out_ms: tuple[float, ...]  # each point's estimate from parameters fitted without it
    before: ErrorSummary
    after: ErrorSummary
    held_out: ErrorSummary
    weights: dict[str, float]  # linear: cycles per instruction of each group, stall weight
    # Per point, the groups whose share lies outside the other points' ranges (MixRange.outside).
    outside_others: tuple[tuple[str, ...], ...] = ()


def busiest(per_vcpu: Sequence[VcpuCounts], cpu: CpuModel) -> VcpuCounts:
    """The vCPU whose estimated cycles decide the latency."""
    if not per_vcpu:
        raise ValueError("no vCPU ran between the markers")
    return max(per_vcpu, key=lambda v: estimate_cycles(v, cpu).cycles)


def features(point: CalibrationPoint, base: CpuModel) -> list[float]:
    """Per inference, in ms at the base clock: the instructions of each group, and the base
    model's stall cycles (before overlap). A weight of 1 is then one cycle per instruction."""
    per_ms = point.samples * base.clock_mhz * 1e3
    groups = [sum(point.counts.classes[c] for c in g) / per_ms for g in FEATURE_GROUPS.values()]
    return [*groups, estimate_cycles(point.counts, base).stall / per_ms]


def _estimate(point: CalibrationPoint, cpu: CpuModel) -> float:
    return estimate_cycles(point.counts, cpu).cycles / point.samples / (cpu.clock_mhz * 1e3)


def fitted_cpu(base: CpuModel, weights: Sequence[float], source: str) -> CpuModel:
    """The linear model as a CpuModel: one pipe group, each class at its group's fitted cost,
    the stall weight w as overlap 1 - w (w <= 1) or latencies x w with no overlap (w > 1)."""
    *group_weights, stall = weights
    cost = {c: w for (g, w) in zip(FEATURE_GROUPS.values(), group_weights, strict=True) for c in g}
    cost |= {c: 0.0 for c in CLASSES if c not in cost}
    stretch = max(stall, 1.0)
    sources = {f"cost.{c}": f"{source} (group {g})" for g, cs in FEATURE_GROUPS.items() for c in cs}
    sources |= {f"cost.{c}": f"{source} (in no group: free)" for c in CLASSES if c not in cost}
    sources |= {
        "clock_mhz": base.sources.get("clock_mhz", "the base model's clock"),
        "issue_width": "no issue bound: the fitted model is linear in the class counts",
        "l2_latency": f"{base.sources.get('l2_latency', 'base model')}"
        + (f"; x {stretch:.3f}, the fitted stall weight" if stretch > 1 else ""),
        "memory_latency": f"{base.sources.get('memory_latency', 'base model')}"
        + (f"; x {stretch:.3f}, the fitted stall weight" if stretch > 1 else ""),
        "prefetch_coverage": base.sources.get("prefetch_coverage", "base model"),
        "overlap": f"{source}: 1 - the stall weight {stall:.4f}",
        "calibration": "1: the costs are fitted",
    }
    return dataclasses.replace(
        base,
        issue_width=NO_ISSUE_BOUND,
        cost=cost,
        groups={"all": tuple(CLASSES)},
        l2_latency=base.l2_latency * stretch,
        memory_latency=base.memory_latency * stretch,
        overlap=max(0.0, 1.0 - stall),
        calibration=1.0,
        sources={**base.sources, **sources},
    )


def mix_of(points: Sequence[CalibrationPoint], source: str) -> MixRange:
    """The instruction mix the points span (each group's share range)."""
    return MixRange.spanning([group_shares(p.counts) for p in points], source)


def size_range(per_inference: Sequence[float]) -> tuple[float, float]:
    """The instructions per inference a band's models span (rounded outwards to 0.1 M)."""
    return (
        math.floor(min(per_inference) / 1e5) * 1e5,
        math.ceil(max(per_inference) / 1e5) * 1e5,
    )


def outside_others(points: Sequence[CalibrationPoint]) -> list[tuple[str, ...]]:
    """Per point, where its mix lies outside the other points' (empty: inside)."""
    return [
        tuple(
            mix_of([q for j, q in enumerate(points) if j != i], "").outside(group_shares(p.counts))
        )
        for i, p in enumerate(points)
    ]


def calibrate(
    points: Sequence[CalibrationPoint],
    base: CpuModel,
    name: str,
    device: str,
    date: str,
    machine: str | None = None,
) -> Calibration:
    """Fit `base`'s free parameters to the points measured on `device` on `date` (module
    docstring). Every fitted number's source names the device, the date, the number of models and
    the held-out errors. `machine`: the device's processor (timing.host_machine()) where it is
    this machine, recorded so that an estimate elsewhere says it was not validated there."""
    if len(points) < 2:
        raise ValueError("calibration needs at least two models (one is held out at a time)")
    measured = [p.measured_ms for p in points]
    before = [_estimate(p, base) for p in points]
    linear = len(points) >= len(FEATURES) + 2
    if linear:
        table = [features(p, base) for p in points]
        held_out = leave_one_out_predictions(table, measured)
    else:
        scales = leave_one_out_scales(before, measured)
        held_out = [b * s for b, s in zip(before, scales, strict=True)]
    summary = summarize(held_out, measured)
    source = (
        f"fitted by harness calibrate on {device}, {date}, {len(points)} models, leave-one-out "
        f"|error| median {summary.median_abs:.0%} max {summary.max_abs:.0%}"
    )
    weights: dict[str, float] = {}
    if linear:
        fitted = fit_nonnegative(table, measured)
        if not any(fitted[:-1]):
            raise ValueError("the fit priced every instruction at 0 cycles: the models disagree")
        weights = dict(zip(FEATURES, fitted, strict=True))
        cpu = fitted_cpu(base, fitted, source)
    else:
        scale = fit_scale(before, measured)
        cpu = dataclasses.replace(
            base,
            calibration=base.calibration * scale,
            sources={**base.sources, "calibration": f"{source}: one scale, x {scale:.4f}"},
        )
    method = "linear" if linear else "scale"
    mix = mix_of(points, f"instruction-group shares of the {len(points)} models harness "
                 f"calibrate measured on {device}, {date}")  # fmt: skip
    sources = dict(cpu.sources)
    if machine is not None:
        sources["machine"] = f"/proc/cpuinfo of {device}, where harness calibrate measured, {date}"
    cpu = dataclasses.replace(
        cpu,
        name=name,
        description=f"{base.description}, calibrated on {device} ({method} fit)",
        band_fraction=round(summary.max_abs, 4),
        band_source=f"validated on {len(points)} models on {device}, {date} (leave-one-out "
        f"|error| median {summary.median_abs:.0%}, max {summary.max_abs:.0%})",
        mix=mix,
        band_threads=1,
        machine=machine,
        sources=sources,
        generation_band_fraction=None,  # measured on the base's machine, not on this device
        generation_band_source="",
        generation_mix=None,
        band_instructions=size_range([p.counts.instructions / p.samples for p in points]),
    )
    after = [_estimate(p, cpu) for p in points]
    return Calibration(
        method=method,
        cpu=cpu,
        before_ms=tuple(before),
        after_ms=tuple(after),
        held_out_ms=tuple(held_out),
        before=summarize(before, measured),
        after=summarize(after, measured),
        held_out=summary,
        weights=weights,
        outside_others=tuple(outside_others(points)),
    )
