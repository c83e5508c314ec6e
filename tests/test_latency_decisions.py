"""The latency item's decision paths, driven by scripted worker replies: what it decides from how
many samples or rounds, and that the gates read the same. The worker itself is exercised end to
end in tests/test_plugin.py and tests/test_baseline.py; here only its bench replies are scripted,
so that each path (budget spent, sample cap between looks, too few rounds) is hit exactly."""

from __future__ import annotations

import dataclasses
import itertools
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from harness.baseline import BaselineContext
from harness.config import GateSpec, HarnessConfig, LatencySettings, ModelSpec
from harness.devices import load_profiles
from harness.gates import FAIL, INCONCLUSIVE, PASS, decide
from harness.suites import latency


class ScriptedPair:
    """Stands in for runner.Pair: `bench` replies are taken from the given series (ns)."""

    def __init__(
        self,
        gates: GateSpec,
        settings: LatencySettings,
        new: Iterator[int],
        base: Iterator[int] | None = None,
    ) -> None:
        # Two model files that differ: a base identical to the model would be decided by
        # identity (harness.suites.latency.identical_to_base), with no paired rounds.
        folder = Path(tempfile.mkdtemp(prefix="scripted-pair-"))
        (folder / "m.onnx").write_bytes(b"new")
        (folder / "base.onnx").write_bytes(b"base")
        self.model = ModelSpec(name="m", path=folder / "m.onnx", gates=gates)
        self.profile = load_profiles()["host"]
        self.config = HarnessConfig(source=Path("harness.toml"), latency=settings)
        self.target = SimpleNamespace(fidelity="measured")
        base_model = dataclasses.replace(self.model, path=folder / "base.onnx")
        self.baseline = BaselineContext(base=base_model if base is not None else None)
        self.series = {False: new, True: base}
        self.requests = 0

    def start(self) -> None:
        return None

    def planned(self) -> ScriptedPair:
        return self  # the host: nothing is scaled

    def stored(self, raw: dict[str, Any]) -> None:
        """Stand in for a stored baseline's latency record."""
        self.baseline = BaselineContext(label="base.json", stored={"latency": {"raw": raw}})  # type: ignore[typeddict-item]

    def request(self, op: str, base: bool = False, samples: int = 1, warmup: int = 0) -> Any:
        assert op == "bench"
        self.requests += 1
        series = self.series[base]
        assert series is not None
        return {"samples_ns": list(itertools.islice(series, samples))}


def _verdict(pair: ScriptedPair) -> tuple[str, dict[str, Any]]:
    measurement = latency.measure(pair)  # type: ignore[arg-type]
    gates = pair.model.gates_for("host")
    verdict = decide("latency", measurement.figures, gates, "host", "measured", measurement.flags)
    # The tests read the flags beside the figures, as the reports show them.
    return verdict.status, {**measurement.figures, **measurement.flags}


def test_two_paired_rounds_never_decide() -> None:
    """The budget ends after 2 rounds, both +8..9% against a 10% gate: with 2 rounds the
    signed-rank interval is only the data's extremes, so nothing may be decided from them."""
    ms = 1_000_000
    base = itertools.repeat(ms)
    new = itertools.cycle([int(1.08 * ms)] * 60 + [int(1.09 * ms)] * 60)
    settings = LatencySettings(warmup=0, time_budget_s=0.0)
    pair = ScriptedPair(GateSpec(latency_max_regression=0.10), settings, new, base)
    status, figures = _verdict(pair)
    assert figures["rounds"] == 2
    assert status == INCONCLUSIVE, figures
    assert "only 2 paired rounds" in figures["inconclusive"]
    assert "needs at least 9" in figures["inconclusive"]  # at the per-look 99.375%


def test_p90_budget_spent_before_the_first_look_is_inconclusive() -> None:
    settings = LatencySettings(warmup=0, time_budget_s=0.0, min_samples=1)
    pair = ScriptedPair(GateSpec(latency_p90_ms_max=5.0), settings, itertools.repeat(1_000_000))
    status, figures = _verdict(pair)
    assert figures["n"] == 1
    assert status == INCONCLUSIVE
    assert "from only n=1 samples" in figures["inconclusive"]
    assert "interval of the p90 needs at least 55" in figures["inconclusive"]


