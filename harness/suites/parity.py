"""Parity: the same inputs through two variants of a model (`parity_with`: ONNX vs TFLite, float
vs int8), both on this device; and, on container devices, this device against the same model run
natively on the host. Inputs are the dataset, or generated ones when the model has none.

Figures: top-1 agreement (outputs with more than one score), the largest absolute difference of
any score, and the smallest per-sample cosine similarity. Quantized outputs are compared
dequantized.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from harness.results import Flags, Measurement
from harness.runner import Pair, Worker
from harness.worker.feeds import DataError

GENERATED_SAMPLES = 64


def compare(mine: dict[str, Any], other: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Agreement figures between two `evaluate` results over the same samples."""
    if "values" not in mine or "values" not in other:
        raise DataError("parity needs the raw scores, and this output is too large to return")
    a = np.asarray(mine["values"], dtype=np.float64)
    b = np.asarray(other["values"], dtype=np.float64)
    if a.shape != b.shape:
        raise DataError(
            f"parity: the outputs have different shapes per sample ({a.shape[1:]} vs "
            f"{b.shape[1:]}); choose comparable outputs with `output`"
        )
    figures: dict[str, Any] = {f"{prefix}n": int(a.shape[0])}
    if a.shape[1] > 1:
        figures[f"{prefix}top1"] = float(np.mean(np.argmax(a, 1) == np.argmax(b, 1)))
    figures[f"{prefix}max_abs_error"] = float(np.abs(a - b).max()) if a.size else 0.0
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.sum(a * b, axis=1)
    both_zero = norms == 0
    cosine = np.where(both_zero, 1.0, dots / np.where(both_zero, 1.0, norms))
    figures[f"{prefix}cosine_min"] = float(cosine.min()) if cosine.size else 1.0
    figures[f"{prefix}cosine_mean"] = float(cosine.mean()) if cosine.size else 1.0
    return figures


def generated_dataset(pair: Pair, folder: Path) -> Path:
    """Seeded inputs in the shapes the model was loaded with: float inputs standard normal,
    quantized ones uniform over their representable range, plain integers small counts."""
    rng = np.random.default_rng(pair.config.seed)
    arrays: dict[str, np.ndarray] = {}
    for position, spec in enumerate(pair.loaded["inputs"]):
        shape = pair.loaded["input_shapes"][spec["name"]]
        sample = tuple(shape[1:]) if shape else ()
        size = (GENERATED_SAMPLES, *sample)
        dtype = np.dtype(spec["dtype"])
        quant = spec.get("quantization")
        if quant:
            info = np.iinfo(dtype)
            q = rng.integers(info.min, info.max + 1, size)
            array = ((q - quant["zero_point"]) * quant["scale"]).astype(np.float32)
        elif dtype.kind == "f":
            array = rng.standard_normal(size).astype(np.float32)
        elif dtype.kind == "b":
            array = rng.integers(0, 2, size).astype(bool)
        else:
            array = rng.integers(0, 100, size).astype(dtype)
        arrays["X" if position == 0 else f"X_{spec['name']}"] = array
    path = folder / f"{pair.model.name}-generated.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def measure(pair: Pair) -> Measurement:
    pair.start()
    assert pair.target is not None
    figures: dict[str, Any] = {}
    flags = Flags()
    dataset = pair.model.dataset or generated_dataset(pair, pair.shared.scratch())
    figures["inputs"] = "dataset" if pair.model.dataset else f"generated ({GENERATED_SAMPLES})"
    model = replace(pair.model, dataset=dataset)
    # Without a dataset, the model runs again in a worker that can see the generated inputs.
    mine_worker = pair.worker if pair.model.dataset else pair.other(model)
    helpers: list[Worker] = [] if mine_worker is pair.worker else [mine_worker]
    try:
        mine = mine_worker.request("evaluate", task="classification")
        if pair.model.parity_with is not None:
            other_spec = pair.config.model(pair.model.parity_with)
            other = pair.other(replace(other_spec, dataset=dataset))
            helpers.append(other)
            figures["parity_with"] = other_spec.name
            figures |= compare(mine, other.request("evaluate", task="classification"), "parity_")
        if pair.profile.backend == "local":
            flags["is_reference"] = True  # the host is what other devices are compared with
        else:
            reference = pair.shared.host_reference(model, "classification")
            figures |= compare(mine, reference, "device_")
    finally:
        for helper in helpers:
            helper.close()
    return Measurement(figures, pair.target.fidelity, flags=flags)
