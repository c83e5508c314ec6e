"""A counted run with the timing plugin: the worker under dynamic qemu-aarch64 / qemu-x86_64,
as counting mode starts it (harness.backends.qemu: -L prefix, fixed environment, setarch -R,
virtual clock), with timing_plugin.c instead of insn_count.c. One `bench(count=True)` loop of
`samples` inferences after `warmup` ones; the plugin writes one record per vCPU at END.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.timing._counting import (
    DEFAULT_CPU,
    MODEL_ID,
    BackendUnavailable,
    PluginBuildError,
    QemuChannel,
    Target,
    WorkerClient,
    build_prefix,
    find_interpreter,
    greet,
    load,
    qemu_binary,
    qemu_command,
    qemu_version,
    worker_environment,
)
from harness.timing.build import build_timing_plugin
from harness.timing.model import CacheGeometry, VcpuCounts

if TYPE_CHECKING:
    from harness.devices import DeviceProfile


class TimingRunError(Exception):
    """The plugin wrote no record for the counted loop."""


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


def plugin_argument(
    plugin: Path,
    outfile: Path,
    l1d: CacheGeometry,
    l2: CacheGeometry | None,
    classes_file: Path | None = None,
) -> str:
    for path in (plugin, outfile, classes_file):
        if path is not None and "," in str(path):
            raise BackendUnavailable(f"{path}: QEMU's -plugin option cannot take a ',' in a path")
    argument = f"{plugin},outfile={outfile},l1d={l1d.spec},l2={l2.spec if l2 else '0'}"
    return argument + (f",classes={classes_file}" if classes_file is not None else "")


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
    timeout: float = 1800.0,
    classes_file: Path | None = None,
    threads: int = 1,
) -> TimingCounts:
    """Counts for `samples` inferences of `model_path` on `profile`'s arch, under QEMU CPU model
        `cpu` (default: the profile's), `threads` intra-op threads (one vCPU record per guest thread
    that ran), in a fresh worker. `classes_file`: where
        the plugin lists every distinct instruction it translated with its class (checking)."""
    started = time.monotonic()
    arch = profile.target_arch
    qemu = qemu_binary(arch)
    if shutil.which("setarch") is None:
        raise BackendUnavailable("setarch (util-linux) is missing: it turns off ASLR")
    try:
        plugin = build_timing_plugin()
    except PluginBuildError as exc:
        raise BackendUnavailable(f"the timing plugin cannot be built: {exc}") from exc
    interpreter = find_interpreter(profile)
    qemu_cpu = cpu or profile.cpu or DEFAULT_CPU
    files: Sequence[Path] = [Path(model_path)] + ([Path(dataset)] if dataset else [])
    workdir = Path(tempfile.mkdtemp(prefix="harness-timing-"))
    try:
        prefix = workdir / "root"
        path_map = build_prefix(prefix, interpreter, files, profile.cpuinfo)
        outfile = workdir / "timing.jsonl"
        command = qemu_command(
            qemu, qemu_cpu, prefix, plugin.path, outfile, "callback", interpreter
        )
        command[command.index("-plugin") + 1] = plugin_argument(
            plugin.path, outfile, l1d, l2, classes_file
        )
        env = {**worker_environment(threads, interpreter), "LD_PRELOAD": str(plugin.vclock)}
        channel = QemuChannel(command, env, workdir)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
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
            output=None,
            input_shapes=input_shapes,
            input_values=None,
        )
        client.request(
            "bench", timeout, model_id=MODEL_ID, samples=samples, warmup=warmup, count=True
        )
        loops = parse_records(outfile.read_text() if outfile.exists() else "")
        if len(loops) != 1:
            tail = channel.stderr_tail().strip()
            raise TimingRunError(
                f"the timing plugin wrote {len(loops)} records for one counted loop (expected "
                "1): the worker's marker system calls did not reach it"
                + (f"; worker output:\n{tail}" if tail else "")
            )
    finally:
        client.close()
    per_vcpu, total = loops[0]
    return TimingCounts(
        per_vcpu=tuple(per_vcpu),
        total_instructions=total,
        samples=samples,
        warmup=warmup,
        arch=arch,
        cpu=qemu_cpu,
        qemu_version=qemu_version(qemu),
        interpreter=interpreter.describe(),
        run_s=time.monotonic() - started,
        threads=threads,
    )


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
    started = time.monotonic()
    arch = profile.target_arch
    qemu = qemu_binary(arch)
    if shutil.which("setarch") is None:
        raise BackendUnavailable("setarch (util-linux) is missing: it turns off ASLR")
    try:
        plugin = build_timing_plugin()
    except PluginBuildError as exc:
        raise BackendUnavailable(f"the timing plugin cannot be built: {exc}") from exc
    interpreter = find_interpreter(profile)
    qemu_cpu = cpu or profile.cpu or DEFAULT_CPU
    workdir = Path(tempfile.mkdtemp(prefix="harness-timing-"))
    try:
        prefix = workdir / "root"
        path_map = build_prefix(prefix, interpreter, [Path(folder)], profile.cpuinfo)
        outfile = workdir / "timing.jsonl"
        command = qemu_command(
            qemu, qemu_cpu, prefix, plugin.path, outfile, "callback", interpreter
        )
        command[command.index("-plugin") + 1] = plugin_argument(plugin.path, outfile, l1d, l2)
        env = {**worker_environment(1, interpreter), "LD_PRELOAD": str(plugin.vclock)}
        channel = QemuChannel(command, env, workdir)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    target_paths = {p.resolve(): g for p, g in path_map.items()}
    client = WorkerClient(Target(channel, "emulated", path_map=target_paths), profile.name)
    try:
        greet(client, [Path(folder)], timeout)
        load(client, MODEL_ID, Path(folder).resolve(), None, timeout, threads=1)
        client.request(
            "count_decode",
            timeout,
            model_id=MODEL_ID,
            text=text,
            prompt_tokens=prompt_tokens,
            new_tokens=new_tokens,
        )
        loops = parse_records(outfile.read_text() if outfile.exists() else "")
        if len(loops) != 2:
            tail = channel.stderr_tail().strip()
            raise TimingRunError(
                f"the timing plugin wrote {len(loops)} records for a counted generation "
                "(expected 2: prefill, decode steps): the worker's marker system calls did not "
                "reach it" + (f"; worker output:\n{tail}" if tail else "")
            )
    finally:
        client.close()
    run_s = time.monotonic() - started
    version, described = qemu_version(qemu), interpreter.describe()

    def counts(region: tuple[list[VcpuCounts], int], samples: int) -> TimingCounts:
        per_vcpu, total = region
        return TimingCounts(
            tuple(per_vcpu), total, samples, 1, arch, qemu_cpu, version, described, run_s
        )

    return GenerationCounts(counts(loops[0], 1), counts(loops[1], new_tokens - 1))