def test_p90_decides_at_the_final_look_when_the_sample_cap_ends_between_looks() -> None:
    """Looks come at 55, 110, ... samples; `samples = 100` ends sampling between two of them.
    The final look (the docs promise one) decides on all 100 samples."""
    second = 1_000_000_000  # 1 s per run: one sample per worker request
    series = [6 * second, 6 * second] + [second] * 200  # two slow runs among the first 55
    settings = LatencySettings(warmup=0, samples=100, time_budget_s=600.0)
    pair = ScriptedPair(GateSpec(latency_p90_ms_max=5000.0), settings, iter(series))
    status, figures = _verdict(pair)
    assert figures["n"] == 100
    assert figures["p90_high_ms"] <= 5000.0
    assert status == PASS, figures.get("inconclusive")


def test_p90_undecided_with_the_estimate_above_the_gate_fails() -> None:
    """docs/measurement.md: an interval that still straddles the gate when sampling ends is
    INCONCLUSIVE while the p90 estimate is within the gate, and FAIL when the estimate itself is
    above it (so `inconclusive = "pass"` never lets a p90 measured above the gate through)."""
    settings = LatencySettings(warmup=0, time_budget_s=0.0, min_samples=1)
    pair = ScriptedPair(GateSpec(latency_p90_ms_max=5.0), settings, itertools.repeat(6_000_000))
    status, figures = _verdict(pair)
    assert "needs at least 55" in figures["inconclusive"]
    assert status == FAIL


def _session(levels: list[float], per_chunk: int = 30) -> tuple[list[int], list[int]]:
    """Raw samples (ns) of a session whose timed loops ran at the given levels (ms)."""
    samples = [
        int(level * 1e6 * (1 + 0.01 * (i % 3))) for level in levels for i in range(per_chunk)
    ]
    return samples, [per_chunk] * len(levels)


def test_a_stored_baseline_is_not_failed_by_drift_between_sessions() -> None:
    """Chunks of each session wander by ±6%; the new session sits 8% above the stored one, as
    a busier machine would put it. Compared sample by sample the 8% looks certain and fails a
    5% gate; drift of that size between sessions is what the chunks already show."""
    wander = [1.00, 1.06, 0.95, 1.03, 0.97, 1.05, 0.94, 1.02, 0.99, 1.04]
    base, sizes = _session(wander)
    new, _ = _session([1.08 * level for level in wander[3:] + wander[:3]])
    settings = LatencySettings(warmup=0, samples=len(new) + 1, time_budget_s=600.0)
    pair = ScriptedPair(GateSpec(latency_max_regression=0.05), settings, iter([int(1.08e6)] + new))
    pair.stored({"samples_ns": base, "chunk_sizes": sizes})
    status, figures = _verdict(pair)
    assert status == INCONCLUSIVE, figures
    assert figures["paired"] is False and figures["baseline_chunks"] == 10
    assert figures["chunks"] >= 10  # the session is cut into enough timed loops
    assert figures["ratio_low"] < 1.0 < 1.05 < figures["ratio_high"]


def test_a_stored_baseline_still_fails_a_change_larger_than_its_drift() -> None:
    wander = [1.00, 1.02, 0.99, 1.01, 0.98, 1.02, 0.99, 1.01, 1.00, 1.02]
    base, _ = _session(wander)  # an older record: no chunk sizes, cut into blocks
    new, _ = _session([1.5 * level for level in wander])
    settings = LatencySettings(warmup=0, samples=len(new) + 1, time_budget_s=600.0)
    pair = ScriptedPair(GateSpec(latency_max_regression=0.05), settings, iter([int(1.5e6)] + new))
    pair.stored({"samples_ns": base})
    status, figures = _verdict(pair)
    # +50%: beyond the chunks' drift and a session level's own spread (STORED_SESSION_SD).
    assert 1.05 < figures["ratio_low"] < 1.5 < figures["ratio_high"]
    assert status == FAIL
