"""Timing model: a device's latency estimated from what QEMU counted (fidelity `estimated`).

The worker runs one counted loop under dynamic qemu-aarch64 / qemu-x86_64 with the timing plugin
(timing_plugin.c): per vCPU, instructions by class and memory accesses through the board's L1D
and L2 (harness.timing.run). A pure model (harness.timing.model) turns those counts into cycles
with the CPU's parameters (harness/timing/cpus/<cpu>.toml, each number with its source), and
cycles into milliseconds at the CPU's clock, following the busiest vCPU. The estimate carries the
error band measured for that CPU by benchmarks/bench_fidelity.py (docs/timing-model.md).

    from harness.devices import load_profiles
    from harness.timing import estimate_latency
    est = estimate_latency(load_profiles()["rpi4"], Path("mobilenet_v2.tflite"), None)
    est.ms, est.band_fraction            # e.g. 82.3, 0.25
    str(est)                             # "estimated 82.3 ms ±25% (cortex-a72 timing model ...)"
    est.low_ms, est.high_ms              # ms / (1 +/- band): for PASS / FAIL / INCONCLUSIVE

Counts are deterministic, so one counted inference (after one warm-up) is enough; results are
cached under $HARNESS_CACHE/timing/counts by model hash, dataset hash, harness version, plugin
source, QEMU version, interpreter (device image), CPU model, cache geometry and thread count.
`estimate_latency` raises harness.backends.base.BackendUnavailable where counting is not set up
(the message says what to run), like harness.counting.count_instructions.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from harness.identity import content_sha256, model_sha256
from harness.timing.model import (
    OUTSIDE_MIX_BAND,
    CpuModel,
    VcpuCycles,
    busiest_vcpu,
    cpu_model_from_toml,
    estimate_cycles,
    estimate_ms,
    group_shares,
    machine_matches,
    mix_conditions,
    setting_conditions,
)

if TYPE_CHECKING:
    from harness.devices import DeviceProfile
    from harness.timing.run import GenerationCounts, TimingCounts

__all__ = [
    "CPU_FOLDER",
    "GenerationEstimate",
    "TimingEstimate",
    "cpu_for_profile",
    "estimate_from_counts",
    "estimate_generation",
    "estimate_latency",
    "generation_counts",
    "host_machine",
    "load_cpu_model",
    "machine_of",
    "not_set_up",
    "timing_counts",
]

CPU_FOLDER = Path(__file__).with_name("cpus")
FIDELITY = "estimated"
# Profiles without a `cpu` (x86-64 devices count under QEMU's "max"): a model fitted on this
# machine's processor where one ships (cpus/*.toml with [machine]), else this one.
DEFAULT_CPU_MODEL = {"amd64": "x86-64-host-fitted", "arm64": "cortex-a72"}


@dataclass(frozen=True)
class TimingEstimate:
    ms: float  # per inference, busiest vCPU
    band_fraction: float | None  # measured error for this CPU (None: not validated)
    model_description: str  # the CPU model, its clock and where its band comes from
    per_vcpu: tuple[VcpuCycles, ...]
    instructions_per_inference: float  # all vCPUs
    cached: bool  # the counts came from the cache
    device: str
    cpu: str  # timing-model CPU name
    qemu_cpu: str
    fidelity: str = FIDELITY
    # Why the band does not hold for this estimate (harness.timing.model's mix_conditions and
    # setting_conditions: the instruction mix, the threads or the machine differ from those it
    # was measured under, and no widened band covers it); empty: validated.
    outside: tuple[str, ...] = ()
    shares: dict[str, float] | None = None  # the busiest vCPU's instruction-group shares

    @property
    def validated(self) -> bool:
        """The band holds: it was measured under this estimate's conditions."""
        return self.band_fraction is not None and not self.outside

    @property
    def not_validated(self) -> str | None:
        """Why no band holds for this estimate (what a gate says undecided), or None."""
        if self.validated:
            return None
        reasons = list(self.outside)
        if self.band_fraction is None:
            reasons.insert(0, f"no error band was measured for {self.cpu}")
        return "not validated: " + "; ".join(reasons)

    # The band is the largest |estimate / measured - 1| seen, so the device's own figure lies in
    # [ms / (1 + band), ms / (1 - band)]: an estimate 25% under the truth means the truth is
    # 1.33 x the estimate, not 1.25 x. A band of 100% or more leaves no upper bound, and an
    # estimate outside the conditions its band was measured under has no bounds at all.
    @property
    def low_ms(self) -> float:
        return self.ms / (1.0 + (self.band_fraction or 0.0)) if self.validated else 0.0

    @property
    def high_ms(self) -> float:
        band = self.band_fraction or 0.0
        return self.ms / (1.0 - band) if band < 1.0 and self.validated else math.inf

    def as_json(self) -> dict[str, Any]:
        return {
            "ms": self.ms,
            "band_fraction": self.band_fraction,
            "low_ms": self.low_ms,
            "high_ms": self.high_ms,
            "fidelity": self.fidelity,
            "model_description": self.model_description,
            "per_vcpu": [vars(v) for v in self.per_vcpu],
            "instructions_per_inference": self.instructions_per_inference,
            "cached": self.cached,
            "device": self.device,
            "cpu": self.cpu,
            "qemu_cpu": self.qemu_cpu,
            "validated": self.validated,
            "not_validated": self.not_validated,
            "shares": self.shares,
        }

    def __str__(self) -> str:
        ms = f"{self.fidelity} {_three_digits(self.ms)} ms"
        if self.validated:
            return f"{ms} ±{self.band_fraction:.0%} ({self.model_description})"
        return f"{ms}, {self.not_validated} ({self.model_description})"


