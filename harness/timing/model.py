"""The timing model: device cycles from what the timing plugin counted. Pure: no I/O.

Per vCPU (guest thread), for the instructions between the worker's markers:

    compute = max( max over pipe groups g of  sum_{c in g} n_c * cost_c ,  n / issue_width )
    stall   = (L1D misses that hit L2) * l2_latency * (1 - prefetch_coverage * seq_L1)
            + (L2 misses not in a stream) * memory_latency
            + (L2 misses in a stream)    * memory_latency * (1 - prefetch_coverage)
    cycles  = calibration * (compute + (1 - overlap) * stall)

n_c: instructions of class c (CLASSES); cost_c: the class's reciprocal throughput on its pipes
(cycles per instruction); a pipe group is the set of classes that share issue ports. seq_L1: the
fraction of L1D misses that continue a recent miss stream (what a stream prefetcher catches).
`overlap`: the share of stall cycles an out-of-order core hides behind independent work (0 for an
in-order core). `calibration`: 1 unless fitted on measured latencies (see CpuModel.calibration).

ms = max over vCPUs of cycles / samples / (clock_mhz * 1e3): threads run at once, so the busiest
thread decides the latency, not the sum. Where the CPU file gives the board's sustained DRAM
bandwidth, the cores share it, so an inference also takes at least

    dram_ms = (L2 misses of all vCPUs) * L2 line / samples / dram_bandwidth

and ms is the larger of the two (a roofline bound: the bytes every core's L2 misses fetch, over
one memory bus). Written-back lines are not counted (the plugin does not track them), so dram_ms
is a lower bound.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = [
    "CLASSES",
    "FEATURE_GROUPS",
    "CacheGeometry",
    "CpuModel",
    "NEAR",
    "MixRange",
    "VcpuCounts",
    "VcpuCycles",
    "cpu_model_from_toml",
    "cpu_model_toml",
    "dram_ms",
    "estimate_cycles",
    "OUTSIDE_MIX_BAND",
    "busiest_vcpu",
    "mix_conditions",
    "setting_conditions",
    "estimate_ms",
    "group_shares",
    "machine_matches",
]

# Keep in step with class_names in timing_plugin.c.
CLASSES = (
    "int",
    "int_mul",
    "load",
    "store",
    "branch",
    "fp",
    "simd64_fp",
    "simd64_int",
    "simd128_fp",
    "simd128_int",
    "simd256_fp",
    "simd256_int",
    "simd512_fp",
    "simd512_int",
    "simd_int_mul",
    "other",
)
# Instruction classes grouped as the linear fit prices them (harness.timing.calibration) and as
# an estimate's instruction mix is compared with its calibration set's (MixRange). SIMD is split
# by width because the counted and the device's kernels can differ there: QEMU's x86 TCG has no
# AVX-512, so the AVX2 (256-bit) code it counts is what the device replaces with AVX-512 or VNNI
# kernels, at a different cost per counted instruction, while code that stays 128-bit (SSE) where
# AVX2 was on offer mostly has no wider native path either (docs/timing-model.md). On arm64 every
# SIMD instruction is narrow and the wide groups stay empty.
FEATURE_GROUPS = {
    "scalar": ("int", "int_mul", "branch", "fp", "other"),
    "memory": ("load", "store"),
    "simd_fp": ("simd64_fp", "simd128_fp"),
    "simd_int": ("simd64_int", "simd128_int"),
    "simd_wide_fp": ("simd256_fp", "simd512_fp"),
    "simd_wide_int": ("simd256_int", "simd512_int"),
    "simd_int_mul": ("simd_int_mul",),
}
MEMORY_FIELDS = (
    "loads",
    "stores",
    "load_bytes",
    "store_bytes",
    "l1d_accesses",
    "l1d_misses",
    "l1d_misses_seq",
    "l2_misses",
    "l2_misses_seq",
)


@dataclass(frozen=True)
class CacheGeometry:
    size: int  # bytes
    ways: int
    line: int  # bytes

    def __post_init__(self) -> None:
        sets, rest = divmod(self.size, self.ways * self.line) if self.ways * self.line else (0, 1)
        if self.size <= 0 or rest or sets & (sets - 1) or self.line & (self.line - 1):
            raise ValueError(
                f"cache {self.size} bytes, {self.ways} ways, {self.line}-byte lines: size must "
                "be ways x line x a power-of-two number of sets, line a power of two"
            )

    @property
    def spec(self) -> str:
        """As the plugin takes it: SIZE:WAYS:LINE."""
        return f"{self.size}:{self.ways}:{self.line}"


@dataclass(frozen=True)
class VcpuCounts:
    """One vCPU's counts between the markers (the plugin's `vcpu` record)."""

    vcpu: int
    instructions: int
    classes: Mapping[str, int]
    memory: Mapping[str, int]  # MEMORY_FIELDS

    @classmethod
    def from_plugin(cls, record: Mapping[str, Any]) -> VcpuCounts:
        return cls(
            vcpu=int(record["vcpu"]),
            instructions=int(record["insns"]),
            classes={c: int(record["classes"].get(c, 0)) for c in CLASSES},
            memory={f: int(record.get(f, 0)) for f in MEMORY_FIELDS},
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "vcpu": self.vcpu,
            "instructions": self.instructions,
            "classes": dict(self.classes),
            "memory": dict(self.memory),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> VcpuCounts:
        return cls(
            vcpu=int(data["vcpu"]),
            instructions=int(data["instructions"]),
            classes={c: int(data["classes"].get(c, 0)) for c in CLASSES},
            memory={f: int(data["memory"].get(f, 0)) for f in MEMORY_FIELDS},
        )


def group_shares(counts: VcpuCounts) -> dict[str, float]:
    """Each FEATURE_GROUPS group's share of the vCPU's instructions (0 where none ran)."""
    total = counts.instructions
    return {
        group: (sum(counts.classes.get(c, 0) for c in classes) / total if total else 0.0)
        for group, classes in FEATURE_GROUPS.items()
    }


# How far (L1 distance between group-share vectors) a mix may lie from the nearest model a band
# was measured on and still be inside: 0.1 = at most 5% of the instructions in other groups. The
# per-group ranges alone let through mixes whose every share lies in its range but whose
# combination no model had: x86 dynamic-range models (the memory share of fp32 models with the
# wide-int share of int8 ones) were estimated 41-58% off while inside every range. 0.1 was chosen
# after seeing those errors (0.05-0.2 all kept the band on them; docs/timing-model.md).
NEAR = 0.1


@dataclass(frozen=True)
class MixRange:
    """The instruction mix a band was measured on: for each FEATURE_GROUPS group, the lowest and
    highest share of the instructions (busiest vCPU) over the models the band's errors come from,
    and, where recorded, each model's shares (`points`, in FEATURE_GROUPS order). An estimate
    whose own shares leave any range, or lie farther than `radius` from every point, was not
    validated: its band does not hold."""

    low: Mapping[str, float]
    high: Mapping[str, float]
    models: int  # how many models the ranges span
    source: str  # where the shares were counted
    points: tuple[tuple[float, ...], ...] = ()  # per model; () where not recorded (ranges only)
    radius: float = NEAR

    def __post_init__(self) -> None:
        missing = sorted(set(FEATURE_GROUPS) - set(self.low) | set(FEATURE_GROUPS) - set(self.high))
        unknown = sorted((set(self.low) | set(self.high)) - set(FEATURE_GROUPS))
        if missing or unknown:
            raise ValueError(
                f"an instruction mix needs a [low, high] share for each group "
                f"({', '.join(FEATURE_GROUPS)}); "
                + (
                    f"missing: {', '.join(missing)}"
                    if missing
                    else f"unknown: {', '.join(unknown)}"
                )
            )
        for group in FEATURE_GROUPS:
            if not 0.0 <= self.low[group] <= self.high[group] <= 1.0:
                raise ValueError(f"mix {group}: need 0 <= low <= high <= 1")
        if any(len(p) != len(FEATURE_GROUPS) for p in self.points):
            raise ValueError(f"mix points: one share per group ({', '.join(FEATURE_GROUPS)})")
        if self.radius < 0:
            raise ValueError("mix radius must be >= 0")

    @classmethod
    def spanning(cls, shares: Sequence[Mapping[str, float]], source: str) -> MixRange:
        """The ranges of `shares` (one mapping per model), rounded outwards to 0.1%, and each
        model's shares (rounded to 0.1%) as its points."""
        if not shares:
            raise ValueError("an instruction mix needs at least one model's shares")
        low = {g: math.floor(min(s[g] for s in shares) * 1000) / 1000 for g in FEATURE_GROUPS}
        high = {g: math.ceil(max(s[g] for s in shares) * 1000) / 1000 for g in FEATURE_GROUPS}
        points = tuple(tuple(round(s[g], 3) for g in FEATURE_GROUPS) for s in shares)
        return cls(low, {g: min(v, 1.0) for g, v in high.items()}, len(shares), source, points)

    def nearest(self, shares: Mapping[str, float]) -> float | None:
        """The L1 distance from `shares` to the nearest recorded model (None: none recorded)."""
        if not self.points:
            return None
        mine = [shares[g] for g in FEATURE_GROUPS]
        return min(sum(abs(a - b) for a, b in zip(mine, p, strict=True)) for p in self.points)

    def outside(self, shares: Mapping[str, float]) -> list[str]:
        """Each group whose share lies outside its range, as `scalar 62% (the 35 calibration
        models: 8.1-31.0%)`, and the distance to the nearest model where it exceeds the radius;
        empty when the mix lies inside."""
        reasons = [
            f"{group} {shares[group]:.1%} (its {self.models} models: "
            f"{self.low[group]:.1%}-{self.high[group]:.1%})"
            for group in FEATURE_GROUPS
            if not self.low[group] <= shares[group] <= self.high[group]
        ]
        distance = self.nearest(shares)
        if distance is not None and distance > self.radius:
            reasons.append(
                f"group shares {distance:.2f} from the nearest of its {self.models} models "
                f"(L1; within {self.radius:g} holds)"
            )
        return reasons


