"""Size: the model file's bytes. Static, so no worker is started."""

from __future__ import annotations

from typing import Any

from harness.results import Measurement
from harness.runner import Pair


def measure(pair: Pair) -> Measurement:
    if pair.model.problems:
        pair.start()  # raises the model's file problem as the item's failure
    size = pair.model.path.stat().st_size
    figures: dict[str, Any] = {"size_bytes": size, "size_kb": size / 1024}
    if pair.baseline.base is not None:
        figures["baseline_size_kb"] = pair.baseline.base.path.stat().st_size / 1024
    elif "size_kb" in pair.baseline.stored_figures("size"):
        figures["baseline_size_kb"] = pair.baseline.stored_figures("size")["size_kb"]
    return Measurement(figures, "measured")
