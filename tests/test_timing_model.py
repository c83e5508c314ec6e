"""The timing model (harness.timing.model), its CPU files and the validation statistics: pure,
no QEMU."""

from __future__ import annotations

import math
import re
from dataclasses import replace

import pytest
import scipy.stats
from hypothesis import assume, given
from hypothesis import strategies as st

from conftest import ROOT
from harness.timing import (
    CPU_FOLDER,
    TimingEstimate,
    estimate_from_counts,
    host_machine,
    load_cpu_model,
)
from harness.timing.calibration import size_range
from harness.timing.model import (
    CLASSES,
    FEATURE_GROUPS,
    OUTSIDE_MIX_BAND,
    CacheGeometry,
    CpuModel,
    MixRange,
    VcpuCounts,
    busiest_vcpu,
    cpu_model_from_toml,
    cpu_model_toml,
    dram_ms,
    estimate_cycles,
    estimate_ms,
    group_shares,
    machine_matches,
    mix_conditions,
)
from harness.timing.run import TimingCounts, parse_records
from harness.timing.validation import (
    fit_nonnegative,
    fit_scale,
    kendall_tau,
    leave_group_out_predictions,
    leave_one_out_predictions,
    leave_one_out_scales,
    relative_errors,
    spearman_rho,
    summarize,
)

PLUGIN_SOURCE = ROOT / "harness" / "timing" / "timing_plugin.c"


# Only scalar code: every group's range 0 except scalar's, 0.5-1 (what `counts(int=...)` gives).
SCALAR_MIX = MixRange(
    {g: 0.5 if g == "scalar" else 0.0 for g in FEATURE_GROUPS},
    {g: 1.0 if g == "scalar" else 0.0 for g in FEATURE_GROUPS},
    12,
    "a test set",
)


