"""The suite registry: every suite declared once, in the order items run and tables list them.

A suite declares its name, its headline figure (what every table, report and trend shows for it),
when it applies to a model, and where its measuring code lives (`harness.suites.<name>.measure`,
imported only when an item runs, so reports can read this registry without the backends).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.config import HarnessConfig, ModelSpec
    from harness.results import Measurement
    from harness.runner import Pair


@dataclass(frozen=True)
class Suite:
    name: str
    headline: tuple[str, ...]  # the figure shown for it: the first of these a record holds
    applies: Callable[[ModelSpec, HarnessConfig], bool]
    static: bool = False  # reads the model file only; nothing runs on the device

    def measure(self, pair: Pair) -> Measurement:
        module = importlib.import_module(f"harness.suites.{self.name}")
        measurement: Measurement = module.measure(pair)
        return measurement

    def headline_of(self, figures: Mapping[str, Any]) -> str | None:
        return next((f for f in self.headline if f in figures), None)


def _always(model: ModelSpec, config: HarnessConfig) -> bool:
    return True


def _has_dataset(model: ModelSpec, config: HarnessConfig) -> bool:
    return model.dataset is not None


def _compares_outputs(model: ModelSpec, config: HarnessConfig) -> bool:
    """A configured comparison: another variant (`parity_with`) or a device-parity gate."""
    from harness.config import DEVICE_PARITY_GATES

    specs = [model.gates, *model.device_gates.values()]
    return model.parity_with is not None or any(
        getattr(s, g) is not None for s in specs for g in DEVICE_PARITY_GATES
    )


def _counts(model: ModelSpec, config: HarnessConfig) -> bool:
    specs = [model.gates, *model.device_gates.values()]
    return config.counting or any(s.instructions_max_regression is not None for s in specs)


def _generates_inputs(model: ModelSpec, config: HarnessConfig) -> bool:
    return config.robustness.examples > 0


def _collected_apart(model: ModelSpec, config: HarnessConfig) -> bool:
    return False  # policy items exist per model under a baseline checkout (harness.items)


SUITES: tuple[Suite, ...] = (
    Suite("policy", ("loosened",), _collected_apart, static=True),
    Suite("size", ("size_kb",), _always, static=True),
    Suite("operators", ("errors",), _always, static=True),
    Suite("accuracy", ("accuracy", "mae"), _has_dataset),
    Suite("parity", ("parity_top1", "device_top1", "parity_max_abs_error"), _compares_outputs),
    Suite("latency", ("p90_ms",), _always),
    # Under emulation the gated figure is the board estimate: show that one everywhere.
    Suite("memory", ("board_peak_mb", "peak_mb"), _always),
    Suite("robustness", ("examples",), _generates_inputs),
    Suite("instructions", ("instructions_per_inference",), _counts),
)
BY_NAME: Mapping[str, Suite] = {s.name: s for s in SUITES}
ORDER: Mapping[str, int] = {s.name: i for i, s in enumerate(SUITES)}


def suite(name: str) -> Suite:
    return BY_NAME[name]


def suites_for(model: ModelSpec, config: HarnessConfig) -> list[Suite]:
    """The suites that apply to `model`, in order."""
    return [s for s in SUITES if s.applies(model, config)]


def headline_of(record: Mapping[str, Any]) -> str | None:
    """The headline figure a record holds (None for a suite not in the registry)."""
    known = BY_NAME.get(str(record["suite"]))
    return known.headline_of(record.get("figures") or {}) if known else None


def headline_figures() -> tuple[str, ...]:
    """Every suite's headline figures: what the history draws trends of."""
    return tuple(f for s in SUITES for f in s.headline)