@dataclass(frozen=True)
class CpuModel:
    """One CPU's timing parameters (harness/timing/cpus/<name>.toml, each number sourced)."""

    name: str
    description: str
    clock_mhz: float
    issue_width: float  # instructions dispatched per cycle at most
    cost: Mapping[str, float]  # class -> cycles per instruction on its pipe group
    groups: Mapping[str, tuple[str, ...]]  # pipe group -> classes issued there
    l1d: CacheGeometry
    l2: CacheGeometry | None
    l2_latency: float  # cycles, load-to-use of an L1 miss that hits L2
    memory_latency: float  # cycles, of an L2 miss
    prefetch_coverage: float  # share of a stream's misses the hardware prefetcher hides
    overlap: float  # share of the stall cycles hidden by out-of-order execution
    qemu_cpu: str  # the QEMU CPU model the counts are taken under
    calibration: float = 1.0  # a fitted scale (1: not fitted); see docs/timing-model.md
    band_fraction: float | None = None  # the measured error of estimates for this CPU
    band_source: str = "not validated"
    # The error measured for language-model generation (prefill, decode steps), where known.
    generation_band_fraction: float | None = None
    generation_band_source: str = ""
    sources: Mapping[str, str] = field(default_factory=dict)
    # Sustained DRAM bandwidth (MB/s, 1 MB = 1e6 bytes) the cores share; None: not bounded.
    dram_bandwidth_mb_s: float | None = None
    # The conditions the band was measured under (an estimate outside them is not validated):
    # the instruction mix of its models (None: not recorded), the intra-op threads they ran
    # with, and for a model fitted on one machine, that machine (as host_machine() names it).
    mix: MixRange | None = None
    band_threads: int = 1
    machine: str | None = None
    generation_mix: MixRange | None = None  # the same for the generation band
    # The instructions per inference (all vCPUs) of the band's models, lowest and highest: a
    # model far smaller spends its time in per-call upkeep the fit never saw (None: not recorded).
    band_instructions: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.cost) - set(CLASSES))
        if unknown:
            raise ValueError(
                f"cpu {self.name}: unknown instruction classes {', '.join(unknown)} "
                f"(known: {', '.join(CLASSES)})"
            )
        grouped = [c for classes in self.groups.values() for c in classes]
        missing = sorted(set(self.cost) - set(grouped))
        if missing:
            raise ValueError(f"cpu {self.name}: classes in no pipe group: {', '.join(missing)}")
        for key in ("overlap", "prefetch_coverage"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"cpu {self.name}: {key} must be between 0 and 1")
        if self.clock_mhz <= 0 or self.issue_width <= 0 or self.calibration <= 0:
            raise ValueError(f"cpu {self.name}: clock_mhz, issue_width, calibration must be > 0")
        if self.dram_bandwidth_mb_s is not None and self.dram_bandwidth_mb_s <= 0:
            raise ValueError(f"cpu {self.name}: dram_bandwidth must be > 0 MB/s (or left out)")
        if self.band_threads < 1:
            raise ValueError(f"cpu {self.name}: band threads must be at least 1")

    def describe(self) -> str:
        return f"{self.name} timing model at {self.clock_mhz:g} MHz, {self.band_source}"

    def for_generation(self) -> CpuModel:
        """This model with the band measured for language-model generation (the wider of it and
        the vision band), and the instruction mix that band was measured on: a decode step is
        small kernels and runtime upkeep, which the vision models that set `band` do not
        exercise. Where no generation band was measured there is no band: not validated."""
        generation = self.generation_band_fraction
        if generation is None:
            return replace(
                self,
                band_fraction=None,
                band_source=f"{self.band_source}; not validated on generation",
                mix=None,
            )
        band = max(generation, self.band_fraction or 0.0)
        source = self.generation_band_source
        if band != generation:  # the vision band is the wider one: keep it, and say so
            source = f"{self.band_source} (wider than generation's: {source})"
        # The vision models' size range is not the generation band's condition (a decode step is
        # far smaller); its mix is.
        return replace(
            self,
            band_fraction=band,
            band_source=source,
            mix=self.generation_mix,
            band_instructions=None,
        )


