"""Operators: a static check before anything runs. Every operator and op version of the model
against what the device's runtime version supports (an ONNX opset above the runtime's, a TFLite
builtin op version an older interpreter lacks, a custom op without a kernel). Errors fail the
item, naming the operator; warnings (the tables cannot tell) are reported."""

from __future__ import annotations

from contextlib import suppress
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from harness.devices import DeviceProfile
from harness.results import Flags, Measurement
from harness.runner import Pair
from harness.worker.feeds import DataError

RUNTIMES = {
    "onnx": ("onnxruntime", "onnxruntime-gpu"),
    "tflite": ("ai-edge-litert", "tflite-runtime"),
}


def device_runtimes(profile: DeviceProfile) -> dict[str, str]:
    """Runtime package -> version on the device: installed here for the host, the image
    recipe's pins for container devices."""
    if profile.backend == "local":
        found = {}
        for packages in RUNTIMES.values():
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


def measure(pair: Pair) -> Measurement:
    from harness.operators import OperatorReadError, check, read_operators, summarise
    from harness.runtimes import format_of

    if pair.model.problems:
        pair.start()  # raises the model's file problem as the item's failure
    try:
        model = read_operators(pair.model.path)
    except OperatorReadError as exc:
        raise DataError(str(exc)) from exc
    available = device_runtimes(pair.profile)
    runtime = next((p for p in RUNTIMES[format_of(pair.model.path)] if p in available), None)
    if runtime is None:
        raise DataError(
            f"device {pair.profile.name} has no runtime for {pair.model.path.name} "
            f"(it has: {', '.join(available) or 'none'})"
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
    flags = Flags(failure="; ".join(errors)) if errors else Flags()
    return Measurement(figures, "measured", flags=flags)
