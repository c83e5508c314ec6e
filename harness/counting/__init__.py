"""Counting mode: instructions executed per inference, counted under QEMU (fidelity `counted`),
and device milliseconds estimated from them by a stated model (fidelity `estimated`).

Three parts, each where it runs:

- the plugin build (host): insn_count.c and vclock.c, compiled for the installed qemu-user by
  harness.counting.build;
- the counted run (a backend): harness.backends.qemu starts the worker under QEMU with the plugin
  and reads its counts (`count_instructions`, `counted_bench`);
- the in-target side: harness.worker.counting, the worker whose `bench(count=True)` brackets its
  timed loop with marker system calls (harness.worker.markers) that the plugin counts between.

This module holds what they share: the result of a count and the estimate made from it.
Instructions per inference = count / samples. Counts repeat exactly from run to run (see
harness.backends.qemu for what that takes), so a regression gate on them needs no statistics.

    from harness.backends.qemu import count_instructions
    from harness.counting import estimate_ms
    result = count_instructions(profiles["rpi4"], Path("models/digits.onnx"), Path("data/test.npz"))
    result.instructions_per_inference          # 74_638.49 for examples/digits on rpi4
    print(estimate_ms(result.instructions_per_inference, profiles["rpi4"]))
    # 0.055 ms (estimated: 1.1 cycles/instruction at 1500 MHz, rpi4)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.devices import DeviceProfile

__all__ = [
    "CountResult",
    "CountingError",
    "Estimate",
    "estimate_ms",
]

COUNT_FIDELITY = "counted"
ESTIMATE_FIDELITY = "estimated"


class CountingError(Exception):
    """The plugin gave no count (or several) for a counted loop."""


@dataclass(frozen=True)
class CountResult:
    instructions_per_inference: float  # total / samples
    total: int  # instructions between the markers: the `samples` timed inferences + loop upkeep
    samples: int
    warmup: int
    device: str
    arch: str
    cpu: str  # QEMU CPU model
    qemu_version: str
    plugin_mode: str
    vcpus: int  # guest threads that ran inside the loop (0: not known in inline mode)
    interpreter: str  # "rootfs <key>" (the device image's Python) or "host <path>"
    samples_ns: tuple[int, ...] = ()  # wall-clock under emulation: fidelity `emulated`
    fidelity: str = COUNT_FIDELITY

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["samples_ns"] = list(self.samples_ns)
        return data

    def __str__(self) -> str:
        return (
            f"{self.instructions_per_inference:,.1f} instructions/inference ({self.fidelity}: "
            f"{self.device}, {self.arch} {self.cpu}, QEMU {self.qemu_version}, "
            f"n={self.samples})"
        )


@dataclass(frozen=True)
class Estimate:
    """Device milliseconds estimated from an instruction count: instructions × cpi / clock."""

    ms: float
    instructions: float
    cpi: float
    clock_mhz: float
    device: str
    fidelity: str = ESTIMATE_FIDELITY

    @property
    def model(self) -> str:
        return f"{self.cpi:g} cycles/instruction at {self.clock_mhz:g} MHz"

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "model": self.model}

    def __str__(self) -> str:
        return f"{self.ms:.3f} ms ({self.fidelity}: {self.model}, {self.device})"


def estimate_ms(instructions: float, profile: DeviceProfile) -> Estimate:
    """`instructions` per inference as device milliseconds: instructions × cpi /
    (clock_mhz × 1e3). The profile states both numbers; a profile without them cannot be
    estimated (ValueError naming the keys to add)."""
    if profile.clock_mhz is None or profile.cpi is None:
        missing = [k for k in ("clock_mhz", "cpi") if getattr(profile, k) is None]
        raise ValueError(
            f"device {profile.name} ({profile.source or 'built-in'}) states no "
            f"{' and no '.join(missing)}: add e.g. clock_mhz = 1500 and cpi = 1.1 to its profile "
            "to get estimated milliseconds from instruction counts"
        )
    if profile.clock_mhz <= 0 or profile.cpi <= 0:
        raise ValueError(f"device {profile.name}: clock_mhz and cpi must be positive")
    ms = instructions * profile.cpi / (profile.clock_mhz * 1e3)
    return Estimate(
        ms=ms,
        instructions=instructions,
        cpi=float(profile.cpi),
        clock_mhz=float(profile.clock_mhz),
        device=profile.name,
    )
