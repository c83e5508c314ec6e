"""Size: the model file's bytes (a language model folder: all its files). Static, so no worker
is started."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.pairs import Pair
from harness.results import Measurement


def size_bytes(path: Path) -> int:
    """A model file's size, or the total of a model folder's files (language models)."""
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def measure(pair: Pair) -> Measurement:
    if pair.model.problems:
        pair.start()  # raises the model's file problem as the item's failure
    size = size_bytes(pair.model.path)
    figures: dict[str, Any] = {"size_bytes": size, "size_kb": size / 1024}
    if pair.baseline.base is not None:
        figures["baseline_size_kb"] = size_bytes(pair.baseline.base.path) / 1024
    elif "size_kb" in pair.baseline.stored_figures("size"):
        figures["baseline_size_kb"] = pair.baseline.stored_figures("size")["size_kb"]
    return Measurement(figures, "measured")
