"""Parity: the same inputs through two variants of a model (`parity_with`: ONNX vs TFLite, float
vs int8), both on this device; and, on container devices, this device against the same model run
natively on the host. Inputs are the dataset, or generated ones when the model has none.

Figures: top-1 agreement (outputs with more than one score), the largest absolute difference of
any score, and the smallest per-sample cosine similarity where an output has at least
COSINE_MIN_ELEMENTS values per sample (on one value cosine is only the sign, always 1.0 for a
probability; `<prefix>cosine_min_skipped` says so instead). Quantized outputs are compared
dequantized.

Generated inputs (no dataset) follow the shapes the model was loaded with (`input_shapes`, every
axis of a state) and leave `input_values` to the config; a refusal names no temporary file.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from harness.answers_cache import board_answers
from harness.backends.base import WorkerError
from harness.emulation_plan import comparison_size, needed_to_decide, sample_indices
from harness.pairs import Pair, PairFailure, WorkerHandle
from harness.results import Flags, Measurement
from harness.worker.feeds import DataError

GENERATED_SAMPLES = 64
SCORES = "scores"  # the worker's task for top-1 and every output value, whatever its size
# Fewer values per sample and cosine similarity says next to nothing (two positive probabilities
# are always within a few degrees); the largest absolute difference still gates them.
COSINE_MIN_ELEMENTS = 8
GENERATED_NAME = "the inputs harness generated (no dataset) from input_shapes and input_values"


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
    if "top1" in mine and "top1" in other:  # the worker's classes (one value: thresholded)
        same = np.asarray(mine["top1"]) == np.asarray(other["top1"])
        figures[f"{prefix}top1"] = float(np.mean(same)) if same.size else 1.0
    elif a.shape[1] > 1:
        figures[f"{prefix}top1"] = float(np.mean(np.argmax(a, 1) == np.argmax(b, 1)))
    figures[f"{prefix}max_abs_error"] = float(np.abs(a - b).max()) if a.size else 0.0
    if a.shape[1] < COSINE_MIN_ELEMENTS:
        figures[f"{prefix}cosine_min_skipped"] = (
            f"cosine similarity not computed: the output has {a.shape[1]} value(s) per sample, "
            f"fewer than {COSINE_MIN_ELEMENTS}, where it says nothing (one value: only its "
            f"sign); {prefix}max_abs_error gates it"
        )
        return figures
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
    for spec in pair.loaded["inputs"]:
        if spec["name"] in pair.model.input_values:
            continue  # the config's constant, as every other suite feeds it
        # One sample is the whole shape the model was loaded with: a state [2, 1, 128] keeps
        # its leading axis (it is not a batch), an input [1, 576] its batch of 1.
        size = (GENERATED_SAMPLES, *pair.loaded["input_shapes"][spec["name"]])
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
        arrays[f"X_{spec['name']}"] = array
    path = folder / f"{pair.model.name}-generated.npz"
    _write_npz(path, arrays)
    return path


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An .npz whose bytes depend on the arrays only (np.savez stamps the time in the zip), so
    the answer cache knows the same generated inputs in the next session."""
    import io
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, array, allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy"), buffer.getvalue())


def measure(pair: Pair) -> Measurement:
    if pair.model.dataset is not None:
        return _measure(pair)
    scratch = pair.shared.scratch()
    try:
        return _measure(pair)
    except (PairFailure, WorkerError, DataError) as exc:
        # The generated file is the harness's own and gone after the session: say what it is.
        text = str(exc).replace(str(scratch / f"{pair.model.name}-generated.npz"), GENERATED_NAME)
        if text == str(exc):
            raise
        if isinstance(exc, PairFailure):
            raise PairFailure(text, skip=exc.skip, oom=exc.oom) from None
        raise DataError(text) from None


