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
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = [
    "CLASSES",
    "CacheGeometry",
    "CpuModel",
    "VcpuCounts",
    "VcpuCycles",
    "cpu_model_from_toml",
    "cpu_model_toml",
    "dram_ms",
    "estimate_cycles",
    "estimate_ms",
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

    def describe(self) -> str:
        return f"{self.name} timing model at {self.clock_mhz:g} MHz, {self.band_source}"

    def for_generation(self) -> CpuModel:
        """This model with the band measured for language-model generation where it is wider
        (a decode step is small kernels and runtime upkeep, which the vision models that set
        `band` do not exercise); where none was measured, the band says so."""
        generation = self.generation_band_fraction
        if generation is None:
            return replace(self, band_source=f"{self.band_source}; not validated on generation")
        if self.band_fraction is not None and self.band_fraction >= generation:
            return self
        return replace(self, band_fraction=generation, band_source=self.generation_band_source)


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
    for key in ("l1d", "l2"):
        if key in data and "source" in data[key]:
            sources[key] = str(data[key]["source"])
    band, generation = data.get("band"), data.get("generation_band")
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
    )


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
    if cpu.generation_band_fraction is not None:
        lines += ["", "[generation_band]", f"fraction = {cpu.generation_band_fraction!r}"]
        lines.append(f"source = {json.dumps(cpu.generation_band_source)}")
    return "\n".join(lines) + "\n"
