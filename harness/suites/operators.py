"""Operators: a static check before anything runs. Every operator and op version of the model
against what the device's runtime version supports (an ONNX opset above the runtime's, a TFLite
builtin op version an older interpreter lacks, a custom op without a kernel). Errors fail the
item, naming the operator; warnings (the tables cannot tell) are reported. A language model's
GenAI folder is checked through its decoder graph (genai_config.json names it), against the
onnxruntime that onnxruntime-genai runs on."""

from __future__ import annotations

import json
from contextlib import suppress
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from harness.devices import DeviceProfile
from harness.pairs import Pair
from harness.results import Flags, Measurement
from harness.worker.feeds import DataError

RUNTIMES = {
    "onnx": ("onnxruntime", "onnxruntime-gpu"),
    "genai": ("onnxruntime", "onnxruntime-gpu"),  # onnxruntime-genai runs on onnxruntime
    "tflite": ("ai-edge-litert", "tflite-runtime"),
}
GENAI = "onnxruntime-genai"  # beside onnxruntime, for language models


def device_runtimes(profile: DeviceProfile) -> dict[str, str]:
    """Runtime package -> version on the device: installed here for the host, the image
    recipe's pins for container devices."""
    if profile.backend == "local":
        found = {}
        for packages in (*RUNTIMES.values(), (GENAI,)):
            for package in packages:
                with suppress(PackageNotFoundError):
                    found[package] = version(package)
        return found
    from harness.images.recipe import recipe_for

    pins = {}
    for wheel in recipe_for(profile).wheels:
        name, _, pinned = wheel.partition("==")
        pins[name.split("[")[0]] = pinned
    return pins


def _graph(path: Path) -> Path:
    """The ONNX graph to read: the model file, or a GenAI folder's decoder graph."""
    from harness.runtimes.genai import CONFIG_FILE, is_model_folder

    if not is_model_folder(path):
        return path
    try:
        document = json.loads((path / CONFIG_FILE).read_text())
        return path / str(document["model"]["decoder"]["filename"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(
            f"{path / CONFIG_FILE} names no decoder graph (model.decoder.filename: {exc}); "
            "re-export the folder with python -m onnxruntime_genai.models.builder"
        ) from None


def measure(pair: Pair) -> Measurement:
    from harness.operators import OperatorReadError, check, read_operators, summarise
    from harness.runtimes import format_of

    genai = format_of(pair.model.path) == "genai"
    if pair.model.problems:
        pair.start()  # raises the model's file problem as the item's failure
    try:
        model = read_operators(_graph(pair.model.path))
    except OperatorReadError as exc:
        raise DataError(str(exc)) from exc
    available = device_runtimes(pair.profile)
    runtime = next((p for p in RUNTIMES[format_of(pair.model.path)] if p in available), None)
    if runtime is None:
        raise DataError(
            f"device {pair.profile.name} has no runtime for {pair.model.path.name} "
            f"(it has: {', '.join(available) or 'none'})"
        )
    if genai and GENAI not in available:
        raise DataError(
            f"device {pair.profile.name} has no {GENAI} to run the language model "
            f"{pair.model.path.name} (it has: {', '.join(available)})"
        )
    # onnxruntime-gpu supports the operators of the onnxruntime release of the same version.
    problems = check(model, runtime.replace("-gpu", ""), available[runtime])
    errors = [p.message for p in problems if p.severity == "error"]
    warnings = [p.message for p in problems if p.severity != "error"]
    figures: dict[str, Any] = {
        "runtime": runtime,
        "runtime_version": available[runtime],
        "operators": summarise(model),
        "errors": len(errors),
        "warnings": warnings,
    }
    if genai:
        figures["genai_version"] = available[GENAI]
    flags = Flags(failure="; ".join(errors)) if errors else Flags()
    return Measurement(figures, "measured", flags=flags)