def _three_digits(value: float) -> str:
    """43.1, 136, 0.0523: three significant digits, never an exponent."""
    if value <= 0:
        return "0"
    decimals = max(0, 2 - math.floor(math.log10(value)))
    return f"{value:.{decimals}f}"


def host_machine(cpuinfo: str | None = None) -> str:
    """This machine's processor as a fitted timing model records it: vendor, family and model
    from /proc/cpuinfo (`AuthenticAMD family 25 model 17`; arm64: implementer and part), the
    identity that decides which native kernels run and how fast."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return "unknown"
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    if "vendor_id" in fields:
        return f"{fields['vendor_id']} family {fields.get('cpu family', '?')} model " + fields.get(
            "model", "?"
        )
    if "CPU implementer" in fields:
        return f"arm implementer {fields['CPU implementer']} part {fields.get('CPU part', '?')}"
    return "unknown"


def machine_of(profile: DeviceProfile) -> str | None:
    """The machine an estimate for `profile` is of, where that is this one (a local process or
    container of the host's arch); None for a board (emulated, or reached over SSH)."""
    from harness.devices import HOST_ARCH

    if profile.backend == "ssh" or profile.target_arch != HOST_ARCH:
        return None
    return host_machine()


# The installed command that sets counting up (a model repository has no scripts/ of harness's).
PREPARE_COMMAND = "harness counting prepare --packages --device {device}"


def not_set_up(reason: Exception, device: str = "DEVICE") -> str:
    """What an estimate row says where counting cannot run here, and how to set it up: the
    installed command (a model repository has no scripts/ of harness's)."""
    command = PREPARE_COMMAND.format(device=device)
    return f"no timing model here ({reason}); `{command}` sets it up (as root, or with sudo)"


def load_cpu_model(name: str, folder: Path | None = None) -> CpuModel:
    """The CPU's parameters from <folder or CPU_FOLDER>/<name>.toml."""
    folder = folder or CPU_FOLDER
    path = folder / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.toml")))
        raise ValueError(f"no timing model for cpu {name!r}; known: {known} (files in {folder})")
    return cpu_model_from_toml(path.read_text(), name)


def cpu_for_profile(profile: DeviceProfile) -> CpuModel:
    """The timing model for a device: its calibrated `timing_model` file where it names one, else
    its `cpu` (QEMU CPU model name, e.g. cortex-a72), else for an x86-64 device on this machine
    the shipped model fitted on this machine's processor, else the arch's default."""
    if profile.timing_model is not None:
        return cpu_model_from_toml(profile.timing_model.read_text(), profile.timing_model.stem)
    if not profile.cpu and profile.target_arch == "amd64":
        here = machine_of(profile)
        for path in sorted(CPU_FOLDER.glob("*.toml")):  # a model fitted on this very machine
            cpu = load_cpu_model(path.stem)
            if here is not None and cpu.machine is not None and machine_matches(cpu.machine, here):
                return cpu
    name = profile.cpu or DEFAULT_CPU_MODEL.get(profile.target_arch, "")
    return load_cpu_model(name)


def timing_counts(
    profile: DeviceProfile,
    model_path: Path,
    dataset: Path | None,
    cpu: CpuModel,
    *,
    samples: int = 1,
    warmup: int = 1,
    input_shapes: dict[str, list[int]] | None = None,
    input_values: dict[str, Any] | None = None,
    output: str | None = None,
    config_file: str = "the harness config",
    timeout: float = 1800.0,
    threads: int = 1,
) -> tuple[TimingCounts, bool]:
    """The plugin's counts for `model_path` (cached); returns (counts, came from the cache).
    `input_values` and `output` are the model's config, as the pair's worker gets them."""
    from harness.timing.run import TimingCounts, count_timing

    key = [
        f"{samples}/{warmup}" + (f"/{threads}t" if threads != 1 else ""),
        json.dumps(input_shapes, sort_keys=True),
        content_sha256(Path(model_path)),
        content_sha256(Path(dataset)) + "/row 0" if dataset else "-",
    ]
    if input_values:  # (absent from keys counted before they were passed: those had none)
        key.append("values " + json.dumps(_plain(input_values), sort_keys=True))
    if output is not None:
        key.append(f"output {output}")
    return _cached(
        profile,
        cpu,
        key,
        TimingCounts.from_json,
        lambda: count_timing(
            profile,
            Path(model_path),
            Path(dataset) if dataset else None,
            cpu=cpu.qemu_cpu,
            l1d=cpu.l1d,
            l2=cpu.l2,
            samples=samples,
            warmup=warmup,
            input_shapes=input_shapes,
            input_values=input_values,
            output=output,
            config_file=config_file,
            timeout=timeout,
            threads=threads,
        ),
    )


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    """Config values as JSON can write them (a state may be given as a nested list)."""
    import numpy as np

    return {k: np.asarray(v).tolist() for k, v in values.items()}


_Counts = TypeVar("_Counts", "TimingCounts", "GenerationCounts")


def _cached(
    profile: DeviceProfile,
    cpu: CpuModel,
    key: list[str],
    from_json: Callable[[dict[str, Any]], _Counts],
    count: Callable[[], _Counts],
) -> tuple[_Counts, bool]:
    """Counts from $HARNESS_CACHE/timing/counts, keyed by `key` and what every count depends on
    (harness, plugin source, QEMU, the guest's Python and runtimes, arch, CPU, caches); counted
    and stored when absent. Returns (counts, came from the cache)."""
    import harness
    from harness.backends.qemu import find_interpreter
    from harness.counting.build import installed_qemu
    from harness.images.common import harness_cache
    from harness.timing.build import source_hash

    key_parts = [
        harness.__version__,
        source_hash(),
        installed_qemu().version,
        find_interpreter(profile).describe(),  # the guest's Python and runtimes (the image)
        profile.target_arch,
        cpu.qemu_cpu,
        cpu.l1d.spec,
        cpu.l2.spec if cpu.l2 else "0",
        *key,
    ]
    digest = hashlib.sha256("\0".join(key_parts).encode()).hexdigest()[:24]
    path = harness_cache("timing") / "counts" / f"{digest}.json"
    if path.is_file():
        return from_json(json.loads(path.read_text())), True
    counts = count()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(counts.as_json(), indent=1) + "\n")
    partial.rename(path)
    return counts, False


