"""Suites: what to ask the worker and which figures come back. One suite per file."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.config import ModelSpec
    from harness.runner import Pair
    from harness.suites.base import Measurement


def measure(suite: str, pair: Pair) -> Measurement:
    from harness.suites import accuracy, latency, memory, size

    measures: dict[str, Callable[[Pair], Measurement]] = {
        "size": size.measure,
        "accuracy": accuracy.measure,
        "latency": latency.measure,
        "memory": memory.measure,
    }
    return measures[suite](pair)


def suites_for(model: ModelSpec) -> list[str]:
    """The suites that apply to `model`: accuracy needs a dataset."""
    names = ["size"]
    if model.dataset is not None:
        names.append("accuracy")
    return names + ["latency", "memory"]
