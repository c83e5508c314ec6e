"""ONNX models through onnxruntime."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from harness.runtimes.base import Dim, ModelLoadError, TensorSpec

_ONNX_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int16)": "int16",
    "tensor(uint16)": "uint16",
    "tensor(int32)": "int32",
    "tensor(uint32)": "uint32",
    "tensor(int64)": "int64",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
}


def _spec(node: Any) -> TensorSpec:
    name = str(node.name)
    onnx_type = str(node.type)
    if onnx_type not in _ONNX_TYPES:
        raise ModelLoadError(
            f"tensor {name!r} has type {onnx_type}, which harness cannot feed or read "
            "(supported: numeric and bool tensors; sequences and maps are not)"
        )
    raw = node.shape
    shape: tuple[Dim, ...] | None = None if raw is None else tuple(raw)
    return TensorSpec(name, shape, _ONNX_TYPES[onnx_type])


class OnnxRuntime:
    name = "onnxruntime"
    state = ""  # an onnxruntime session keeps nothing between runs: state travels as inputs

    def __init__(self, path: str, threads: int, accelerator: str = "none") -> None:
        import onnxruntime as ort

        self.version = str(ort.__version__)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        if accelerator == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ModelLoadError(
                    "the device asks for CUDA but this onnxruntime has no CUDAExecutionProvider "
                    "(install onnxruntime-gpu in the device image)"
                )
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(path, options, providers=providers)
        except Exception as exc:  # onnxruntime raises several private exception types
            raise ModelLoadError(f"onnxruntime cannot load it: {exc}") from exc
        given = self.session.get_providers()
        if providers[0] not in given:
            # onnxruntime only warns when a provider cannot start (no driver, a missing
            # libcudnn) and runs on the CPU: its figures would be labelled GPU measurements.
            raise ModelLoadError(
                f"the device asked for {providers[0]}, but the session runs on "
                f"{', '.join(given)} only: CUDA could not start here (check the NVIDIA driver "
                "with nvidia-smi, and that onnxruntime-gpu's CUDA and cuDNN libraries are on "
                "the library path of the device image)"
            )
        self.provider = given[0]
        self.inputs = [_spec(n) for n in self.session.get_inputs()]
        self.outputs = [_spec(n) for n in self.session.get_outputs()]

    def reset(self) -> None:
        pass

    def prepare(self, shapes: dict[str, tuple[int, ...]]) -> None:
        pass  # onnxruntime takes any shape that fits the graph at run time

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [np.asarray(o) for o in self.session.run(None, feeds)]

    def timed_call(self, feeds: dict[str, np.ndarray]) -> Callable[[], object]:
        return partial(self.session.run, None, feeds)
