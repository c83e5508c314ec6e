"""Accuracy: top-1 for classification (argmax of the score output), MAE for regression.

The worker returns predictions only; labels stay on the host and scoring happens here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.runner import Pair
from harness.suites.base import Measurement
from harness.worker.feeds import DataError, load_npz


def _labels(pair: Pair) -> np.ndarray:
    assert pair.model.dataset is not None
    data = load_npz(str(pair.model.dataset))
    if "y" not in data:
        raise DataError(
            f"{pair.model.dataset}: no array 'y' with the labels; the accuracy suite needs one "
            f"(arrays there: {', '.join(sorted(data)) or 'none'})"
        )
    return data["y"]


def task_of(pair: Pair, labels: np.ndarray) -> str:
    if pair.model.task is not None:
        return pair.model.task
    return "classification" if labels.dtype.kind in "iub" else "regression"


def measure(pair: Pair) -> Measurement:
    labels = _labels(pair)
    pair.worker()
    count = int(pair.loaded["samples"])
    if labels.shape[0] != count:
        raise DataError(
            f"{pair.model.dataset}: y has {labels.shape[0]} labels but the inputs have {count} "
            "samples; store one label per sample"
        )
    task = task_of(pair, labels)
    result = pair.request("evaluate", task=task)
    figures: dict[str, Any] = {"n": count, "task": task, "nonfinite": result["nonfinite"]}
    raw: dict[str, Any] = {}
    if task == "classification":
        predicted = np.asarray(result["top1"])
        truth = labels.reshape(count, -1)[:, 0].astype(np.int64) if labels.ndim > 1 else labels
        correct = predicted == truth
        figures["accuracy"] = float(correct.mean())
        classes = np.unique(truth)
        raw["per_class"] = {
            str(c): {"n": int((truth == c).sum()), "accuracy": float(correct[truth == c].mean())}
            for c in classes
        }
        raw["predictions"] = predicted.tolist()
    else:
        values = np.asarray(result["values"], dtype=np.float64)
        truth_values = labels.reshape(count, -1).astype(np.float64)
        if values.shape != truth_values.shape:
            raise DataError(
                f"{pair.model.dataset}: y holds {truth_values.shape[1]} value(s) per sample but "
                f"output {pair.loaded['output']!r} gives {values.shape[1]}; store y with the "
                "output's shape per sample, or choose another output"
            )
        figures["mae"] = float(np.abs(values - truth_values).mean())
        figures["max_abs_error"] = float(np.abs(values - truth_values).max())
    return Measurement(figures, pair.target.fidelity if pair.target else "measured", raw)