@dataclass(frozen=True)
class VcpuCycles:
    vcpu: int
    instructions: int
    compute: float  # cycles the pipes need
    stall: float  # cycles of cache misses before overlap
    cycles: float  # calibration * (compute + (1 - overlap) * stall)
    bottleneck: str  # "issue" or the pipe group that bounds compute


def estimate_cycles(counts: VcpuCounts, cpu: CpuModel) -> VcpuCycles:
    """Cycles for one vCPU's counts on `cpu` (module docstring)."""
    issue = counts.instructions / cpu.issue_width
    pressure = {
        group: sum(counts.classes.get(c, 0) * cpu.cost.get(c, 0.0) for c in classes)
        for group, classes in cpu.groups.items()
    }
    bottleneck, busiest = max(pressure.items(), key=lambda item: item[1], default=("issue", 0.0))
    compute = max(issue, busiest)
    if compute == issue:
        bottleneck = "issue"
    memory = counts.memory
    l1_misses = memory.get("l1d_misses", 0)
    l2_misses = memory.get("l2_misses", 0) if cpu.l2 is not None else l1_misses
    seq_l1 = memory.get("l1d_misses_seq", 0) / l1_misses if l1_misses else 0.0
    l2_hits = max(l1_misses - l2_misses, 0)
    streamed = min(memory.get("l2_misses_seq", 0), l2_misses)
    stall = (
        l2_hits * cpu.l2_latency * (1.0 - cpu.prefetch_coverage * seq_l1)
        + (l2_misses - streamed) * cpu.memory_latency
        + streamed * cpu.memory_latency * (1.0 - cpu.prefetch_coverage)
    )
    cycles = cpu.calibration * (compute + (1.0 - cpu.overlap) * stall)
    return VcpuCycles(counts.vcpu, counts.instructions, compute, stall, cycles, bottleneck)


