"""Counting mode: instructions executed per inference, counted under QEMU (fidelity `counted`).
Device milliseconds are estimated from what QEMU counts by the timing model (harness.timing).

Three parts, each where it runs:

- the plugin build (host): insn_count.c and vclock.c, compiled for the installed qemu-user by
  harness.counting.build;
- the counted run (a backend): harness.backends.qemu starts the worker under QEMU with the plugin
  and reads its counts (`count_instructions`, `counted_bench`);
- the in-target side: harness.worker.counting, the worker whose `bench(count=True)` brackets its
  timed loop with marker system calls (harness.worker.markers) that the plugin counts between.

This module holds what they share: the result of a count.
Instructions per inference = count / samples. Counts repeat exactly from run to run (see
harness.backends.qemu for what that takes), so a regression gate on them needs no statistics.

    from harness.backends.qemu import count_instructions
    result = count_instructions(profiles["rpi4"], Path("models/digits.onnx"), Path("data/test.npz"))
    result.instructions_per_inference          # 74_638.49 for examples/digits on rpi4
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "CountResult",
    "CountingError",
]

COUNT_FIDELITY = "counted"


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