def estimate_from_counts(
    counts: TimingCounts,
    cpu: CpuModel,
    device: str,
    cached: bool = False,
    machine: str | None = None,
) -> TimingEstimate:
    """The estimate for counts already taken (pure). `machine`: the machine the estimate is of,
    where a fitted model names the one it was measured on (host_machine(); None: not checked)."""
    per_vcpu = tuple(estimate_cycles(v, cpu) for v in counts.per_vcpu)
    shares = group_shares(busiest_vcpu(counts.per_vcpu, cpu))
    mix = mix_conditions(counts.per_vcpu, cpu, counts.samples)
    outside = setting_conditions(counts.threads, cpu, machine)  # no band covers these
    band, description = cpu.band_fraction, cpu.describe()
    if mix and not outside and band is not None:
        # Only the mix or the size differs from the band's models: the band measured for
        # estimates outside the mix (OUTSIDE_MIX_BAND), said in the description.
        band = max(band, OUTSIDE_MIX_BAND)
        carried = "" if cpu.machine is not None else " (measured on x86, carried over)"
        description += (
            f"; {'; '.join(mix)}: band widened to ±{band:.0%}, the largest error of "
            f"estimates outside the mix in the held-out validation{carried}"
        )
    else:
        outside = mix + outside
    return TimingEstimate(
        ms=estimate_ms(counts.per_vcpu, cpu, counts.samples),
        band_fraction=band,
        model_description=description,
        per_vcpu=per_vcpu,
        instructions_per_inference=counts.total_instructions / counts.samples,
        cached=cached,
        device=device,
        cpu=cpu.name,
        qemu_cpu=counts.cpu,
        outside=outside,
        shares=shares,
    )


