"""The timing plugin under QEMU on a tiny model (examples/digits): counts that repeat exactly, the
same instruction total as insn_count.c, instruction classes that add up, caches that see the
accesses, and an estimate with its band through the public API.

Needs qemu-user, the counting plugin's header (scripts/setup-counting.sh) and the rpi4 device
trees (`python -m harness.counting prepare --device rpi4`). Missing pieces skip here and fail
under CI=true."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from conftest import ROOT, unavailable
from harness.backends.base import BackendUnavailable
from harness.backends.qemu import count_instructions
from harness.counting.build import MARKERS
from harness.devices import DeviceProfile, load_profiles
from harness.timing import estimate_latency, load_cpu_model
from harness.timing.model import CLASSES, OUTSIDE_MIX_BAND, CacheGeometry
from harness.timing.run import TimingCounts, count_timing
from harness.worker import markers

DIGITS = ROOT / "examples" / "digits"
MODEL = DIGITS / "models" / "digits_float.tflite"
DATA = DIGITS / "data" / "digits_test.npz"
SAMPLES, WARMUP = 10, 3
L1D, L2 = CacheGeometry(32768, 2, 64), CacheGeometry(1048576, 16, 64)


def test_markers_come_from_the_counting_plugins_handler() -> None:
    """One marker handler (harness/counting/markers.h) for both plugins: no copy to drift."""
    text = (ROOT / "harness" / "timing" / "timing_plugin.c").read_text()
    assert '#include "markers.h"' in text
    assert "#define MARKER_" not in text and "lseek_number = 62" not in text
    defines = dict(
        re.findall(r"#define (MARKER_\w+) (?:UINT64_C\()?(0x[0-9a-f]+)", MARKERS.read_text())
    )
    assert int(defines["MARKER_BEGIN"], 16) == markers.BEGIN
    assert int(defines["MARKER_END"], 16) == markers.END


@pytest.fixture(scope="module")
def rpi4(counting_plugin: Path) -> DeviceProfile:  # QEMU (the "qemu" marker)
    if shutil.which("qemu-aarch64") is None:
        unavailable("qemu-user is not installed: run scripts/setup-counting.sh as root")
    return load_profiles()["rpi4"]


def counted(profile: DeviceProfile, model: Path = MODEL, **kwargs: object) -> TimingCounts:
    try:
        return count_timing(
            profile, model, DATA, cpu=None, l1d=L1D, l2=L2, samples=SAMPLES, warmup=WARMUP,
            **kwargs,  # type: ignore[arg-type]
        )  # fmt: skip
    except BackendUnavailable as exc:
        unavailable(f"timing counts on {profile.name}: {exc}")
        raise


@pytest.fixture(scope="module")
def runs(rpi4: DeviceProfile, tmp_path_factory: pytest.TempPathFactory) -> list[TimingCounts]:
    classes = tmp_path_factory.mktemp("classes") / "classes.txt"
    first = counted(rpi4, classes_file=classes)
    assert classes.read_text().strip(), "the plugin listed no instructions"
    return [first, counted(rpi4)]


def test_counts_repeat_exactly(runs: list[TimingCounts]) -> None:
    first, second = runs
    assert first.per_vcpu == second.per_vcpu
    assert first.total_instructions == second.total_instructions > 0


def test_total_is_insn_counts_count(rpi4: DeviceProfile, runs: list[TimingCounts]) -> None:
    reference = count_instructions(rpi4, MODEL, DATA, samples=SAMPLES, warmup=WARMUP)
    assert runs[0].total_instructions == reference.total


def test_classes_add_up_and_the_caches_see_every_access(runs: list[TimingCounts]) -> None:
    (vcpu,) = runs[0].per_vcpu  # one intra-op thread: one vCPU ran in the loop
    assert set(vcpu.classes) == set(CLASSES)
    assert sum(vcpu.classes.values()) == vcpu.instructions == runs[0].total_instructions
    # An XNNPACK fully-connected float model on a Cortex-A72: NEON FP arithmetic, loads, branches.
    for name in ("int", "load", "store", "branch", "simd128_fp"):
        assert vcpu.classes[name] > 0, name
    memory = vcpu.memory
    assert memory["l1d_accesses"] >= memory["loads"] + memory["stores"] > 0
    assert 0 < memory["l1d_misses"] < memory["l1d_accesses"]
    assert memory["l2_misses"] <= memory["l1d_misses"]
    assert memory["l1d_misses_seq"] <= memory["l1d_misses"]


def test_a_smaller_cache_misses_more(rpi4: DeviceProfile, runs: list[TimingCounts]) -> None:
    small = count_timing(
        rpi4, MODEL, DATA, cpu=None, l1d=CacheGeometry(1024, 1, 64), l2=None,
        samples=SAMPLES, warmup=WARMUP,
    )  # fmt: skip
    assert small.total_instructions == runs[0].total_instructions
    assert small.per_vcpu[0].memory["l1d_misses"] > runs[0].per_vcpu[0].memory["l1d_misses"]
    assert small.per_vcpu[0].memory["l2_misses"] == 0  # no L2 simulated


def test_estimate_latency_caches_and_carries_the_band(rpi4: DeviceProfile) -> None:
    cpu = load_cpu_model("cortex-a72")
    try:
        first = estimate_latency(rpi4, MODEL, DATA, samples=SAMPLES, warmup=WARMUP)
    except BackendUnavailable as exc:
        unavailable(f"timing estimate on rpi4: {exc}")
    again = estimate_latency(rpi4, MODEL, DATA, samples=SAMPLES, warmup=WARMUP)
    assert again.cached and again.ms == first.ms > 0
    assert first.cpu == "cortex-a72" and first.qemu_cpu == "cortex-a72"
    # The digits MLP lies outside the mix of the MobileNets the Pi band was checked on: it
    # carries the out-of-mix band (harness.timing.model.OUTSIDE_MIX_BAND), never the Pi band.
    assert first.band_fraction == max(cpu.band_fraction or 0.0, OUTSIDE_MIX_BAND)
    assert str(first).startswith("estimated ") and f"({first.model_description})" in str(first)
    assert first.low_ms <= first.ms <= first.high_ms


@pytest.mark.usefixtures("counting_plugin")  # QEMU: the "qemu" marker
def test_x86_counts_run_the_avx2_kernels_native_avx512_would_replace() -> None:
    """Under qemu-x86_64 -cpu max (QEMU 7.2: AVX2 and FMA, no AVX-512) the runtime picks its
    256-bit kernels: the classes say which kernels ran, so the x86-64 validation knows what the
    counts describe."""
    if shutil.which("qemu-x86_64") is None:
        unavailable("qemu-user is not installed: run scripts/setup-counting.sh as root")
    profile = load_profiles()["x86-64"]
    taken = counted(profile)
    (vcpu,) = taken.per_vcpu
    assert taken.cpu == "max"
    assert vcpu.classes["simd256_fp"] > 0
    assert vcpu.classes["simd512_fp"] == vcpu.classes["simd512_int"] == 0