def cpu(**changes: object) -> CpuModel:
    base = CpuModel(
        name="test",
        description="a test core",
        clock_mhz=1000.0,
        issue_width=2.0,
        cost={"int": 0.5, "load": 1.0, "store": 1.0, "simd128_fp": 0.5},
        groups={"alu": ("int",), "mem": ("load", "store"), "vec": ("simd128_fp",)},
        l1d=CacheGeometry(32768, 4, 64),
        l2=CacheGeometry(524288, 16, 64),
        l2_latency=10.0,
        memory_latency=100.0,
        prefetch_coverage=0.5,
        overlap=0.0,
        qemu_cpu="cortex-a53",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def counts(vcpu: int = 0, **classes: int) -> VcpuCounts:
    memory = {
        k: classes.pop(k, 0) for k in ("l1d_misses", "l1d_misses_seq", "l2_misses", "l2_misses_seq")
    }
    return VcpuCounts(
        vcpu=vcpu,
        instructions=sum(classes.values()),
        classes={c: classes.get(c, 0) for c in CLASSES},
        memory=memory,
    )


# -- the model ---------------------------------------------------------------------------------
def test_issue_width_bounds_a_mixed_stream() -> None:
    # 600 int (300 cycles on the ALUs) + 200 loads (200) + 200 stores (200 with the loads on one
    # pipe group: 400): 1000 instructions at 2 per cycle = 500 cycles, more than any pipe group.
    result = estimate_cycles(counts(int=600, load=200, store=200), cpu())
    assert result.compute == 500.0
    assert result.bottleneck == "issue"
    assert result.stall == 0.0 and result.cycles == 500.0


def test_a_busy_pipe_group_bounds_compute() -> None:
    result = estimate_cycles(counts(int=100, load=700, store=200), cpu())
    assert result.compute == 900.0  # load + store share "mem": 900 cycles > 1000 / 2
    assert result.bottleneck == "mem"


def test_miss_penalties_prefetch_and_overlap() -> None:
    c = counts(int=2, l1d_misses=100, l1d_misses_seq=50, l2_misses=40, l2_misses_seq=20)
    # L2 hits: 60 x 10 x (1 - 0.5 x 50/100) = 450; L2 misses: 20 x 100 + 20 x 100 x 0.5 = 3000.
    assert estimate_cycles(c, cpu()).stall == pytest.approx(3450.0)
    assert estimate_cycles(c, cpu()).cycles == pytest.approx(1.0 + 3450.0)
    hidden = estimate_cycles(c, cpu(overlap=0.75))
    assert hidden.cycles == pytest.approx(1.0 + 3450.0 * 0.25)
    assert estimate_cycles(c, cpu(calibration=2.0)).cycles == pytest.approx(2 * (1.0 + 3450.0))


def test_without_l2_every_l1_miss_goes_to_memory() -> None:
    c = counts(l1d_misses=10, l2_misses=3)
    assert estimate_cycles(c, cpu(l2=None, prefetch_coverage=0.0)).stall == 1000.0


def test_busiest_vcpu_decides_and_samples_divide() -> None:
    model = cpu(issue_width=1.0)
    threads = [counts(0, int=1000), counts(1, int=3000), counts(2, int=2000)]
    # 3000 cycles (busiest) / 2 samples / 1 GHz = 1.5 us = 0.0015 ms
    assert estimate_ms(threads, model, samples=2) == pytest.approx(0.0015)
    with pytest.raises(ValueError, match="samples must be at least 1"):
        estimate_ms(threads, model, samples=0)
    with pytest.raises(ValueError, match="no vCPU ran between the markers"):
        estimate_ms([], model, samples=1)


def test_the_shared_memory_bus_bounds_the_cores_from_below() -> None:
    # 4 vCPUs, 1000 cycles each (1 us at 1 GHz), 2500 L2 misses each: 4 x 2500 x 64 bytes =
    # 640 kB over 100 MB/s (100 bytes per us) = 6.4 ms per sample, 3.2 ms for 2 samples.
    threads = [counts(v, int=2000, l1d_misses=2500, l2_misses=2500) for v in range(4)]
    slow_bus = cpu(issue_width=1.0, memory_latency=0.0, l2_latency=0.0, dram_bandwidth_mb_s=100.0)
    assert dram_ms(threads, slow_bus, samples=2) == pytest.approx(3.2)
    assert estimate_ms(threads, slow_bus, samples=2) == pytest.approx(3.2)
    # A bus 10^5 times faster bounds nothing: the busiest core decides (2000 cycles / 2 samples).
    fast_bus = replace(slow_bus, dram_bandwidth_mb_s=1e7)
    assert dram_ms(threads, fast_bus, samples=2) == pytest.approx(3.2e-5)
    assert estimate_ms(threads, fast_bus, samples=2) == pytest.approx(0.001)


def test_no_bandwidth_no_misses_or_no_l2_and_the_bad_cases() -> None:
    threads = [counts(0, int=1000, l1d_misses=10, l2_misses=4)]
    # A CPU file without the parameter (the x86-64 ones): no bound, the estimate as before.
    assert dram_ms(threads, cpu(), samples=1) is None
    assert estimate_ms(threads, cpu(), samples=1) == estimate_ms(
        threads, cpu(dram_bandwidth_mb_s=1e9), samples=1
    )
    # No miss counted (or an older record without the fields): nothing crosses the bus.
    bare = VcpuCounts(0, 1000, {c: 0 for c in CLASSES}, {})
    assert dram_ms([bare], cpu(dram_bandwidth_mb_s=1.0), samples=1) == 0.0
    # Without an L2 every L1D miss is a line from DRAM: 10 x 64 bytes at 1 MB/s = 0.64 ms.
    no_l2 = cpu(l2=None, dram_bandwidth_mb_s=1.0)
    assert dram_ms(threads, no_l2, samples=1) == pytest.approx(0.64)
    with pytest.raises(ValueError, match="samples must be at least 1"):
        dram_ms(threads, no_l2, samples=0)
    with pytest.raises(ValueError, match="dram_bandwidth must be > 0 MB/s"):
        cpu(dram_bandwidth_mb_s=0.0)


def test_bandwidth_read_from_and_written_to_a_cpu_file() -> None:
    a72 = load_cpu_model("cortex-a72")
    assert a72.dram_bandwidth_mb_s is not None
    assert a72.sources["dram_bandwidth"].strip()
    again = cpu_model_from_toml(cpu_model_toml(a72), "again")
    assert again.dram_bandwidth_mb_s == a72.dram_bandwidth_mb_s
    # Without it (the x86-64 files): no bound, and none written back.
    host = load_cpu_model("x86-64-host")
    assert host.dram_bandwidth_mb_s is None
    text = cpu_model_toml(host)
    assert "dram_bandwidth" not in text
    unsourced = (CPU_FOLDER / "cortex-a72.toml").read_text()
    unsourced = re.sub(r"dram_bandwidth = \{[^}]*\}", "dram_bandwidth = 5560", unsourced)
    with pytest.raises(ValueError, match="dram_bandwidth must be a table"):
        cpu_model_from_toml(unsourced, "cortex-a72")


@given(st.integers(0, 10**9), st.integers(0, 10**9), st.integers(0, 10**7), st.integers(0, 10**6))
def test_more_work_never_takes_fewer_cycles(ints: int, extra: int, misses: int, more: int) -> None:
    model = cpu(overlap=0.5)
    base = estimate_cycles(counts(int=ints, l1d_misses=misses), model).cycles
    assert estimate_cycles(counts(int=ints + extra, l1d_misses=misses), model).cycles >= base
    assert estimate_cycles(counts(int=ints, l1d_misses=misses + more), model).cycles >= base


def test_cpu_model_rejects_what_it_cannot_use() -> None:
    with pytest.raises(ValueError, match=r"unknown instruction classes simd(.|\n)*known: int"):
        cpu(cost={"simd": 1.0}, groups={"v": ("simd",)})
    with pytest.raises(ValueError, match="classes in no pipe group: load"):
        cpu(cost={"load": 1.0}, groups={})
    with pytest.raises(ValueError, match="overlap must be between 0 and 1"):
        cpu(overlap=1.5)
    with pytest.raises(ValueError, match="power-of-two number of sets"):
        CacheGeometry(3 * 64 * 4, 4, 64)
    assert CacheGeometry(32768, 2, 64).spec == "32768:2:64"


def test_every_parameter_of_a_cpu_file_needs_its_source() -> None:
    text = (CPU_FOLDER / "cortex-a72.toml").read_text()
    unsourced = re.sub(r"issue_width = \{[^}]*\}", "issue_width = 3", text)
    with pytest.raises(ValueError, match=r"issue_width must be a table \{ value = \.\.\., source"):
        cpu_model_from_toml(unsourced, "cortex-a72")


@pytest.mark.parametrize("name", sorted(p.stem for p in CPU_FOLDER.glob("*.toml")))
def test_shipped_cpu_files_load_with_a_source_for_every_number(name: str) -> None:
    model = load_cpu_model(name)
    numbers = ["clock_mhz", "issue_width", "l2_latency", "memory_latency"]
    numbers += ["prefetch_coverage", "overlap"] + [f"cost.{c}" for c in model.cost]
    assert all(model.sources.get(key, "").strip() for key in numbers), model.sources
    assert model.sources.get("l1d")


def test_unknown_cpu_lists_the_known_ones() -> None:
    known = r"no timing model for cpu 'cortex-x9'; known: .*cortex-a53"
    with pytest.raises(ValueError, match=known):
        load_cpu_model("cortex-x9")


def test_plugin_and_model_name_the_same_classes() -> None:
    text = PLUGIN_SOURCE.read_text()
    names = re.search(r"class_names\[N_CLASSES\] = \{(.*?)\};", text, re.S)
    assert names is not None
    assert tuple(re.findall(r'"(\w+)"', names.group(1))) == CLASSES


def test_plugin_records_parse_per_end_marker() -> None:
    text = (
        '{"record":"vcpu","pair":1,"vcpu":0,"insns":30,"classes":{"int":20,"load":10},'
        '"loads":10,"stores":0,"load_bytes":80,"store_bytes":0,"l1d_accesses":10,'
        '"l1d_misses":2,"l1d_misses_seq":1,"l2_misses":1,"l2_misses_seq":0}\n'
        '{"record":"total","pair":1,"insns":30,"vcpus":1}\n'
        '{"record":"total","pair":2,"insns":0,"vcpus":0}\n'
    )
    loops = parse_records(text)
    assert [total for _, total in loops] == [30, 0]
    (first,) = loops[0][0]
    assert first.classes["int"] == 20 and first.classes["simd128_fp"] == 0
    assert first.memory["l1d_misses"] == 2
    counts_ = TimingCounts(
        per_vcpu=(first,), total_instructions=30, samples=1, warmup=0, arch="arm64",
        cpu="cortex-a53", qemu_version="7.2", interpreter="rootfs x", run_s=1.0,
    )  # fmt: skip
    assert TimingCounts.from_json(counts_.as_json()) == counts_


def test_estimate_carries_its_band_and_model() -> None:
    model = cpu(
        issue_width=1.0, band_fraction=0.2, band_source="validated on 12 models", mix=SCALAR_MIX
    )
    taken = TimingCounts(
        per_vcpu=(counts(int=2_000_000),), total_instructions=2_000_000, samples=1, warmup=1,
        arch="arm64", cpu="cortex-a53", qemu_version="7.2", interpreter="rootfs x", run_s=1.0,
    )  # fmt: skip
    estimate = estimate_from_counts(taken, model, "rpi-zero-2w")
    assert isinstance(estimate, TimingEstimate)
    assert estimate.ms == pytest.approx(2.0)
    # An estimate 20% under or over the device's figure: the device's figure is 2.0 / 0.8 or
    # 2.0 / 1.2 (a band of 20% around the device, not around the estimate).
    assert (estimate.low_ms, estimate.high_ms) == pytest.approx((2.0 / 1.2, 2.0 / 0.8))
    assert replace(estimate, band_fraction=1.0).high_ms == math.inf
    assert str(estimate) == (
        "estimated 2.00 ms ±20% (test timing model at 1000 MHz, validated on 12 models)"
    )
    assert estimate.as_json()["per_vcpu"][0]["bottleneck"] == "issue"
    assert estimate.validated and estimate.not_validated is None
    assert estimate.shares == {g: float(g == "scalar") for g in FEATURE_GROUPS}
    assert str(replace(estimate, ms=136.05)).startswith("estimated 136 ms")
    assert str(replace(estimate, ms=0.05234)).startswith("estimated 0.0523 ms")


# -- validation statistics --------------------------------------------------------------------
def test_errors_and_summary() -> None:
    assert relative_errors([11.0, 9.0], [10.0, 10.0]) == pytest.approx([0.1, -0.1])
    s = summarize([11.0, 18.0, 33.0], [10.0, 20.0, 30.0])
    assert (s.median_abs, s.max_abs) == pytest.approx((0.1, 0.1))
    assert s.discordant_pairs == 0 and s.meets(0.15, 0.30)
    swapped = summarize([25.0, 18.0], [20.0, 21.0])
    assert swapped.discordant_pairs == 1 and not swapped.meets(1.0, 1.0)
    assert swapped.discordant_gap == pytest.approx(21.0 / 20.0 - 1)
    assert summarize([11.0, 18.0, 33.0], [10.0, 20.0, 30.0]).discordant_gap == 0.0


def test_generation_reads_the_wider_band_measured_for_it() -> None:
    vision = cpu(band_fraction=0.25, band_source="checked on 3 Pi figures", mix=SCALAR_MIX)
    assert "not validated on generation" in vision.for_generation().band_source
    wider = replace(vision, generation_band_fraction=0.72, generation_band_source="3 LMs")
    assert (wider.for_generation().band_fraction, wider.for_generation().band_source) == (
        0.72,
        "3 LMs",
    )
    narrower = replace(vision, generation_band_fraction=0.1, generation_band_source="x")
    assert narrower.for_generation().band_fraction == 0.25
    assert (
        narrower.for_generation().band_source == "checked on 3 Pi figures (wider than "
        "generation's: x)"
    )
    # The generation band's own mix replaces the vision one.
    assert narrower.for_generation().mix is None
    for name in (p.stem for p in CPU_FOLDER.glob("*.toml")):
        model = load_cpu_model(name)
        again = cpu_model_from_toml(cpu_model_toml(model), name)
        assert again.generation_band_fraction == model.generation_band_fraction


def test_leave_one_out_never_sees_the_model_it_predicts() -> None:
    raw, measured = [1.0, 2.0, 4.0], [2.0, 4.0, 80.0]
    scales = leave_one_out_scales(raw, measured)
    assert scales[2] == pytest.approx(2.0)  # fitted on the first two only
    assert scales[0] == pytest.approx(fit_scale([2.0, 4.0], [4.0, 80.0]))
    assert fit_scale([1.0, 4.0], [2.0, 2.0]) == pytest.approx(1.0)  # geometric mean of 2, 0.5


@given(st.lists(st.floats(0.1, 1000.0), min_size=3, max_size=12))
def test_rank_correlations_agree_with_scipy(a: list[float]) -> None:
    b = [x * (0.5 + (i % 3)) for i, x in enumerate(a)]
    assume(len(set(a)) > 1 and len(set(b)) > 1)  # constant input: no correlation is defined
    rho = scipy.stats.spearmanr(a, b).statistic
    tau = scipy.stats.kendalltau(a, b).statistic
    if math.isnan(rho) or math.isnan(tau):
        return
    assert spearman_rho(a, b) == pytest.approx(rho, abs=1e-9)
    assert kendall_tau(a, b) == pytest.approx(tau, abs=1e-9)


def test_nonnegative_fit_recovers_weights_and_drops_negative_ones() -> None:
    features = [[1.0, 0.0, 5.0], [0.0, 1.0, 1.0], [2.0, 1.0, 0.0], [1.0, 3.0, 2.0]]
    truth = [2.0, 0.5, 0.0]
    measured = [sum(f * w for f, w in zip(row, truth, strict=True)) for row in features]
    assert fit_nonnegative(features, measured) == pytest.approx(truth, abs=1e-9)
    # A third feature that would want a negative weight is dropped to zero.
    skewed = [m * (1.2 if row[2] > 1 else 1.0) for row, m in zip(features, measured, strict=True)]
    assert min(fit_nonnegative(features, skewed)) >= 0.0
    held_out = leave_one_out_predictions(features, measured)
    assert held_out == pytest.approx(measured, rel=1e-6)  # exact data: held out = measured


def test_cli_names_the_known_devices(capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main

    assert main(["counting", "estimate", "--device", "rpi5", "model.tflite"]) != 0
    assert "unknown device 'rpi5'; known devices: " in capsys.readouterr().err


# -- where a band holds ----------------------------------------------------------------------
def taken(*per_vcpu: VcpuCounts, threads: int = 1) -> TimingCounts:
    return TimingCounts(
        per_vcpu=per_vcpu, total_instructions=sum(v.instructions for v in per_vcpu), samples=1,
        warmup=1, arch="arm64", cpu="cortex-a53", qemu_version="7.2", interpreter="x", run_s=1.0,
        threads=threads,
    )  # fmt: skip


def test_shares_are_of_the_busiest_vcpus_instructions() -> None:
    shares = group_shares(counts(int=300, load=100, simd128_fp=600))
    assert shares["scalar"] == pytest.approx(0.3) and shares["simd_fp"] == pytest.approx(0.6)
    assert shares["memory"] == pytest.approx(0.1) and shares["simd_wide_int"] == 0.0
    model = cpu(band_fraction=0.2, mix=SCALAR_MIX)
    # vCPU 1 is the busiest (more cycles): its mix decides, not vCPU 0's.
    per_vcpu = [counts(0, int=10), counts(1, simd128_fp=10**6)]
    assert group_shares(busiest_vcpu(per_vcpu, model))["simd_fp"] == 1.0
    assert mix_conditions(per_vcpu, model)


def test_a_mix_outside_the_calibration_sets_gets_the_out_of_mix_band_never_its_own() -> None:
    """Outside the mix the estimate's band is the largest error measured for estimates outside
    the mix (OUTSIDE_MIX_BAND), never the narrower band of the models it was fitted on; other
    threads besides give no band at all."""
    model = cpu(band_fraction=0.2, band_source="validated on 12 models", mix=SCALAR_MIX)
    mixed = counts(int=1000, simd128_fp=3000)
    estimate = estimate_from_counts(taken(mixed), model, "rpi4")
    assert estimate.validated and estimate.band_fraction == OUTSIDE_MIX_BAND
    assert estimate.high_ms == pytest.approx(estimate.ms / (1 - OUTSIDE_MIX_BAND))
    assert (
        "instruction mix outside the calibration set's: scalar 25.0% (its 12 models: "
        "50.0%-100.0%), simd_fp 75.0% (its 12 models: 0.0%-0.0%): band widened to ±67%"
    ) in estimate.model_description
    assert "(measured on x86, carried over)" in estimate.model_description  # a board's CPU
    assert str(estimate).startswith("estimated 0.00200 ms ±67%")
    four = estimate_from_counts(taken(mixed, mixed, threads=4), model, "rpi4")
    assert not four.validated and (four.low_ms, four.high_ms) == (0.0, math.inf)
    assert four.not_validated == (
        "not validated: instruction mix outside the calibration set's: scalar 25.0% (its 12 "
        "models: 50.0%-100.0%), simd_fp 75.0% (its 12 models: 0.0%-0.0%); 4 intra-op threads; "
        "the band was measured at 1"
    )
    assert four.as_json()["validated"] is False


def test_threads_machine_and_a_missing_mix_or_band_each_say_why() -> None:
    model = cpu(band_fraction=0.2, mix=SCALAR_MIX, machine="AuthenticAMD family 26")
    one = counts(int=1000)
    assert estimate_from_counts(taken(one), model, "x", machine="AuthenticAMD family 26 model 2")
    four = estimate_from_counts(taken(one, one, one, one, threads=4), model, "rpi4")
    assert four.not_validated == ("not validated: 4 intra-op threads; the band was measured at 1")
    assert estimate_from_counts(
        taken(one, threads=4), replace(model, band_threads=4), "x"
    ).validated
    elsewhere = estimate_from_counts(
        taken(one), model, "x", machine="AuthenticAMD family 25 model 17"
    )
    assert elsewhere.not_validated == (
        "not validated: fitted on AuthenticAMD family 26, and this machine is AuthenticAMD "
        "family 25 model 17"
    )
    assert estimate_from_counts(taken(one), model, "rpi4", machine=None).validated  # a board
    # No mix recorded (a file from before they were): taken as outside, the out-of-mix band.
    unrecorded = estimate_from_counts(taken(one), replace(model, mix=None), "x")
    assert unrecorded.band_fraction == OUTSIDE_MIX_BAND
    assert "records no instruction mix" in unrecorded.model_description
    assert "harness calibrate" in unrecorded.model_description
    no_band = estimate_from_counts(taken(one), replace(model, band_fraction=None), "x")
    assert no_band.not_validated == "not validated: no error band was measured for test"
    assert machine_matches("AuthenticAMD family 26", "AuthenticAMD family 26 model 2")
    assert not machine_matches("AuthenticAMD family 2", "AuthenticAMD family 26 model 2")


def test_the_mix_spans_its_models_rounded_outwards_and_round_trips() -> None:
    shares = [group_shares(counts(int=1, load=2)), group_shares(counts(int=2, load=1))]
    mix = MixRange.spanning(shares, "two models")
    assert (mix.low["scalar"], mix.high["scalar"]) == (0.333, 0.667)
    assert mix.models == 2 and mix.outside(shares[0]) == mix.outside(shares[1]) == []
    model = cpu(band_fraction=0.2, band_source="x", mix=mix, band_threads=4,
                machine="AuthenticAMD family 25 model 17", generation_mix=mix,
                sources={"machine": "cpuinfo"})  # fmt: skip
    text = cpu_model_toml(replace(model, sources={**load_cpu_model("cortex-a72").sources,
                                                  "machine": "cpuinfo"}))  # fmt: skip
    again = cpu_model_from_toml(text, "test")
    assert (again.mix, again.band_threads, again.machine) == (mix, 4, model.machine)
    assert again.generation_mix == mix
    with pytest.raises(ValueError, match="missing: memory"):
        MixRange({"scalar": 0.0}, {"scalar": 1.0}, 1, "x")
    with pytest.raises(ValueError, match="need 0 <= low <= high <= 1"):
        MixRange(dict.fromkeys(FEATURE_GROUPS, 0.5), dict.fromkeys(FEATURE_GROUPS, 0.4), 1, "x")
    unsourced = re.sub(r"(\[mix\]\nmodels = 2\n)source = .*\n", r"\1", text)
    assert unsourced != text
    with pytest.raises(ValueError, match=r"\[mix\] needs models = N and source"):
        cpu_model_from_toml(unsourced, "t")


@pytest.mark.parametrize("name", sorted(p.stem for p in CPU_FOLDER.glob("*.toml")))
def test_every_shipped_band_says_where_it_holds(name: str) -> None:
    model = load_cpu_model(name)
    if model.band_fraction is not None:
        assert model.mix is not None and model.mix.source.strip() and model.mix.models >= 2
        # each model's shares too: the ranges alone let a new combination through
        assert len(model.mix.points) == model.mix.models
        assert model.band_instructions is not None  # and the size of the models it came from
    if model.generation_band_fraction is not None and model.machine is not None:
        # a band measured on this machine's processor records the mix it was measured on; a
        # board's carried-over band has none (its estimates take the out-of-mix band as well)
        assert model.generation_mix is not None and model.generation_mix.models >= 1


def test_generation_without_its_own_band_is_not_validated() -> None:
    vision = cpu(band_fraction=0.25, band_source="3 Pi figures", mix=SCALAR_MIX)
    assert vision.for_generation().band_fraction is None
    assert "not validated on generation" in vision.for_generation().band_source
    lm = replace(vision, generation_band_fraction=0.3, generation_band_source="2 LMs",
                 generation_mix=None)  # fmt: skip
    assert lm.for_generation().band_fraction == 0.3 and lm.for_generation().mix is None


def test_host_machine_reads_vendor_family_and_model() -> None:
    x86 = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
    assert host_machine(x86 + "processor\t: 1\nmodel\t\t: 99\n") == (
        "AuthenticAMD family 25 model 17"
    )
    arm = "processor\t: 0\nCPU implementer\t: 0x41\nCPU part\t: 0xd08\n"
    assert host_machine(arm) == "arm implementer 0x41 part 0xd08"
    assert host_machine("") == "unknown"


def test_leave_group_out_never_sees_the_group_it_predicts() -> None:
    x = [[1.0], [1.0], [1.0], [1.0]]
    y = [2.0, 2.0, 8.0, 8.0]
    predicted = leave_group_out_predictions(x, y, ["a", "a", "b", "b"])
    assert predicted == pytest.approx([8.0, 8.0, 2.0, 2.0])
    with pytest.raises(ValueError, match="at least two groups"):
        leave_group_out_predictions(x, y, ["a"] * 4)


# The x86 dynamic-range case (bench_fidelity, 2026-12-07): an fp32 model's memory share with an
# int8 model's wide-int share, every group inside its range, estimated 41-58% off.
FP32 = group_shares(counts(int=19, load=33, simd256_fp=48))
INT8 = group_shares(counts(int=14, load=13, simd256_int=46, simd_int_mul=27))
TWO_RECIPES = MixRange.spanning([FP32, INT8], "an fp32 and an int8 model")


def test_a_mix_inside_every_range_but_near_no_model_gets_the_out_of_mix_band() -> None:
    model = cpu(band_fraction=0.2, band_source="validated on 2 models", mix=TWO_RECIPES)
    dynamic = counts(int=15, load=29, simd256_fp=2, simd256_int=33, simd_int_mul=21)
    shares = group_shares(dynamic)
    assert all(TWO_RECIPES.low[g] <= shares[g] <= TWO_RECIPES.high[g] for g in FEATURE_GROUPS)
    assert TWO_RECIPES.nearest(shares) == pytest.approx(0.38)
    estimate = estimate_from_counts(taken(dynamic), model, "x86-64")
    assert estimate.band_fraction == OUTSIDE_MIX_BAND  # not the fitted models' 0.2
    assert (
        "instruction mix outside the calibration set's: group shares 0.38 from the nearest of "
        "its 2 models (L1; within 0.1 holds): band widened to ±67%"
    ) in estimate.model_description
    # 4% of the instructions moved from an fp32 model's mix: near it, and validated.
    near = estimate_from_counts(taken(counts(int=18, load=32, simd256_fp=48, simd256_int=2)),
                                model, "x86-64")  # fmt: skip
    assert near.validated and near.high_ms < math.inf
    # A mix recorded without points (a file from before they were) checks the ranges only.
    ranges_only = replace(TWO_RECIPES, points=())
    assert ranges_only.nearest(shares) is None and ranges_only.outside(shares) == []
    with pytest.raises(ValueError, match="one share per group"):
        replace(TWO_RECIPES, points=((0.5, 0.5),))


@given(st.lists(st.integers(0, 100), min_size=len(CLASSES), max_size=len(CLASSES)))
def test_no_estimate_out_of_its_mix_gets_the_fitted_models_band(numbers: list[int]) -> None:
    assume(sum(numbers) > 0)
    per_class = dict(zip(CLASSES, numbers, strict=True))
    model = cpu(band_fraction=0.2, band_source="x", mix=TWO_RECIPES)
    taken_counts = counts(**per_class)
    estimate = estimate_from_counts(taken(taken_counts), model, "x86-64")
    shares = group_shares(taken_counts)
    inside = all(TWO_RECIPES.low[g] <= shares[g] <= TWO_RECIPES.high[g] for g in FEATURE_GROUPS)
    near = (TWO_RECIPES.nearest(shares) or 0.0) <= TWO_RECIPES.radius
    assert estimate.band_fraction == (0.2 if inside and near else OUTSIDE_MIX_BAND)


def test_a_model_far_smaller_than_the_bands_gets_the_out_of_mix_band() -> None:
    """Real models (bench_fidelity --real): silero-vad, 0.96 M instructions per inference where
    the x86 band's models count 9.4 M to 21 G, was estimated 35% under with the mix inside."""
    model = cpu(band_fraction=0.2, band_source="x", mix=TWO_RECIPES,
                band_instructions=(9.4e6, 2.1e10))  # fmt: skip
    shape = {"int": 19, "load": 33, "simd256_fp": 48}  # FP32's mix, at two sizes
    small = estimate_from_counts(taken(counts(**{c: n * 10**4 for c, n in shape.items()})),
                                 model, "x86-64")  # fmt: skip
    assert small.band_fraction == OUTSIDE_MIX_BAND
    assert "1 M instructions per inference (its models: 9.4-2.1e+04 M)" in small.model_description
    large = estimate_from_counts(taken(counts(**{c: n * 10**6 for c, n in shape.items()})),
                                 model, "x86-64")  # fmt: skip
    assert large.validated
    text = cpu_model_toml(replace(model, sources=load_cpu_model("cortex-a72").sources))
    assert cpu_model_from_toml(text, "t").band_instructions == (9.4e6, 2.1e10)
    assert size_range([9_412_345.0, 120_000_001.0]) == (9.4e6, 1.201e8)