def dram_ms(per_vcpu: Sequence[VcpuCounts], cpu: CpuModel, samples: int) -> float | None:
    """The least milliseconds per inference the shared memory bus allows: the lines all vCPUs'
    L2 misses fetch (L1D misses where no L2 is simulated), over the sustained DRAM bandwidth.
    None where the CPU file gives no bandwidth."""
    if samples < 1:
        raise ValueError("samples must be at least 1")
    if cpu.dram_bandwidth_mb_s is None:
        return None
    last = cpu.l2 or cpu.l1d
    misses = "l2_misses" if cpu.l2 is not None else "l1d_misses"
    fetched = sum(v.memory.get(misses, 0) for v in per_vcpu) * last.line
    return fetched / samples / (cpu.dram_bandwidth_mb_s * 1e3)  # MB/s = 1e3 bytes per ms


def estimate_ms(per_vcpu: Sequence[VcpuCounts], cpu: CpuModel, samples: int) -> float:
    """Milliseconds per inference: the busiest vCPU's cycles / samples / clock, or the DRAM
    bound (dram_ms) where that is larger."""
    if samples < 1:
        raise ValueError("samples must be at least 1")
    if not per_vcpu:
        raise ValueError("no vCPU ran between the markers: nothing to estimate")
    busiest = max(estimate_cycles(v, cpu).cycles for v in per_vcpu)
    cores = busiest / samples / (cpu.clock_mhz * 1e3)
    return max(cores, dram_ms(per_vcpu, cpu, samples) or 0.0)


