"""Size: the model file's bytes. Static, so no worker is started."""

from __future__ import annotations

from harness.runner import Pair
from harness.suites.base import Measurement


def measure(pair: Pair) -> Measurement:
    if pair.model.problems:
        pair.worker()  # raises the model's file problem as the item's failure
    size = pair.model.path.stat().st_size
    figures: dict[str, float] = {"size_bytes": size, "size_kb": size / 1024}
    if pair.base is not None:
        figures["baseline_size_kb"] = pair.base.path.stat().st_size / 1024
    elif "size" in pair.stored:
        figures["baseline_size_kb"] = pair.stored["size"]["figures"].get("size_kb")
    return Measurement(figures, "measured")
