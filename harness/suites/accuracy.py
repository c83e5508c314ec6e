"""Accuracy: top-1 for classification (argmax of the score output), MAE for regression.

The worker returns predictions only; labels stay on the host and scoring happens here.

Where one inference is expensive (an emulated board; see harness.emulation_plan), accuracy over the
whole dataset is computed natively on this host, and the device answers a seeded sample of it: the
item reports the device's agreement with the host's answers with an exact confidence interval,
which decides `device_top1_min` (PASS when the interval's low end meets it, FAIL when its high end
misses it, INCONCLUSIVE between, saying how many samples would decide). The host's reference run
goes on in a thread while the device works: it is not timed, and the device is another process.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.answers_cache import board_answers
from harness.emulation_plan import sample_indices
from harness.pairs import Pair
from harness.results import Measurement
from harness.worker.feeds import DataError, load_npz

SCORE_GATES = ("accuracy_min", "mae_max", "accuracy_max_drop")


def _labels(pair: Pair) -> np.ndarray | None:
    """The dataset's labels; None for inputs without labels (detection scenes, audio for
    latency) where no gate asks for a score: the suite then checks outputs are finite."""
    assert pair.model.dataset is not None
    data = load_npz(str(pair.model.dataset))
    gates = [pair.model.gates_for(pair.profile.name)]
    scored = [g for g in SCORE_GATES if any(getattr(s, g, None) is not None for s in gates)]
    if "y" not in data and not scored:
        return None
    if "y" not in data:
        raise DataError(
            f"{pair.model.dataset}: no array 'y' with the labels, which {', '.join(scored)} "
            f"needs (arrays there: {', '.join(sorted(data)) or 'none'})"
        )
    return data["y"]


def task_of(pair: Pair, labels: np.ndarray) -> str:
    if pair.model.task is not None:
        return pair.model.task
    return "classification" if labels.dtype.kind in "iub" else "regression"


def _score(
    pair: Pair, labels: np.ndarray, task: str, base: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    every = list(range(labels.shape[0]))
    result = pair.worker.evaluate(task, every, pair.progress, base=base)
    figures, raw = _scored(pair, labels, task, result)
    return figures | board_answers([result]), raw


def _scored(
    pair: Pair, labels: np.ndarray, task: str, result: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    count = labels.shape[0]
    figures: dict[str, Any] = {"n": count, "task": task, "nonfinite": result["nonfinite"]}
    raw: dict[str, Any] = {}
    if task == "classification":
        predicted = np.asarray(result["top1"])
        truth = labels.reshape(count, -1)[:, 0].astype(np.int64)
        correct = predicted == truth
        figures["accuracy"] = float(correct.mean())
        raw["per_class"] = {
            str(c): {"n": int((truth == c).sum()), "accuracy": float(correct[truth == c].mean())}
            for c in np.unique(truth)
        }
        raw["predictions"] = predicted.tolist()
        if "values" in result:
            raw["values"] = np.asarray(result["values"])
        return figures, raw
    values = np.asarray(result["values"], dtype=np.float64)
    truth_values = labels.reshape(count, -1).astype(np.float64)
    if values.shape != truth_values.shape:
        raise DataError(
            f"{pair.model.dataset}: y holds {truth_values.shape[1]} value(s) per sample but "
            f"output {pair.loaded['output']!r} gives {values.reshape(count, -1).shape[1]}; store "
            "y with the output's shape per sample, or choose another output"
        )
    raw["values"] = values
    errors = np.abs(values - truth_values)
    figures["mae"] = float(errors.mean())
    figures["max_abs_error"] = float(errors.max())
    return figures, raw


def _against_base(figures: dict[str, Any], base_figures: dict[str, Any]) -> None:
    """The base's score beside this one's, and the accuracy drop the relative gate reads."""
    for key in ("accuracy", "mae"):
        if key in base_figures and key in figures:
            figures[f"baseline_{key}"] = base_figures[key]
    if "baseline_accuracy" in figures:
        figures["accuracy_drop"] = figures["baseline_accuracy"] - figures["accuracy"]


def _against_host(reference: dict[str, Any], raw: dict[str, Any]) -> dict[str, Any]:
    """How the device's outputs differ from the same model's on this host, natively."""
    differences: dict[str, Any] = {}
    if "top1" in reference and "predictions" in raw:
        same = np.asarray(reference["top1"]) == np.asarray(raw["predictions"])
        differences["host_agreement"] = float(same.mean())
        differences["host_disagreements"] = int((~same).sum())
    if "values" in reference and "values" in raw:
        delta = np.abs(np.asarray(reference["values"]) - np.asarray(raw["values"]))
        differences["host_max_abs_diff"] = float(delta.max()) if delta.size else 0.0
    return differences


def _unlabelled(pair: Pair) -> Measurement:
    """No labels: the dataset's outputs are checked for NaN/inf (on an expensive device, the
    plan's sample of them), which nonfinite_max gates; nothing is scored."""
    count = int(pair.loaded["samples"])
    plan = pair.plan
    indices = list(range(count))
    if plan.accuracy_on == "host":
        indices = sample_indices(count, plan.agreement_samples, pair.config.seed)
    result = pair.worker.evaluate("classification", indices, pair.progress)
    assert pair.target is not None
    where = "on the board" if pair.profile.emulated else "on the device"
    figures: dict[str, Any] = {
        "n": len(indices),
        "nonfinite": result["nonfinite"],
        "labels": f"none in {pair.model.dataset.name if pair.model.dataset else '-'}: "
        "outputs checked for NaN/inf, nothing scored",
        "basis_nonfinite": f"n={len(indices)} {where}, {pair.target.fidelity}",
    }
    return Measurement(figures | board_answers([result]), pair.target.fidelity, {})