def machine_matches(recorded: str, actual: str) -> bool:
    """`actual` (e.g. `AuthenticAMD family 25 model 17`) is the machine `recorded` names, which
    may stop early (`AuthenticAMD family 26`: any model of that family)."""
    return actual == recorded or actual.startswith(recorded + " ")


# The band of an estimate whose instruction mix or size lies outside every model its CPU's band
# was measured on (mix_conditions): the largest error of the estimates flagged so in issue 23's
# held-out validation on x86, measured natively here (docs/timing-model.md, "Where a band
# holds": 47 models held out by build recipe, -49% to +67%; 12 held-out architectures, -20% to
# +15%; 5 real models, -41% to +48%). Measured on x86 only: for a board's CPU it is carried over,
# and the estimate says so. Other threads or another machine get no band at all (a Zen 5 fit
# on this Zen 4 was 88% off).
OUTSIDE_MIX_BAND = 0.67


def busiest_vcpu(per_vcpu: Sequence[VcpuCounts], cpu: CpuModel) -> VcpuCounts:
    """The vCPU with the most estimated cycles: it decides the estimate, and its mix the band."""
    if not per_vcpu:
        raise ValueError("no vCPU ran between the markers: nothing to estimate")
    return max(per_vcpu, key=lambda v: estimate_cycles(v, cpu).cycles)


def mix_conditions(
    per_vcpu: Sequence[VcpuCounts], cpu: CpuModel, samples: int = 1
) -> tuple[str, ...]:
    """Where these counts' instruction mix (busiest vCPU) or instructions per inference leave
    those of the models `cpu`'s band was measured on, or no mix was recorded to say: what
    OUTSIDE_MIX_BAND covers."""
    reasons = []
    if cpu.mix is None:  # nothing says the mix is inside: take it as outside
        reasons.append(
            f"{cpu.name} records no instruction mix for its band (a file from before mixes were "
            "recorded: `harness calibrate` writes one with it)"
        )
    else:
        out = cpu.mix.outside(group_shares(busiest_vcpu(per_vcpu, cpu)))
        if out:
            reasons.append("instruction mix outside the calibration set's: " + ", ".join(out))
    size = sum(v.instructions for v in per_vcpu) / samples
    if cpu.band_instructions is not None:
        low, high = cpu.band_instructions
        if not low <= size <= high:
            reasons.append(
                f"{size / 1e6:.3g} M instructions per inference (its models: "
                f"{low / 1e6:.3g}-{high / 1e6:.3g} M)"
            )
    return tuple(reasons)


