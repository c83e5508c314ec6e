"""Static operator check: does the device's runtime version know every operator in the model?

Runs before anything is loaded into a runtime. `read_operators` parses the model file itself
(ONNX protobuf with the `onnx` package, never reading external data; TFLite flatbuffer with the
schema ai-edge-litert ships), `check` compares what it found with what a runtime release
supports (tables and their sources in `harness.operators.tables`), and `summarise` gives the
operator counts for reports.

    model = read_operators("models/net.tflite")
    for problem in check(model, "tflite-runtime", "2.14.0"):
        print(problem.message)
    # FULLY_CONNECTED v12 needs TFLite runtime >= 2.17.0; the device has tflite-runtime 2.14.0 ...

Problems have a severity: "error" means the runtime will refuse the model (an operator, version,
opset or IR version it lacks); "warning" means the harness cannot tell (a runtime newer than its
tables, an operator version TensorFlow's table does not list).

The files: uses.py (what an operator use and a problem are; the counts for reports),
onnx_file.py and tflite_file.py (reading each format), onnxruntime_rules.py and litert_rules.py
(what each runtime's releases support), tables.py (the release tables and their sources).
"""

from __future__ import annotations

from pathlib import Path

from harness.operators.litert_rules import check_tflite
from harness.operators.onnx_file import read_onnx
from harness.operators.onnxruntime_rules import check_onnx
from harness.operators.tflite_file import read_tflite
from harness.operators.uses import (
    Format,
    ModelOperators,
    OperatorProblem,
    OperatorReadError,
    OperatorUse,
    summarise,
)

__all__ = [
    "RUNTIMES",
    "ModelOperators",
    "OperatorProblem",
    "OperatorReadError",
    "OperatorUse",
    "check",
    "read_operators",
    "summarise",
]

RUNTIMES: dict[str, Format] = {
    "onnxruntime": "onnx",
    "ai-edge-litert": "tflite",
    "tflite-runtime": "tflite",
    "tensorflow": "tflite",  # tf.lite.Interpreter from the full TensorFlow package
}


def read_operators(path: str | Path) -> ModelOperators:
    """Every operator, operator version and opset in a .onnx or .tflite file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return read_onnx(path)
    if suffix == ".tflite":
        return read_tflite(path)
    raise OperatorReadError(f"{path}: unknown model format {suffix!r} (expected .onnx or .tflite)")


def check(model: ModelOperators, runtime: str, version: str) -> list[OperatorProblem]:
    """What in `model` the runtime release (e.g. "onnxruntime", "1.17.0") does not support."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; known: {', '.join(sorted(RUNTIMES))}")
    if RUNTIMES[runtime] != model.format:
        raise ValueError(f"{runtime} does not run {model.format} models ({model.path})")
    if model.format == "onnx":
        return check_onnx(model, version)
    return check_tflite(model, runtime, version)