def _measure(pair: Pair) -> Measurement:
    pair.start()
    assert pair.target is not None
    figures: dict[str, Any] = {}
    flags = Flags()
    dataset = pair.model.dataset or generated_dataset(pair, pair.shared.scratch())
    figures["inputs"] = "dataset" if pair.model.dataset else f"generated ({GENERATED_SAMPLES})"
    model = replace(pair.model, dataset=dataset)
    # Without a dataset, the model runs again in a worker that can see the generated inputs.
    mine_worker = pair.worker if pair.model.dataset else pair.other(model)
    helpers: list[WorkerHandle] = [] if mine_worker is pair.worker else [mine_worker]
    other: WorkerHandle | None = None
    if pair.model.parity_with is not None:
        other_spec = pair.config.model(pair.model.parity_with)
        other = pair.other(replace(other_spec, dataset=dataset))
        helpers.append(other)
        figures["parity_with"] = other_spec.name
    try:
        indices = _compared(pair, mine_worker, other)
        total = _count(mine_worker)
        if len(indices) < total:
            figures["compared"] = f"{len(indices)} sampled of {total} (plan)"
        mine = mine_worker.evaluate(SCORES, indices, pair.progress)
        answers = [mine]
        if other is not None:
            theirs = other.evaluate(SCORES, indices, pair.progress)
            answers.append(theirs)
            figures |= compare(mine, theirs, "parity_")
        figures |= board_answers(answers)
        if pair.profile.backend == "local":
            flags["is_reference"] = True  # the host is what other devices are compared with
        else:
            reference = pair.shared.host_reference(model, SCORES)
            figures |= compare(mine, _at(reference, indices), "device_")
    finally:
        for helper in helpers:
            helper.close()
    if len(indices) < total:
        _with_intervals(figures, len(indices), pair.config.plan.confidence)
    return Measurement(figures, pair.target.fidelity, flags=flags)


def _with_intervals(figures: dict[str, Any], n: int, confidence: float) -> None:
    """On a sample, top-1 agreements are estimates: their exact intervals decide the gates."""
    from harness import stats

    figures["agreement_n"], figures["agreement_confidence"] = n, confidence
    for prefix in ("parity_", "device_"):
        share = figures.get(f"{prefix}top1")
        if share is not None:
            interval = stats.agreement_interval(round(share * n), n, confidence)
            figures[f"{prefix}top1_low"], figures[f"{prefix}top1_high"] = (
                interval.low,
                interval.high,
            )


def _count(worker: WorkerHandle) -> int:
    worker.start()
    return int(worker.loaded["samples"])


def _compared(pair: Pair, mine: WorkerHandle, other: WorkerHandle | None) -> list[int]:
    """The inputs compared: all of them, unless on an expensive (emulated) device answering
    them all, with both variants, costs more than the plan's budget."""
    count = _count(mine)
    if not pair.plan.emulated:
        return list(range(count))
    cost = float(mine.loaded.get("first_run_s", 0.0))
    if other is not None:
        other.start()
        cost += float(other.loaded.get("first_run_s", 0.0))
    # What parity_top1_min needs to be decided on a sample (harness.emulation_plan), and the rows
    # the board answered before with this model (the agreement's, in the same seeded order).
    gates = pair.model.gates_for(pair.profile.name)
    minimums = [m for m in (gates.parity_top1_min, gates.device_top1_min) if m is not None]
    needed = needed_to_decide(max(minimums, default=None), pair.config.plan.confidence, count)
    cached = pair.plan.agreement_cached
    wanted = comparison_size(count, cost, pair.config, needed, cached)
    return sample_indices(count, wanted, pair.config.seed)


def _at(result: dict[str, Any], indices: list[int]) -> dict[str, Any]:
    """An `evaluate` result over every sample, cut to `indices`."""
    cut = dict(result)
    if "values" in result:
        cut["values"] = np.asarray(result["values"])[indices]
    if "top1" in result:
        cut["top1"] = [result["top1"][i] for i in indices]
    return cut