def setting_conditions(threads: int, cpu: CpuModel, machine: str | None = None) -> tuple[str, ...]:
    """Where the estimate's setting leaves the band's, which no band covers: other intra-op
    threads than cpu.band_threads, and `machine` (the machine the estimate is of, where it is
    this one; None: not checked) other than the one a fitted model was measured on."""
    reasons = []
    if threads != cpu.band_threads:
        reasons.append(f"{threads} intra-op threads; the band was measured at {cpu.band_threads}")
    if (
        cpu.machine is not None
        and machine is not None
        and not machine_matches(cpu.machine, machine)
    ):
        reasons.append(f"fitted on {cpu.machine}, and this machine is {machine}")
    return tuple(reasons)


def _cache(data: Mapping[str, Any] | None, where: str) -> CacheGeometry | None:
    if not data:
        return None
    try:
        return CacheGeometry(int(data["size"]), int(data["ways"]), int(data["line"]))
    except KeyError as exc:
        raise ValueError(f"{where}: a cache needs size, ways and line ({exc} missing)") from None


def cpu_model_from_toml(text: str, name: str) -> CpuModel:
    """A CpuModel from a cpus/*.toml text. Every number is a table {value = X, source = "..."}
    so that no parameter goes without its source."""
    data = tomllib.loads(text)
    sources: dict[str, str] = {}

    def number(key: str, table: Mapping[str, Any] = data, prefix: str = "") -> float:
        entry = table.get(key)
        if not isinstance(entry, Mapping) or "value" not in entry or "source" not in entry:
            raise ValueError(
                f'cpu {name}: {prefix}{key} must be a table {{ value = ..., source = "..." }}'
            )
        sources[f"{prefix}{key}"] = str(entry["source"])
        return float(entry["value"])

    cost = {c: number(c, data.get("cost", {}), "cost.") for c in data.get("cost", {})}
    groups = {g: tuple(classes) for g, classes in data.get("groups", {}).items()}
    l1d = _cache(data.get("l1d"), f"cpu {name}: l1d")
    if l1d is None:
        raise ValueError(f"cpu {name}: an [l1d] table (size, ways, line) is required")
    for key in ("l1d", "l2", "machine"):
        if key in data and "source" in data[key]:
            sources[key] = str(data[key]["source"])
    band, generation = data.get("band"), data.get("generation_band")
    machine = data.get("machine")
    if machine is not None and not ("name" in machine and "source" in machine):
        raise ValueError(f'cpu {name}: [machine] needs name = "..." and source = "..."')
    return CpuModel(
        name=name,
        description=str(data.get("description", name)),
        clock_mhz=number("clock_mhz"),
        issue_width=number("issue_width"),
        cost=cost,
        groups=groups,
        l1d=l1d,
        l2=_cache(data.get("l2"), f"cpu {name}: l2"),
        l2_latency=number("l2_latency"),
        memory_latency=number("memory_latency"),
        prefetch_coverage=number("prefetch_coverage"),
        overlap=number("overlap"),
        qemu_cpu=str(data.get("qemu_cpu", "max")),
        calibration=number("calibration") if "calibration" in data else 1.0,
        band_fraction=float(band["fraction"]) if band else None,
        band_source=str(band["source"]) if band else "not validated",
        generation_band_fraction=float(generation["fraction"]) if generation else None,
        generation_band_source=str(generation["source"]) if generation else "",
        sources=sources,
        dram_bandwidth_mb_s=number("dram_bandwidth") if "dram_bandwidth" in data else None,
        mix=_mix(data.get("mix"), f"cpu {name}: [mix]"),
        band_threads=int(band.get("threads", 1)) if band else 1,
        band_instructions=(
            (float(band["instructions"][0]), float(band["instructions"][1]))
            if band and "instructions" in band
            else None
        ),
        machine=str(machine["name"]) if machine else None,
        generation_mix=_mix(data.get("generation_mix"), f"cpu {name}: [generation_mix]"),
    )