def estimate_latency(
    profile: DeviceProfile,
    model_path: Path,
    dataset: Path | None = None,
    *,
    cpu: CpuModel | None = None,
    samples: int = 1,
    warmup: int = 1,
    input_shapes: dict[str, list[int]] | None = None,
    input_values: dict[str, Any] | None = None,
    output: str | None = None,
    config_file: str = "the harness config",
    timeout: float = 1800.0,
    threads: int = 1,
) -> TimingEstimate:
    """Estimated milliseconds per inference of `model_path` on `profile` with `threads` intra-op
    threads (the busiest vCPU decides), with the error band measured for its CPU (measured with
    one thread). `cpu` overrides the profile's timing model."""
    cpu = cpu or cpu_for_profile(profile)
    counts, cached = timing_counts(
        profile,
        model_path,
        dataset,
        cpu,
        samples=samples,
        warmup=warmup,
        input_shapes=input_shapes,
        input_values=input_values,
        output=output,
        config_file=config_file,
        timeout=timeout,
        threads=threads,
    )
    return estimate_from_counts(counts, cpu, profile.name, cached, machine_of(profile))


@dataclass(frozen=True)
class GenerationEstimate:
    """A language model's generation latency on a device: time to first token (prefill of the
    prompt) and milliseconds per decode step, each with the CPU's error band."""

    ttft: TimingEstimate  # ms = the prefill
    decode: TimingEstimate  # ms = per decode step
    prompt_tokens: int
    decode_steps: int

    @property
    def tokens_per_s(self) -> float:
        return 1000.0 / self.decode.ms

    @property
    def tokens_per_s_low(self) -> float:
        return 1000.0 / self.decode.high_ms

    @property
    def tokens_per_s_high(self) -> float:
        return 1000.0 / self.decode.low_ms if self.decode.low_ms > 0 else math.inf


def generation_counts(
    profile: DeviceProfile,
    folder: Path,
    text: str,
    prompt_tokens: int,
    new_tokens: int,
    cpu: CpuModel,
    *,
    timeout: float = 1800.0,
) -> tuple[GenerationCounts, bool]:
    """The plugin's counts for one greedy run of the GenAI model `folder` (cached, keyed like
    timing_counts with the folder's files, the text and the lengths); returns (counts, cached)."""
    from harness.timing.run import GenerationCounts, count_generation

    key = [
        "generation",
        f"{prompt_tokens}/{new_tokens}",
        model_sha256(Path(folder)),
        hashlib.sha256(text.encode()).hexdigest(),
    ]
    return _cached(
        profile,
        cpu,
        key,
        GenerationCounts.from_json,
        lambda: count_generation(
            profile,
            Path(folder),
            text,
            prompt_tokens,
            new_tokens,
            cpu=cpu.qemu_cpu,
            l1d=cpu.l1d,
            l2=cpu.l2,
            timeout=timeout,
        ),
    )


def estimate_generation(
    profile: DeviceProfile,
    folder: Path,
    text: str,
    prompt_tokens: int,
    new_tokens: int,
    *,
    cpu: CpuModel | None = None,
    timeout: float = 1800.0,
) -> GenerationEstimate:
    """Estimated time to first token (a prompt of `prompt_tokens` tokens of `text`) and
    milliseconds per decode step (the `new_tokens - 1` steps after it) of a GenAI model folder
    on `profile`, one intra-op thread, each with the CPU's error band."""
    cpu = (cpu or cpu_for_profile(profile)).for_generation()
    counts, cached = generation_counts(
        profile, folder, text, prompt_tokens, new_tokens, cpu, timeout=timeout
    )
    return GenerationEstimate(
        ttft=estimate_from_counts(counts.prefill, cpu, profile.name, cached, machine_of(profile)),
        decode=estimate_from_counts(counts.decode, cpu, profile.name, cached, machine_of(profile)),
        prompt_tokens=prompt_tokens,
        decode_steps=counts.decode.samples,
    )
