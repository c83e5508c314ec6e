"""A counted run with the timing plugin: the worker under dynamic qemu-aarch64 / qemu-x86_64,
as counting mode starts it (harness.backends.qemu: -L prefix, fixed environment, setarch -R,
virtual clock), with timing_plugin.c instead of insn_count.c. One `bench(count=True)` loop of
`samples` inferences after `warmup` ones; the plugin writes one record per vCPU at END.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.backends.base import (
    BackendUnavailable,
    Target,
    WorkerClient,
    WorkerError,
    greet,
    load,
)
from harness.backends.qemu import MODEL_ID, QemuChannel, start_under_plugin
from harness.counting.build import PluginBuildError
from harness.timing.build import build_timing_plugin
from harness.timing.model import CacheGeometry, VcpuCounts

if TYPE_CHECKING:
    from harness.devices import DeviceProfile


class TimingRunError(Exception):
    """The plugin wrote no record for the counted loop."""


# What the counted worker is told the config is called: the same bytes in every counted worker
# (harness.backends.qemu.count_instructions sends the same), since any difference in a request
# moves the heap and with it the counts; the host puts the real name back into its errors.
CONFIG_STAND_IN = "the harness config"


@dataclass(frozen=True)
class TimingCounts:
    """What the plugin counted for one loop of `samples` inferences."""

    per_vcpu: tuple[VcpuCounts, ...]
    total_instructions: int
    samples: int
    warmup: int
    arch: str
    cpu: str  # QEMU CPU model
    qemu_version: str
    interpreter: str
    run_s: float
    threads: int = 1  # intra-op threads the runtime was given

    def as_json(self) -> dict[str, Any]:
        return {
            "per_vcpu": [v.as_json() for v in self.per_vcpu],
            "total_instructions": self.total_instructions,
            "samples": self.samples,
            "warmup": self.warmup,
            "arch": self.arch,
            "cpu": self.cpu,
            "qemu_version": self.qemu_version,
            "interpreter": self.interpreter,
            "run_s": self.run_s,
            "threads": self.threads,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TimingCounts:
        return cls(
            per_vcpu=tuple(VcpuCounts.from_json(v) for v in data["per_vcpu"]),
            **{k: v for k, v in data.items() if k != "per_vcpu"},
        )


def parse_records(text: str) -> list[tuple[list[VcpuCounts], int]]:
    """(vCPU records, total instructions) per END marker, in order."""
    loops: list[tuple[list[VcpuCounts], int]] = []
    pending: list[VcpuCounts] = []
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        if record["record"] == "vcpu":
            pending.append(VcpuCounts.from_plugin(record))
        elif record["record"] == "total":
            loops.append((pending, int(record["insns"])))
            pending = []
    return loops


@dataclass
class _CountedWorker:
    """A fresh worker under QEMU with the timing plugin, greeted, its model loaded."""

    client: WorkerClient
    channel: QemuChannel
    outfile: Path
    arch: str
    qemu_cpu: str
    qemu_version: str
    interpreter: str
    started: float

    def loops(self, expected: int, what: str) -> list[tuple[list[VcpuCounts], int]]:
        """The plugin's records, one per marked region: exactly `expected` of them."""
        loops = parse_records(self.outfile.read_text() if self.outfile.exists() else "")
        if len(loops) != expected:
            tail = self.channel.stderr_tail().strip()
            raise TimingRunError(
                f"the timing plugin wrote {len(loops)} records for {what} (expected "
                f"{expected}): the worker's marker system calls did not reach it"
                + (f"; worker output:\n{tail}" if tail else "")
            )
        return loops

    def counts(
        self, region: tuple[list[VcpuCounts], int], samples: int, warmup: int, threads: int
    ) -> TimingCounts:
        per_vcpu, total = region
        return TimingCounts(
            per_vcpu=tuple(per_vcpu),
            total_instructions=total,
            samples=samples,
            warmup=warmup,
            arch=self.arch,
            cpu=self.qemu_cpu,
            qemu_version=self.qemu_version,
            interpreter=self.interpreter,
            run_s=time.monotonic() - self.started,
            threads=threads,
        )


