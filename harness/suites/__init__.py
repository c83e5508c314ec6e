"""Suites: what to ask the worker and which figures come back. One suite per file."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.config import ModelSpec
    from harness.runner import Pair
    from harness.suites.base import Measurement


def measure(suite: str, pair: Pair) -> Measurement:
    from harness.suites import (
        accuracy,
        instructions,
        latency,
        memory,
        operators,
        parity,
        robustness,
        size,
    )

    measures: dict[str, Callable[[Pair], Measurement]] = {
        "size": size.measure,
        "operators": operators.measure,
        "accuracy": accuracy.measure,
        "latency": latency.measure,
        "memory": memory.measure,
        "parity": parity.measure,
        "robustness": robustness.measure,
        "instructions": instructions.measure,
    }
    return measures[suite](pair)


def suites_for(model: ModelSpec, robustness_examples: int = 0, counting: bool = False) -> list[str]:
    """The suites that apply to `model`: accuracy needs a dataset, parity a configured
    comparison, robustness a number of examples."""
    from harness.config import DEVICE_PARITY_GATES

    names = ["size", "operators"]
    if model.dataset is not None:
        names.append("accuracy")
    specs = [model.gates, *model.device_gates.values()]
    if model.parity_with or any(
        getattr(s, g) is not None for s in specs for g in DEVICE_PARITY_GATES
    ):
        names.append("parity")
    names.append("latency")
    if counting or any(s.instructions_max_regression is not None for s in specs):
        names.append("instructions")
    names.append("memory")
    return names + (["robustness"] if robustness_examples > 0 else [])
