"""`harness calibrate`: the fit (pure: a synthetic device whose costs are known is recovered
exactly, held out or not) and the command on this machine (`--device host`, the three
examples/digits models counted under qemu-x86_64 and measured natively): it writes a CPU model and
a profile that load back, reports the leave-one-out error, and never overwrites a user's profile.

The command part needs qemu-user and the counting plugin (scripts/setup-counting.sh); it skips
without them here and fails under CI=true."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, unavailable
from harness.timing import (
    cpu_for_profile,
    estimate_from_counts,
    estimate_latency,
    host_machine,
    load_cpu_model,
    timing_counts,
)
from harness.timing.calibration import (
    FEATURE_GROUPS,
    FEATURES,
    CalibrationPoint,
    calibrate,
    features,
)
from harness.timing.model import (
    CLASSES,
    MEMORY_FIELDS,
    VcpuCounts,
    cpu_model_from_toml,
    cpu_model_toml,
    estimate_cycles,
    group_shares,
)

DIGITS = ROOT / "examples" / "digits" / "models"
MODELS = [DIGITS / "digits.onnx", DIGITS / "digits_float.tflite", DIGITS / "digits_int8.tflite"]


def synthetic_points(count: int, seed: int = 0) -> list[CalibrationPoint]:
    """Models with random instruction mixes and cache behaviour (measured_ms filled later)."""
    rng = np.random.default_rng(seed)
    points = []
    for i in range(count):
        classes = {c: int(rng.integers(10**5, 10**7)) for c in CLASSES}
        accesses = int(rng.integers(10**6, 10**7))
        l1 = accesses // int(rng.integers(5, 50))
        l2 = l1 // int(rng.integers(2, 10))
        memory = dict.fromkeys(MEMORY_FIELDS, 0) | {
            "l1d_accesses": accesses,
            "l1d_misses": l1,
            "l1d_misses_seq": l1 // 2,
            "l2_misses": l2,
            "l2_misses_seq": l2 // 3,
        }
        counts = VcpuCounts(0, sum(classes.values()), classes, memory)
        points.append(CalibrationPoint(f"m{i}", counts, 2, 1.0))
    return points


def test_linear_fit_recovers_a_known_device_and_its_held_out_error_is_zero() -> None:
    base = load_cpu_model("cortex-a72")
    true = [0.3, 0.8, 1.2, 0.6, 0.5, 0.2, 2.0, 0.45]  # cycles/instruction per group, stall weight
    points = [
        dataclasses.replace(p, measured_ms=float(np.dot(features(p, base), true)))
        for p in synthetic_points(len(FEATURES) + 4)
    ]
    fit = calibrate(points, base, "my-pi4", "my-pi4", "2026-12-02")
    assert fit.method == "linear"
    assert [fit.weights[k] for k in FEATURES] == pytest.approx(true, rel=1e-6)
    measured = [p.measured_ms for p in points]
    assert fit.after_ms == pytest.approx(measured, rel=1e-6)
    assert fit.held_out_ms == pytest.approx(measured, rel=1e-6)
    assert fit.held_out.max_abs < 1e-6 and fit.before.max_abs > 0.01
    # The fitted model prices each class at its group's cost and the stall at its weight.
    for group, weight in zip(FEATURE_GROUPS.values(), true, strict=False):
        assert all(fit.cpu.cost[c] == pytest.approx(weight) for c in group)
    assert 1 - fit.cpu.overlap == pytest.approx(true[-1])
    assert fit.cpu.band_source.startswith("validated on 12 models on my-pi4, 2026-12-02")


def test_a_stall_weight_above_one_stretches_the_latencies() -> None:
    base = load_cpu_model("cortex-a53")
    true = [0.5, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 1.6]
    points = [
        dataclasses.replace(p, measured_ms=float(np.dot(features(p, base), true)))
        for p in synthetic_points(len(FEATURES) + 2, seed=1)
    ]
    fit = calibrate(points, base, "zero", "zero", "2026-12-02")
    assert fit.cpu.overlap == 0.0
    assert fit.cpu.memory_latency == pytest.approx(base.memory_latency * 1.6, rel=1e-6)
    assert fit.after_ms == pytest.approx([p.measured_ms for p in points], rel=1e-6)


def test_few_models_fit_one_scale_held_out() -> None:
    base = load_cpu_model("cortex-a72")
    points = synthetic_points(3, seed=2)
    raw = [estimate_cycles(p.counts, base).cycles / 2 / (base.clock_mhz * 1e3) for p in points]
    points = [dataclasses.replace(p, measured_ms=1.7 * r) for p, r in zip(points, raw, strict=True)]
    fit = calibrate(points, base, "board", "board", "2026-12-02")
    assert fit.method == "scale" and fit.cpu.calibration == pytest.approx(1.7)
    assert fit.held_out_ms == pytest.approx([p.measured_ms for p in points])
    assert fit.before.median_abs == pytest.approx(1 - 1 / 1.7)
    with pytest.raises(ValueError, match="at least two models"):
        calibrate(points[:1], base, "board", "board", "2026-12-02")


def test_the_fitted_model_round_trips_with_every_number_sourced() -> None:
    base = load_cpu_model("cortex-a72")
    true = [0.3, 0.8, 1.2, 0.6, 0.5, 0.2, 2.0, 0.45]
    points = [
        dataclasses.replace(p, measured_ms=float(np.dot(features(p, base), true)) * (1 + e))
        for p, e in zip(synthetic_points(11, seed=3), [0.05, -0.1, 0, 0.02] * 3, strict=False)
    ]
    fit = calibrate(points, base, "my-pi4", "my-pi4", "2026-12-02")
    text = cpu_model_toml(fit.cpu, "header line")
    again = cpu_model_from_toml(text, "my-pi4")
    assert again == fit.cpu
    fitted = [s for k, s in again.sources.items() if k.startswith("cost.") or k == "overlap"]
    prefix = "fitted by harness calibrate on my-pi4, 2026-12-02, 11 models, leave-one-out |error|"
    assert fitted and all(s.startswith(prefix) for s in fitted)
    assert fit.method == "linear" and fit.held_out.max_abs > 0
    assert again.band_fraction == pytest.approx(fit.held_out.max_abs, abs=1e-4)


def test_the_fit_records_the_mix_it_holds_for_and_who_lies_outside_the_others() -> None:
    base = load_cpu_model("cortex-a72")
    true = [0.3, 0.8, 1.2, 0.6, 0.5, 0.2, 2.0, 0.45]
    points = synthetic_points(11, seed=4)
    scalar = {"int", "int_mul", "branch", "fp", "other"}
    heavy = {c: (10**8 if c in scalar else 10) for c in CLASSES}  # almost only scalar code
    points[0] = dataclasses.replace(
        points[0], counts=VcpuCounts(0, sum(heavy.values()), heavy, points[0].counts.memory)
    )
    points = [dataclasses.replace(p, measured_ms=float(np.dot(features(p, base), true)))
              for p in points]  # fmt: skip
    fit = calibrate(points, base, "b", "b", "2026-12-08", machine="AuthenticAMD family 25")
    shares = [group_shares(p.counts) for p in points]
    assert fit.cpu.mix is not None and fit.cpu.mix.models == 11
    assert all(fit.cpu.mix.outside(s) == [] for s in shares)  # every model lies inside
    assert fit.outside_others[0] and fit.outside_others[0][0].startswith("scalar 100.0%")
    assert fit.cpu.machine == "AuthenticAMD family 25"
    # each model's shares and the models' size: a new combination or a far smaller model is out
    assert len(fit.cpu.mix.points) == 11 and fit.cpu.band_instructions is not None
    sizes = [p.counts.instructions / p.samples for p in points]
    low, high = fit.cpu.band_instructions
    assert low <= min(sizes) and max(sizes) <= high and high - low < max(sizes) - min(sizes) + 2e5
    assert fit.cpu.generation_band_fraction is None  # generation was not measured on b
    assert cpu_model_from_toml(cpu_model_toml(fit.cpu), "b") == fit.cpu


@pytest.fixture(scope="module")
def counting(counting_plugin: Path) -> None:
    if shutil.which("qemu-x86_64") is None:
        unavailable("qemu-user is not installed: run scripts/setup-counting.sh as root")


def calibrate_host(matrix: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from harness.cli import main

    models = [str(m) for m in MODELS]
    code = main(["calibrate", "--device", "host", "--models", *models, "--matrix", str(matrix),
                 "--seconds", "0.3"])  # fmt: skip
    out = capsys.readouterr()
    missing = ("not set up", "setup-counting", "counting prepare")
    if code != 0 and any(s in out.err for s in missing):
        unavailable(f"counting on the host: {out.err.strip()}")
    return code, out.out


def test_calibrate_host_writes_a_profile_and_a_cpu_model_that_load_back(
    counting: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from harness.devices import load_profiles

    code, out = calibrate_host(tmp_path, capsys)
    assert code == 0, out
    for name in ("digits.onnx", "digits_float.tflite", "digits_int8.tflite"):
        (line,) = [line for line in out.splitlines() if line.startswith(name)]
        assert line.split("  ")[-1].startswith(("inside", "outside: "))  # the others' mix
    assert "held out (leave-one-out)" in out and "median |error|" in out
    assert "instruction mix recorded" in out
    profile = load_profiles(tmp_path)["host"]
    assert profile.timing_model == (tmp_path / "timing" / "host.toml").resolve()
    cpu = cpu_for_profile(profile)
    assert cpu.band_source.startswith("validated on 3 models on host")
    assert cpu.band_fraction is not None and f"band ±{cpu.band_fraction:.0%}" in out
    assert "fitted by harness calibrate on host" in cpu.sources["calibration"]
    assert profile.backend == "local" and profile.threads == 1  # the built-in's own fields
    # Where the band holds: the three models' mix, measured on this machine.
    assert cpu.mix is not None and cpu.mix.models == 3 and "on host" in cpu.mix.source
    assert cpu.machine == host_machine()
    estimate = estimate_latency(profile, MODELS[0])
    assert estimate.validated, estimate.not_validated
    elsewhere = estimate_from_counts(
        timing_counts(profile, MODELS[0], None, cpu)[0], cpu, "host", machine="GenuineIntel x"
    )
    assert elsewhere.not_validated == (
        f"not validated: fitted on {host_machine()}, and this machine is GenuineIntel x"
    )


def test_calibrate_never_overwrites_the_users_profile(
    counting: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / "host.toml"
    mine.write_text('# my host\nbackend = "local"\nthreads = 2\n')
    code, out = calibrate_host(tmp_path, capsys)
    assert code == 0, out
    assert mine.read_text() == '# my host\nbackend = "local"\nthreads = 2\n'
    assert 'timing_model = "timing/host.toml"' in out.splitlines()
    assert (tmp_path / "timing" / "host.toml").is_file()


@pytest.mark.usefixtures("counting_plugin")  # QEMU: the "qemu" marker
def test_a_board_calibrates_the_profile_it_emulates(
    counting: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A measured device naming `emulates = "rpi4"` (this machine stands in for the board): the
    counts are rpi4's (qemu-aarch64, cortex-a72), the rpi4 profile written beside it carries the
    calibrated model and its cpuinfo, and rpi4's estimates state where their band comes from."""
    from harness.cli import main
    from harness.devices import load_profiles
    from harness.timing import estimate_latency

    if shutil.which("qemu-aarch64") is None:
        unavailable("qemu-user is not installed: run scripts/setup-counting.sh as root")
    (tmp_path / "myboard.toml").write_text('backend = "local"\nemulates = "rpi4"\n')
    models = [str(m) for m in MODELS[1:]]
    code = main(["calibrate", "--device", "myboard", "--models", *models, "--matrix",
                 str(tmp_path), "--seconds", "0.3"])  # fmt: skip
    out = capsys.readouterr()
    if code != 0 and "setup-counting" in out.err:
        unavailable(f"counting on rpi4: {out.err.strip()}")
    assert code == 0, out.err
    assert "calibrating rpi4's timing model (cortex-a72" in out.out
    rpi4 = load_profiles(tmp_path)["rpi4"]
    assert rpi4.cpuinfo == (tmp_path / "cpuinfo" / "cortex-a72.txt").resolve()
    assert rpi4.timing_model == (tmp_path / "timing" / "myboard.toml").resolve()
    assert rpi4.cpu == "cortex-a72" and rpi4.emulated
    estimate = estimate_latency(rpi4, MODELS[1])
    assert "validated on 2 models on myboard" in str(estimate)
    assert estimate.band_fraction == cpu_for_profile(rpi4).band_fraction