@contextmanager
def _counted_worker(
    profile: DeviceProfile,
    model_path: Path,
    dataset: Path | None,
    *,
    cpu: str | None,
    l1d: CacheGeometry,
    l2: CacheGeometry | None,
    threads: int,
    timeout: float,
    classes_file: Path | None = None,
    config_file: str = CONFIG_STAND_IN,
    **load_arguments: Any,
) -> Iterator[_CountedWorker]:
    """Start the worker for `profile`'s arch under QEMU CPU model `cpu` (default: the
    profile's) with the timing plugin, and load `model_path`; closed (and its folder removed)
    on leaving."""
    started = time.monotonic()
    try:
        plugin = build_timing_plugin()
    except PluginBuildError as exc:
        raise BackendUnavailable(f"the timing plugin cannot be built: {exc}") from exc
    files: Sequence[Path] = [Path(model_path)] + ([Path(dataset)] if dataset else [])
    options: dict[str, object] = {"l1d": l1d.spec, "l2": l2.spec if l2 else "0"}
    if classes_file is not None:
        options["classes"] = classes_file

    emulated = start_under_plugin(
        profile,
        files,
        threads,
        plugin=plugin.path,
        vclock=plugin.vclock,
        options=options,
        cpu=cpu,
        scratch="harness-timing-",
        outname="timing.jsonl",
    )
    channel, path_map = emulated.channel, emulated.path_map
    target_paths = {p.resolve(): g for p, g in path_map.items()}
    client = WorkerClient(Target(channel, "emulated", path_map=target_paths), profile.name)
    try:  # the exchange every worker gets (harness.backends.base)
        greet(client, [Path(model_path)], timeout)
        load(
            client,
            MODEL_ID,
            Path(model_path).resolve(),
            Path(dataset).resolve() if dataset else None,
            timeout,
            threads=threads,
            **load_arguments,
        )
        yield _CountedWorker(
            client,
            channel,
            emulated.outfile,
            emulated.arch,
            emulated.cpu,
            emulated.qemu_version,
            emulated.interpreter.describe(),
            started,
        )
    except WorkerError as exc:
        raise WorkerError(exc.kind, str(exc).replace(CONFIG_STAND_IN, config_file)) from exc
    finally:
        client.close()


def count_timing(
    profile: DeviceProfile,
    model_path: Path,
    dataset: Path | None,
    *,
    cpu: str | None,
    l1d: CacheGeometry,
    l2: CacheGeometry | None,
    samples: int = 1,
    warmup: int = 1,
    input_shapes: dict[str, list[int]] | None = None,
    input_values: dict[str, Any] | None = None,
    output: str | None = None,
    config_file: str = CONFIG_STAND_IN,
    timeout: float = 1800.0,
    classes_file: Path | None = None,
    threads: int = 1,
) -> TimingCounts:
    """Counts for `samples` inferences of `model_path` on `profile`'s arch, under QEMU CPU model
    `cpu` (default: the profile's), `threads` intra-op threads (one vCPU record per guest thread
    that ran), in a fresh worker, fed as the pair's worker is (`input_shapes`, `input_values`,
    `output` from the model's config, errors naming `config_file`). `classes_file`: where the
    plugin lists every distinct instruction it translated with its class (checking)."""
    with _counted_worker(
        profile,
        model_path,
        dataset,
        cpu=cpu,
        l1d=l1d,
        l2=l2,
        threads=threads,
        timeout=timeout,
        classes_file=classes_file,
        output=output,
        input_shapes=input_shapes,
        input_values=input_values,  # a scalar (a sample rate) or a state the dataset lacks
        config_file=config_file,  # named in errors, never sent (CONFIG_STAND_IN)
        rows=[0] if dataset else None,  # bench runs the first sample: hold only that row
    ) as worker:
        worker.client.request(
            "bench", timeout, model_id=MODEL_ID, samples=samples, warmup=warmup, count=True
        )
        (loop,) = worker.loops(1, "one counted loop")
        return worker.counts(loop, samples, warmup, threads)


@dataclass(frozen=True)
class GenerationCounts:
    """What the plugin counted for one greedy run of a language model: the prefill of the
    prompt to the first token (time to first token) and the decode steps after it."""

    prefill: TimingCounts  # samples = 1
    decode: TimingCounts  # samples = decode steps

    def as_json(self) -> dict[str, Any]:
        return {"prefill": self.prefill.as_json(), "decode": self.decode.as_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GenerationCounts:
        return cls(TimingCounts.from_json(data["prefill"]), TimingCounts.from_json(data["decode"]))


def count_generation(
    profile: DeviceProfile,
    folder: Path,
    text: str,
    prompt_tokens: int,
    new_tokens: int,
    *,
    cpu: str | None,
    l1d: CacheGeometry,
    l2: CacheGeometry | None,
    timeout: float = 1800.0,
) -> GenerationCounts:
    """Counts for one greedy run of the GenAI model `folder` on `profile`'s arch: a prompt of
    `prompt_tokens` tokens of `text`, then `new_tokens - 1` decode steps (the worker's
    `count_decode`: one warm-up run, then the counted one), one intra-op thread."""
    if new_tokens < 2:
        raise ValueError(f"new_tokens = {new_tokens}: a decode step needs at least 2 tokens")
    with _counted_worker(
        profile, Path(folder), None, cpu=cpu, l1d=l1d, l2=l2, threads=1, timeout=timeout
    ) as worker:
        worker.client.request(
            "count_decode",
            timeout,
            model_id=MODEL_ID,
            text=text,
            prompt_tokens=prompt_tokens,
            new_tokens=new_tokens,
        )
        prefill, decode = worker.loops(2, "a counted generation (prefill, decode steps)")
        return GenerationCounts(
            worker.counts(prefill, 1, 1, 1), worker.counts(decode, new_tokens - 1, 1, 1)
        )
