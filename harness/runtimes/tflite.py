"""TFLite/LiteRT models through ai_edge_litert, falling back to tflite_runtime."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from harness.runtimes.base import Dim, ModelLoadError, TensorSpec, quantization_or_none


def _interpreter_class() -> tuple[Any, str, str]:
    try:
        from importlib.metadata import version

        from ai_edge_litert import interpreter as litert

        return litert.Interpreter, "ai-edge-litert", version("ai-edge-litert")
    except ImportError:
        pass
    try:
        from importlib.metadata import version

        from tflite_runtime import interpreter as tfl_rt

        return tfl_rt.Interpreter, "tflite-runtime", version("tflite-runtime")
    except ImportError as exc:
        raise ModelLoadError(
            "no TFLite runtime here: install ai-edge-litert (or tflite-runtime with numpy<2)"
        ) from exc


def _spec(detail: dict[str, Any]) -> TensorSpec:
    signature = detail.get("shape_signature", detail["shape"])
    shape: tuple[Dim, ...] = tuple(int(d) if d >= 0 else None for d in signature)
    scale, zero_point = detail.get("quantization", (0.0, 0))
    params = detail.get("quantization_parameters") or {}
    scales = params.get("scales")
    if scales is not None and len(scales) > 1:
        raise ModelLoadError(
            f"tensor {detail['name']!r} is quantized per channel at the model boundary; harness "
            "feeds and reads per-tensor quantized inputs and outputs only"
        )
    return TensorSpec(
        str(detail["name"]),
        shape,
        np.dtype(detail["dtype"]).name,
        quantization_or_none(scale, zero_point),
    )


class TfliteRuntime:
    def __init__(self, path: str, threads: int, accelerator: str = "none") -> None:
        if accelerator != "none":
            raise ModelLoadError(f"TFLite on accelerator {accelerator!r} is not supported")
        interpreter_class, self.name, self.version = _interpreter_class()
        self._new_interpreter: Callable[[], Any] = partial(
            interpreter_class, model_path=path, num_threads=threads
        )
        try:
            self.interpreter = self._new_interpreter()
        except Exception as exc:  # the interpreter raises ValueError/RuntimeError variants
            raise ModelLoadError(f"{self.name} cannot load it: {exc}") from exc
        self.provider = "XNNPACK/CPU"
        # Streaming models keep state between invokes: variable tensors (SVDF, LSTM), which
        # reset_all_variables() zeroes, or resource variables (VAR_HANDLE, RESOURCE tensors,
        # numpy object dtype here), which survive it: only a fresh interpreter starts those over.
        self._resources = any(
            np.dtype(d["dtype"]) == np.dtype(object) for d in self.interpreter.get_tensor_details()
        )
        self.state = (
            "resource variables: a fresh interpreter before every run"
            if self._resources
            else "variable tensors, if any: reset_all_variables() before every run"
        )
        details = self.interpreter.get_input_details()
        self._input_index = {d["name"]: d["index"] for d in details}
        self.inputs = [_spec(d) for d in details]
        out_details = self.interpreter.get_output_details()
        self._output_index = [d["index"] for d in out_details]
        self.outputs = [_spec(d) for d in out_details]
        self._allocated = False

    def reset(self) -> None:
        if self._resources:
            self.interpreter = self._new_interpreter()
            self._allocated = False  # the next run sizes and allocates it
        elif self._allocated:
            self.interpreter.reset_all_variables()

    def prepare(self, shapes: dict[str, tuple[int, ...]]) -> None:
        # Dynamic signatures need resize_tensor_input before allocate_tensors, or XNNPack
        # fails to reshape later.
        for spec in self.inputs:
            if spec.dynamic and spec.name in shapes:
                self.interpreter.resize_tensor_input(
                    self._input_index[spec.name], list(shapes[spec.name]), strict=False
                )
        try:
            self.interpreter.allocate_tensors()
        except Exception as exc:
            raise ModelLoadError(f"{self.name} cannot allocate tensors: {exc}") from exc
        self._allocated = True

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        current = {d["name"]: tuple(d["shape"]) for d in self.interpreter.get_input_details()}
        if self._allocated and any(current[k] != v.shape for k, v in feeds.items()):
            self._allocated = False  # another batch size or dynamic dim: resize and re-allocate
            self.prepare({k: tuple(v.shape) for k, v in feeds.items()})
        self.timed_call(feeds)()
        return [self.interpreter.get_tensor(i) for i in self._output_index]

    def timed_call(self, feeds: dict[str, np.ndarray]) -> Callable[[], object]:
        if not self._allocated:
            self.prepare({k: tuple(v.shape) for k, v in feeds.items()})
        interpreter = self.interpreter
        set_tensor, invoke, get_tensor = (
            interpreter.set_tensor,
            interpreter.invoke,
            interpreter.get_tensor,
        )
        pairs = [(self._input_index[name], value) for name, value in feeds.items()]
        outputs = self._output_index
        if len(pairs) == 1 and len(outputs) == 1:
            # The common case, kept as thin as a hand-written loop: tiny models run in
            # microseconds, where every extra Python step shows in the figures.
            (index, value), (output,) = pairs[0], outputs

            def single() -> object:
                set_tensor(index, value)
                invoke()
                return get_tensor(output)

            return single

        def call() -> object:
            for index, value in pairs:
                set_tensor(index, value)
            invoke()
            return [get_tensor(i) for i in outputs]

        return call
