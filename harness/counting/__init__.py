"""Counting mode: instructions executed per inference, counted under QEMU (fidelity `counted`),
and device milliseconds estimated from them by a stated model (fidelity `estimated`).

The worker's `bench(count=True)` brackets its timed loop with marker system calls
(harness.worker.markers); the QEMU plugin built from insn_count.c (harness.counting.build) counts
the guest instructions between them, over all guest threads, and appends one line per loop to a
file that the host reads (harness.backends.qemu.CountingTarget). Instructions per inference =
count / samples. Counts repeat exactly from run to run (see harness.backends.qemu for what that
takes), so a regression gate on them needs no statistics.

    from harness.counting import count_instructions, estimate_ms
    result = count_instructions(profiles["rpi4"], Path("models/digits.onnx"), Path("data/test.npz"))
    result.instructions_per_inference          # 74_638.49 for examples/digits on rpi4
    print(estimate_ms(result.instructions_per_inference, profiles["rpi4"]))
    # 0.055 ms (estimated: 1.1 cycles/instruction at 1500 MHz, rpi4)

For a worker that serves several requests (the pair runner), start it with
`harness.backends.qemu.QemuBackend` and call `counted_bench(client, model_id, samples)`.
Counts depend on everything the worker did before (heap layout): compare models counted in
fresh workers that made the same requests, as count_instructions does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the counting worker imports this package inside the target: keep it light
    from harness.backends.base import Backend, WorkerClient
    from harness.devices import DeviceProfile

__all__ = [
    "CountResult",
    "CountingError",
    "Estimate",
    "count_instructions",
    "counted_bench",
    "estimate_ms",
]

COUNT_FIDELITY = "counted"
ESTIMATE_FIDELITY = "estimated"
MODEL_ID = "model"  # the same id in every counting worker: requests are identical bytes


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


def counted_bench(
    client: WorkerClient,
    model_id: str,
    samples: int,
    warmup: int = 20,
    timeout: float = 600.0,
) -> CountResult:
    """`bench(count=True)` on a worker started by QemuBackend, and the plugin's count for it."""
    from harness.backends.qemu import CountingTarget

    target = client.target
    if not isinstance(target, CountingTarget):
        raise TypeError(
            f"the worker on {client.device} does not run under the counting plugin: start it "
            "with harness.backends.qemu.QemuBackend"
        )
    if samples < 1:
        raise ValueError("samples must be at least 1")
    before = len(target.read_counts())
    reply = client.request(
        "bench", timeout, model_id=model_id, samples=samples, warmup=warmup, count=True
    )
    counts = target.read_counts()[before:]
    if len(counts) != 1:
        tail = target.channel.stderr_tail().strip()
        raise CountingError(
            f"the counting plugin on {client.device} reported {len(counts)} counts for one "
            f"counted loop (expected 1): the worker's marker system calls did not reach it"
            + (f"; worker output:\n{tail}" if tail else "")
        )
    count = counts[0]
    return CountResult(
        instructions_per_inference=count.instructions / samples,
        total=count.instructions,
        samples=samples,
        warmup=warmup,
        device=client.device,
        arch=target.arch,
        cpu=target.cpu,
        qemu_version=target.qemu_version,
        plugin_mode=count.mode,
        vcpus=count.vcpus,
        interpreter=target.interpreter,
        samples_ns=tuple(int(t) for t in reply.get("samples_ns", [])),
    )


def count_instructions(
    profile: DeviceProfile,
    model_path: Path,
    dataset: Path | None = None,
    samples: int = 200,
    warmup: int = 20,
    *,
    output: str | None = None,
    input_shapes: dict[str, list[int]] | None = None,
    input_values: dict[str, Any] | None = None,
    timeout: float = 600.0,
    backend: Backend | None = None,
) -> CountResult:
    """Instructions per inference of `model_path` on `profile`'s arch and CPU model, counted in a
    fresh worker under QEMU (one intra-op thread). Raises BackendUnavailable where counting is not
    set up here (the reason says what to run), WorkerError/WorkerFailure as any worker does."""
    from harness.backends.base import WorkerClient
    from harness.backends.qemu import QemuBackend
    from harness.runtimes import format_of

    model_path = Path(model_path)
    files: Sequence[Path] = [model_path] + ([Path(dataset)] if dataset is not None else [])
    chosen = backend if backend is not None else QemuBackend()
    target = chosen.start(profile, files, threads=1)
    client = WorkerClient(target, profile.name)
    try:
        client.request("hello", timeout, formats=[format_of(str(model_path))])
        client.request(
            "load",
            timeout,
            model_id=MODEL_ID,
            path=target.remote(model_path),
            threads=1,
            dataset=target.remote(Path(dataset)) if dataset is not None else None,
            output=output,
            input_shapes=input_shapes,
            input_values=input_values,
        )
        return counted_bench(client, MODEL_ID, samples, warmup, timeout)
    finally:
        client.close()