def measure(pair: Pair) -> Measurement:
    labels = _labels(pair)
    pair.start()
    if labels is None:
        return _unlabelled(pair)
    count = int(pair.loaded["samples"])
    if labels.shape[0] != count:
        raise DataError(
            f"{pair.model.dataset}: y has {labels.shape[0]} labels but the inputs have {count} "
            "samples; store one label per sample"
        )
    task = task_of(pair, labels)
    if pair.plan.accuracy_on == "host":
        return _on_host_with_agreement(pair, labels, task)
    figures, raw = _score(pair, labels, task, base=False)
    base_figures: dict[str, Any]
    if pair.baseline.base is not None:
        base_figures, base_raw = _score(pair, labels, task, base=True)
        if "predictions" in base_raw:
            agree = np.mean(np.asarray(base_raw["predictions"]) == np.asarray(raw["predictions"]))
            figures["baseline_agreement"] = float(agree)
        if "per_class" in base_raw:
            raw["baseline_per_class"] = base_raw["per_class"]  # the report draws both
    else:
        base_figures = pair.baseline.stored_figures("accuracy")
    _against_base(figures, base_figures)
    if pair.profile.backend != "local":
        figures.update(_against_host(pair.shared.host_reference(pair.model, task), raw))
        if "host_agreement" in figures:  # every sample: the agreement is exact
            figures["host_agreement_low"] = figures["host_agreement_high"] = figures[
                "host_agreement"
            ]
            figures["agreement_n"] = count
    raw.pop("values", None)  # raw scores served the comparisons; the report keeps predictions
    assert pair.target is not None
    return Measurement(figures, pair.target.fidelity, raw)


def _on_host_with_agreement(pair: Pair, labels: np.ndarray, task: str) -> Measurement:
    from concurrent.futures import ThreadPoolExecutor

    from harness import stats

    plan, count = pair.plan, labels.shape[0]
    indices = sample_indices(count, plan.agreement_samples, pair.config.seed)
    with ThreadPoolExecutor(max_workers=1) as background:
        reference = background.submit(pair.shared.host_reference, pair.model, task)
        device = pair.worker.evaluate(task, indices, pair.progress)
        host = reference.result()
    figures, raw = _scored(pair, labels, task, host)
    figures |= board_answers([device])
    figures["accuracy_on"] = f"host (natively, all {count} samples)"
    figures["nonfinite"] = int(figures["nonfinite"]) + int(device["nonfinite"])
    figures["agreement_n"] = len(indices)
    # n is the host's: every row says what its figure rests on, where and how.
    assert pair.target is not None
    on_host = f"n={count} on the host, measured"
    on_board = f"n={len(indices)} on the board, {pair.target.fidelity}"
    figures["basis_accuracy"] = figures["basis_mae"] = on_host
    figures["basis_nonfinite"] = f"{on_host}; {on_board}"
    figures["basis_host_agreement"] = on_board
    if "top1" in device and "top1" in host:
        mine = np.asarray(device["top1"])
        agree = int((np.asarray(host["top1"])[indices] == mine).sum())
        interval = stats.agreement_interval(agree, len(indices), pair.config.plan.confidence)
        figures |= {
            "host_agreement": agree / len(indices),
            "host_agreement_low": interval.low,
            "host_agreement_high": interval.high,
            "host_disagreements": len(indices) - agree,
            "agreement_confidence": pair.config.plan.confidence,
        }
    if "values" in device and "values" in host:
        delta = np.abs(np.asarray(host["values"])[indices] - device["values"])
        figures["host_max_abs_diff"] = float(delta.max()) if delta.size else 0.0
    base_figures: dict[str, Any]
    if pair.baseline.base is not None:
        base_figures, _ = _scored(
            pair, labels, task, pair.shared.host_reference(pair.baseline.base, task)
        )
    else:
        base_figures = pair.baseline.stored_figures("accuracy")
    _against_base(figures, base_figures)
    raw.pop("values", None)
    raw["agreement_indices"] = indices
    assert pair.target is not None
    return Measurement(figures, pair.target.fidelity, raw)