def _mix(data: Mapping[str, Any] | None, where: str) -> MixRange | None:
    """A [mix] table: models, source, and `group = [low, high]` for each FEATURE_GROUPS group."""
    if data is None:
        return None
    if "source" not in data or "models" not in data:
        raise ValueError(
            f'{where} needs models = N and source = "..." (where the shares come from)'
        )
    ranges = {k: v for k, v in data.items() if k not in ("source", "models", "points", "radius")}
    try:
        return MixRange(
            low={g: float(v[0]) for g, v in ranges.items()},
            high={g: float(v[1]) for g, v in ranges.items()},
            models=int(data["models"]),
            source=str(data["source"]),
            points=tuple(tuple(float(x) for x in p) for p in data.get("points", ())),
            radius=float(data.get("radius", NEAR)),
        )
    except (TypeError, IndexError, ValueError) as exc:
        raise ValueError(f"{where}: {exc} (each group: [low, high] shares)") from None


def _mix_toml(table: str, mix: MixRange) -> list[str]:
    lines = ["", f"[{table}]", f"models = {mix.models}", f"source = {json.dumps(mix.source)}"]
    lines += [f"{g} = [{mix.low[g]!r}, {mix.high[g]!r}]" for g in FEATURE_GROUPS]
    if mix.points:  # each model's shares, in the groups' order above
        lines += [f"radius = {mix.radius!r}", "points = ["]
        lines += [f"    [{', '.join(repr(x) for x in p)}]," for p in mix.points] + ["]"]
    return lines


def cpu_model_toml(cpu: CpuModel, header: str = "") -> str:
    """`cpu` as a cpus/*.toml text that cpu_model_from_toml reads back: every number with its
    source (cpu.sources; a number without one is refused). `header`: comment lines on top."""

    def entry(key: str, value: float) -> str:
        if key not in cpu.sources:
            raise ValueError(f"cpu {cpu.name}: {key} has no source")
        return f"{{ value = {value!r}, source = {json.dumps(cpu.sources[key])} }}"

    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    lines += [f"description = {json.dumps(cpu.description)}"]
    lines += [f"qemu_cpu = {json.dumps(cpu.qemu_cpu)}"]
    for key in ("clock_mhz", "issue_width", "l2_latency", "memory_latency", "prefetch_coverage"):
        lines.append(f"{key} = {entry(key, float(getattr(cpu, key)))}")
    lines += [f"overlap = {entry('overlap', cpu.overlap)}"]
    if cpu.calibration != 1.0 or "calibration" in cpu.sources:
        lines.append(f"calibration = {entry('calibration', cpu.calibration)}")
    if cpu.dram_bandwidth_mb_s is not None:
        lines.append(f"dram_bandwidth = {entry('dram_bandwidth', cpu.dram_bandwidth_mb_s)}")
    for key, cache in (("l1d", cpu.l1d), ("l2", cpu.l2)):
        if cache is not None:
            lines += ["", f"[{key}]", f"size = {cache.size}", f"ways = {cache.ways}"]
            lines += [f"line = {cache.line}", f"source = {json.dumps(cpu.sources.get(key, ''))}"]
    lines += ["", "[cost]"] + [f"{c} = {entry(f'cost.{c}', v)}" for c, v in cpu.cost.items()]
    lines += ["", "[groups]"]
    lines += [f"{g} = {json.dumps(list(classes))}" for g, classes in cpu.groups.items()]
    if cpu.band_fraction is not None:
        lines += ["", "[band]", f"fraction = {cpu.band_fraction!r}"]
        lines.append(f"source = {json.dumps(cpu.band_source)}")
        if cpu.band_threads != 1:
            lines.append(f"threads = {cpu.band_threads}")
        if cpu.band_instructions is not None:  # per inference, the band's models' range
            low, high = cpu.band_instructions
            lines.append(f"instructions = [{low!r}, {high!r}]")
    if cpu.mix is not None:
        lines += _mix_toml("mix", cpu.mix)
    if cpu.machine is not None:
        lines += ["", "[machine]", f"name = {json.dumps(cpu.machine)}"]
        lines.append(f"source = {json.dumps(cpu.sources.get('machine', 'the measured device'))}")
    if cpu.generation_band_fraction is not None:
        lines += ["", "[generation_band]", f"fraction = {cpu.generation_band_fraction!r}"]
        lines.append(f"source = {json.dumps(cpu.generation_band_source)}")
    if cpu.generation_mix is not None:
        lines += _mix_toml("generation_mix", cpu.generation_mix)
    return "\n".join(lines) + "\n"
