"""Write small .tflite models without TensorFlow.

The flatbuffer schema comes from `ai_edge_litert/schema_py_generated.py` (object API: ModelT,
SubGraphT, TensorT, ...) and the `flatbuffers` package serializes it. `ModelBuilder` is a small
general builder; `mlp`, `mlp_int8` and `add_mul` are ready-made models.

Weights follow the `y = x @ W + b` convention ([in, out], like scikit-learn's `coefs_` and ONNX
MatMul); they are transposed to the [out, in] layout FULLY_CONNECTED stores.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

_TENSOR_TYPES: dict[np.dtype[Any], int] = {
    np.dtype(np.float32): schema.TensorType.FLOAT32,
    np.dtype(np.float16): schema.TensorType.FLOAT16,
    np.dtype(np.int32): schema.TensorType.INT32,
    np.dtype(np.uint8): schema.TensorType.UINT8,
    np.dtype(np.int64): schema.TensorType.INT64,
    np.dtype(np.bool_): schema.TensorType.BOOL,
    np.dtype(np.int16): schema.TensorType.INT16,
    np.dtype(np.int8): schema.TensorType.INT8,
}

# TFLite requires this output quantization for int8 SOFTMAX.
SOFTMAX_INT8_SCALE = 1.0 / 256.0
SOFTMAX_INT8_ZERO_POINT = -128


class _Buffer:
    """A model buffer whose data starts 16-byte aligned (the generated BufferT aligns to 1)."""

    def __init__(self, data: bytes = b"") -> None:
        self.data = data

    def Pack(self, builder: Any) -> int:  # noqa: N802 - the name ModelT.Pack calls
        offset = None
        if self.data:
            builder.StartVector(1, len(self.data), 16)
            builder.head = builder.head - len(self.data)
            builder.Bytes[builder.head : builder.head + len(self.data)] = self.data
            offset = builder.EndVector()
        schema.BufferStart(builder)
        if offset is not None:
            schema.BufferAddData(builder, offset)
        return int(schema.BufferEnd(builder))


class ModelBuilder:
    """One-subgraph TFLite model: add tensors and operators, name inputs/outputs, save.

    >>> b = ModelBuilder()
    >>> x = b.tensor("x", np.float32, [1, 4], shape_signature=[-1, 4])
    >>> y = b.tensor("y", np.float32, [1, 4])
    >>> b.op("RELU", [x], [y])
    >>> b.save("relu.tflite", inputs=[x], outputs=[y])  # doctest: +SKIP
    """

    def __init__(self, description: str = "harness.modelgen") -> None:
        self.description = description
        self.tensors: list[Any] = []
        self.buffers: list[_Buffer] = [_Buffer()]  # buffer 0: the empty sentinel
        self.operators: list[Any] = []
        self.opcodes: list[Any] = []
        self._opcode_index: dict[tuple[int, int], int] = {}

    def tensor(
        self,
        name: str,
        dtype: Any,
        shape: Sequence[int],
        *,
        shape_signature: Sequence[int] | None = None,
        data: np.ndarray | None = None,
        scale: float | Sequence[float] | None = None,
        zero_point: int | Sequence[int] | None = None,
        quantized_dimension: int = 0,
    ) -> int:
        """Add a tensor; `data` makes it a constant. Returns its index.

        `shape_signature` marks dynamic dims with -1 (with `shape` holding a concrete default).
        `scale`/`zero_point` (scalars for per-tensor, lists for per-channel along
        `quantized_dimension`) attach quantization parameters.
        """
        np_dtype = np.dtype(dtype)
        tensor = schema.TensorT()
        tensor.name = name
        tensor.type = _TENSOR_TYPES[np_dtype]
        tensor.shape = [int(d) for d in shape]
        if shape_signature is not None:
            if len(shape_signature) != len(shape):
                raise ValueError(f"{name}: shape_signature {shape_signature} vs shape {shape}")
            tensor.shapeSignature = [int(d) for d in shape_signature]
        tensor.hasRank = True
        if data is not None:
            array = np.ascontiguousarray(data, dtype=np_dtype)
            if list(array.shape) != tensor.shape:
                raise ValueError(f"{name}: data shape {array.shape} vs shape {tensor.shape}")
            tensor.buffer = len(self.buffers)
            self.buffers.append(_Buffer(array.astype(array.dtype.newbyteorder("<")).tobytes()))
        if scale is not None:
            scales = [float(s) for s in np.atleast_1d(np.asarray(scale, dtype=np.float64))]
            zps = np.atleast_1d(np.asarray(0 if zero_point is None else zero_point))
            if len(zps) == 1 and len(scales) > 1:
                zps = np.repeat(zps, len(scales))
            quant = schema.QuantizationParametersT()
            quant.scale = scales
            quant.zeroPoint = [int(z) for z in zps]
            quant.quantizedDimension = quantized_dimension
            tensor.quantization = quant
        self.tensors.append(tensor)
        return len(self.tensors) - 1

    def constant(
        self,
        name: str,
        data: np.ndarray,
        *,
        scale: float | Sequence[float] | None = None,
        zero_point: int | Sequence[int] | None = None,
        quantized_dimension: int = 0,
    ) -> int:
        """A constant tensor with the shape and dtype of `data`."""
        return self.tensor(
            name,
            data.dtype,
            data.shape,
            data=data,
            scale=scale,
            zero_point=zero_point,
            quantized_dimension=quantized_dimension,
        )

    def op(
        self,
        opcode: str,
        inputs: Sequence[int],
        outputs: Sequence[int],
        options: Any = None,
        *,
        version: int = 1,
    ) -> None:
        """Add a builtin operator, e.g. `op("FULLY_CONNECTED", [x, w, b], [y], options)`.

        `options` is the schema's options object (FullyConnectedOptionsT, SoftmaxOptionsT, ...);
        its BuiltinOptions union type is inferred from the class name.
        """
        code = int(getattr(schema.BuiltinOperator, opcode))
        key = (code, version)
        if key not in self._opcode_index:
            opcode_t = schema.OperatorCodeT()
            opcode_t.builtinCode = code
            # Codes above 127 live only in builtinCode; the deprecated byte field saturates.
            opcode_t.deprecatedBuiltinCode = min(code, 127)
            opcode_t.version = version
            self._opcode_index[key] = len(self.opcodes)
            self.opcodes.append(opcode_t)
        operator = schema.OperatorT()
        operator.opcodeIndex = self._opcode_index[key]
        operator.inputs = list(inputs)
        operator.outputs = list(outputs)
        if options is not None:
            union_name = type(options).__name__.removesuffix("T")
            operator.builtinOptionsType = getattr(schema.BuiltinOptions, union_name)
            operator.builtinOptions = options
        self.operators.append(operator)

    def to_bytes(
        self, inputs: Sequence[int], outputs: Sequence[int], signature_key: str = "serving_default"
    ) -> bytes:
        """Serialize with the given graph inputs/outputs and a signature naming them."""
        subgraph = schema.SubGraphT()
        subgraph.tensors = self.tensors
        subgraph.inputs = list(inputs)
        subgraph.outputs = list(outputs)
        subgraph.operators = self.operators
        subgraph.name = "main"

        def tensor_map(index: int) -> Any:
            entry = schema.TensorMapT()
            entry.name = self.tensors[index].name
            entry.tensorIndex = index
            return entry

        signature = schema.SignatureDefT()
        signature.signatureKey = signature_key
        signature.subgraphIndex = 0
        signature.inputs = [tensor_map(i) for i in inputs]
        signature.outputs = [tensor_map(i) for i in outputs]

        model = schema.ModelT()
        model.version = 3
        model.description = self.description
        model.operatorCodes = self.opcodes
        model.subgraphs = [subgraph]
        model.buffers = self.buffers
        model.signatureDefs = [signature]

        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())

    def save(self, path: str | Path, inputs: Sequence[int], outputs: Sequence[int]) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.to_bytes(inputs, outputs))
        return path


def _check_layers(weights: Sequence[np.ndarray], biases: Sequence[np.ndarray]) -> None:
    if not weights or len(weights) != len(biases):
        raise ValueError("need one bias per weight matrix, and at least one layer")
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        if w.ndim != 2 or b.shape != (w.shape[1],):
            raise ValueError(f"layer {i}: weights {w.shape} ([in, out]) and bias {b.shape}")
        if i and weights[i - 1].shape[1] != w.shape[0]:
            raise ValueError(
                f"layer {i}: takes {w.shape[0]} inputs, previous gives {weights[i - 1].shape[1]}"
            )


def _dims(batch_shape: int, width: int, dynamic_batch: bool) -> dict[str, Any]:
    return {
        "shape": [batch_shape, width],
        "shape_signature": [-1, width] if dynamic_batch else None,
    }


def _fc_options(relu: bool) -> Any:
    options = schema.FullyConnectedOptionsT()
    options.fusedActivationFunction = (
        schema.ActivationFunctionType.RELU if relu else schema.ActivationFunctionType.NONE
    )
    return options


def _softmax_options() -> Any:
    options = schema.SoftmaxOptionsT()
    options.beta = 1.0
    return options


def forward(
    x: np.ndarray, weights: Sequence[np.ndarray], biases: Sequence[np.ndarray], softmax: bool
) -> list[np.ndarray]:
    """Float reference of `mlp`: the activations after every layer (and the softmax)."""
    activations = []
    h = np.asarray(x, dtype=np.float64)
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        h = h @ np.asarray(w, dtype=np.float64) + np.asarray(b, dtype=np.float64)
        if i < len(weights) - 1:
            h = np.maximum(h, 0.0)
        activations.append(h)
    if softmax:
        e = np.exp(h - h.max(axis=-1, keepdims=True))
        activations.append(e / e.sum(axis=-1, keepdims=True))
    return activations


def mlp(
    path: str | Path,
    weights: Sequence[np.ndarray],
    biases: Sequence[np.ndarray],
    *,
    softmax: bool = True,
    dynamic_batch: bool = False,
) -> Path:
    """Float32 MLP: FULLY_CONNECTED layers, fused RELU between them, optional SOFTMAX.

    Input "input" [1, in]; output "probabilities" (softmax) or "logits" [1, out]. With
    `dynamic_batch` the shape signatures are [-1, n]: resize the input before allocating.
    """
    _check_layers(weights, biases)
    b = ModelBuilder("harness.modelgen.tflite.mlp")
    h = b.tensor("input", np.float32, **_dims(1, weights[0].shape[0], dynamic_batch))
    graph_input = h
    for i, (w, bias) in enumerate(zip(weights, biases, strict=True)):
        last = i == len(weights) - 1
        w_t = b.constant(f"dense_{i}/weights", np.asarray(w, np.float32).T)
        b_t = b.constant(f"dense_{i}/bias", np.asarray(bias, np.float32))
        name = "logits" if last else f"dense_{i}/relu"
        out = b.tensor(name, np.float32, **_dims(1, w.shape[1], dynamic_batch))
        b.op("FULLY_CONNECTED", [h, w_t, b_t], [out], _fc_options(relu=not last))
        h = out
    if softmax:
        out = b.tensor("probabilities", np.float32, **_dims(1, weights[-1].shape[1], dynamic_batch))
        b.op("SOFTMAX", [h], [out], _softmax_options())
        h = out
    return b.save(path, [graph_input], [h])


def affine_int8(lo: float, hi: float) -> tuple[float, int]:
    """Asymmetric int8 scale and zero-point covering [lo, hi] (widened to include 0)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = (hi - lo) / 255.0 or 1.0
    zero_point = int(np.clip(round(-128 - lo / scale), -128, 127))
    return scale, zero_point


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: Any = np.int8) -> np.ndarray:
    """Float to int8/uint8 the way TFLite does (round, add zero-point, saturate)."""
    info = np.iinfo(dtype)
    q = np.round(np.asarray(x, dtype=np.float64) / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def mlp_int8(
    path: str | Path,
    weights: Sequence[np.ndarray],
    biases: Sequence[np.ndarray],
    calibration: np.ndarray,
    *,
    softmax: bool = True,
    dynamic_batch: bool = False,
    io_dtype: str = "int8",
) -> Path:
    """Fully int8-quantized MLP, the layout TFLite's converter produces for full-integer models.

    Weights: per-tensor symmetric int8 (zero-point 0). Biases: int32 with scale
    in_scale * w_scale. Activations: asymmetric int8 with ranges from the float model run on
    `calibration` ([N, in] float). The int8 softmax output has scale 1/256, zero-point -128.

    `io_dtype="int8"`: input "input" and output "probabilities"/"logits" are int8 tensors carrying
    scale/zero-point. `io_dtype="uint8"`: they are uint8 (zero-point + 128), converted at the
    boundary with QUANTIZE ops, like the converter's `inference_input_type=tf.uint8`.
    """
    if io_dtype not in ("int8", "uint8"):
        raise ValueError(f"io_dtype must be 'int8' or 'uint8', not {io_dtype!r}")
    _check_layers(weights, biases)
    calibration = np.asarray(calibration, dtype=np.float64).reshape(-1, weights[0].shape[0])
    activations = forward(calibration, weights, biases, softmax=False)

    b = ModelBuilder("harness.modelgen.tflite.mlp_int8")
    in_scale, in_zp = affine_int8(calibration.min(), calibration.max())
    uint8_io = io_dtype == "uint8"
    width = weights[0].shape[0]
    out_name = "probabilities" if softmax else "logits"
    if uint8_io:
        graph_input = b.tensor(
            "input",
            np.uint8,
            scale=in_scale,
            zero_point=in_zp + 128,
            **_dims(1, width, dynamic_batch),
        )
        h = b.tensor(
            "input_int8",
            np.int8,
            scale=in_scale,
            zero_point=in_zp,
            **_dims(1, width, dynamic_batch),
        )
        b.op("QUANTIZE", [graph_input], [h], version=2)
    else:
        graph_input = h = b.tensor(
            "input", np.int8, scale=in_scale, zero_point=in_zp, **_dims(1, width, dynamic_batch)
        )

    h_scale = in_scale
    for i, (w, bias) in enumerate(zip(weights, biases, strict=True)):
        last = i == len(weights) - 1
        w = np.asarray(w, dtype=np.float64)
        w_scale = float(np.abs(w).max()) / 127.0 or 1.0
        w_q = quantize(w.T, w_scale, 0)
        bias_scale = h_scale * w_scale
        bias_q = np.round(np.asarray(bias, dtype=np.float64) / bias_scale).astype(np.int32)
        w_t = b.constant(f"dense_{i}/weights", w_q, scale=w_scale, zero_point=0)
        b_t = b.constant(f"dense_{i}/bias", bias_q, scale=bias_scale, zero_point=0)
        o_scale, o_zp = affine_int8(activations[i].min(), activations[i].max())
        if last:
            name = "logits_int8" if uint8_io and not softmax else "logits"
        else:
            name = f"dense_{i}/relu"
        out = b.tensor(
            name,
            np.int8,
            scale=o_scale,
            zero_point=o_zp,
            **_dims(1, w.shape[1], dynamic_batch),
        )
        b.op("FULLY_CONNECTED", [h, w_t, b_t], [out], _fc_options(relu=not last), version=4)
        h, h_scale = out, o_scale

    n_out = weights[-1].shape[1]
    out_scale, out_zp = b.tensors[h].quantization.scale[0], b.tensors[h].quantization.zeroPoint[0]
    if softmax:
        out_scale, out_zp = SOFTMAX_INT8_SCALE, SOFTMAX_INT8_ZERO_POINT
        out = b.tensor(
            out_name if not uint8_io else f"{out_name}_int8",
            np.int8,
            scale=out_scale,
            zero_point=out_zp,
            **_dims(1, n_out, dynamic_batch),
        )
        b.op("SOFTMAX", [h], [out], _softmax_options(), version=2)
        h = out
    if uint8_io:
        out = b.tensor(
            out_name,
            np.uint8,
            scale=out_scale,
            zero_point=out_zp + 128,
            **_dims(1, n_out, dynamic_batch),
        )
        b.op("QUANTIZE", [h], [out], version=2)
        h = out
    return b.save(path, [graph_input], [h])


def add_mul(path: str | Path, width: int = 4, *, dynamic_batch: bool = False) -> Path:
    """Two inputs, two outputs: "a", "b" float32 [1, width] -> "sum" = a + b, "product" = a * b.

    The outputs are listed product first, so output order differs from op order.
    """
    b = ModelBuilder("harness.modelgen.tflite.add_mul")
    dims = _dims(1, width, dynamic_batch)
    a = b.tensor("a", np.float32, **dims)
    c = b.tensor("b", np.float32, **dims)
    total = b.tensor("sum", np.float32, **dims)
    product = b.tensor("product", np.float32, **dims)
    b.op("ADD", [a, c], [total], schema.AddOptionsT())
    b.op("MUL", [a, c], [product], schema.MulOptionsT())
    return b.save(path, [a, c], [product, total])
