"""Write small .onnx test models with `onnx.helper`.

Each `name(path, ...) -> Path` writes one model exercising one feature real models have. All use
opset 17 and IR version 8, which onnxruntime 1.17+ loads. Inputs and outputs are named; the
docstrings give names, dtypes and shapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8

Dim = int | str | None  # fixed size, named dynamic dim, or unnamed dynamic dim


def _value(name: str, elem_type: int, shape: Sequence[Dim]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, list(shape))


def _const(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def _save(
    path: str | Path,
    nodes: Sequence[onnx.NodeProto],
    inputs: Sequence[onnx.ValueInfoProto],
    outputs: Sequence[onnx.ValueInfoProto],
    initializers: Sequence[onnx.TensorProto] = (),
    name: str = "harness_modelgen",
) -> Path:
    graph = helper.make_graph(list(nodes), name, list(inputs), list(outputs), list(initializers))
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="harness.modelgen",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _dense(rng: np.random.Generator, n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    w = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)
    b = (rng.standard_normal(n_out) * 0.1).astype(np.float32)
    return w, b


def mlp(
    path: str | Path,
    weights: Sequence[np.ndarray] | None = None,
    biases: Sequence[np.ndarray] | None = None,
    *,
    softmax: bool = True,
    dynamic_batch: bool = False,
    seed: int = 0,
) -> Path:
    """Float MLP (MatMul + Add, Relu between layers, optional Softmax).

    Weights are [in, out] (y = x @ W + b); without them, a seeded random 16 -> 8 -> 4 network.
    Input "input" float32 [1 or "batch", in]; output "probabilities" or "logits" [.., out].
    """
    if weights is None or biases is None:
        rng = _rng(seed)
        layers = [_dense(rng, 16, 8), _dense(rng, 8, 4)]
        weights, biases = [w for w, _ in layers], [b for _, b in layers]
    batch: Dim = "batch" if dynamic_batch else 1
    nodes, inits = [], []
    h = "input"
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        last = i == len(weights) - 1
        inits += [
            _const(f"W{i}", np.asarray(w, np.float32)),
            _const(f"B{i}", np.asarray(b, np.float32)),
        ]
        nodes.append(helper.make_node("MatMul", [h, f"W{i}"], [f"mm{i}"]))
        out = "logits" if last else f"pre{i}"
        nodes.append(helper.make_node("Add", [f"mm{i}", f"B{i}"], [out]))
        if not last:
            nodes.append(helper.make_node("Relu", [out], [f"h{i}"]))
            h = f"h{i}"
    n_in, n_out = weights[0].shape[0], weights[-1].shape[1]
    result = "logits"
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1))
        result = "probabilities"
    return _save(
        path,
        nodes,
        [_value("input", TensorProto.FLOAT, [batch, n_in])],
        [_value(result, TensorProto.FLOAT, [batch, n_out])],
        inits,
        "mlp",
    )


def dynamic_dims(path: str | Path, features: int = 8, classes: int = 4, seed: int = 0) -> Path:
    """Dynamic batch (unnamed dim) AND a dynamic named dim "sequence".

    Input "tokens" float32 [?, "sequence", features] -> mean over the sequence -> dense ->
    output "scores" float32 [?, classes]. The batch dim has neither a size nor a name.
    """
    w, b = _dense(_rng(seed), features, classes)
    nodes = [
        helper.make_node("ReduceMean", ["tokens"], ["pooled"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["pooled", "W"], ["mm"]),
        helper.make_node("Add", ["mm", "B"], ["scores"]),
    ]
    return _save(
        path,
        nodes,
        [_value("tokens", TensorProto.FLOAT, [None, "sequence", features])],
        [_value("scores", TensorProto.FLOAT, [None, classes])],
        [_const("W", w), _const("B", b)],
        "dynamic_dims",
    )


def multi_io(path: str | Path, width: int = 4) -> Path:
    """Several inputs and outputs of different dtypes.

    Inputs "a" float32 [1, width], "b" float32 [1, width], "mask" bool [1, width].
    Outputs "sum" float32 [1, width] = where(mask, a + b, 0), "product" float32 [1, width] = a * b,
    "argmax" int64 [1] = argmax of the sum.
    """
    nodes = [
        helper.make_node("Add", ["a", "b"], ["raw_sum"]),
        helper.make_node("Where", ["mask", "raw_sum", "zero"], ["sum"]),
        helper.make_node("Mul", ["a", "b"], ["product"]),
        helper.make_node("ArgMax", ["sum"], ["argmax"], axis=1, keepdims=0),
    ]
    return _save(
        path,
        nodes,
        [
            _value("a", TensorProto.FLOAT, [1, width]),
            _value("b", TensorProto.FLOAT, [1, width]),
            _value("mask", TensorProto.BOOL, [1, width]),
        ],
        [
            _value("sum", TensorProto.FLOAT, [1, width]),
            _value("product", TensorProto.FLOAT, [1, width]),
            _value("argmax", TensorProto.INT64, [1]),
        ],
        [_const("zero", np.zeros((), np.float32))],
        "multi_io",
    )


def uint8_image(path: str | Path, size: int = 8, classes: int = 5, seed: int = 0) -> Path:
    """Raw-pixel input: "pixels" uint8 [1, size, size, 3] (NHWC, no quantization parameters).

    The graph casts to float, divides by 255, averages each channel and classifies:
    output "probabilities" float32 [1, classes].
    """
    w, b = _dense(_rng(seed), 3, classes)
    nodes = [
        helper.make_node("Cast", ["pixels"], ["as_float"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["as_float", "inv255"], ["scaled"]),
        helper.make_node("ReduceMean", ["scaled"], ["rgb"], axes=[1, 2], keepdims=0),
        helper.make_node("MatMul", ["rgb", "W"], ["mm"]),
        helper.make_node("Add", ["mm", "B"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    return _save(
        path,
        nodes,
        [_value("pixels", TensorProto.UINT8, [1, size, size, 3])],
        [_value("probabilities", TensorProto.FLOAT, [1, classes])],
        [_const("inv255", np.array(1.0 / 255.0, np.float32)), _const("W", w), _const("B", b)],
        "uint8_image",
    )


def int64_scalar(path: str | Path, width: int = 4) -> Path:
    """A rank-0 int64 input: "x" float32 [1, width] and "steps" int64 [] (a step count).

    Output "y" float32 [1, width] = x * steps (steps cast to float inside the graph).
    """
    nodes = [
        helper.make_node("Cast", ["steps"], ["steps_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x", "steps_f"], ["y"]),
    ]
    return _save(
        path,
        nodes,
        [_value("x", TensorProto.FLOAT, [1, width]), _value("steps", TensorProto.INT64, [])],
        [_value("y", TensorProto.FLOAT, [1, width])],
        name="int64_scalar",
    )


def state(path: str | Path, features: int = 4, hidden: int = 8, seed: int = 0) -> Path:
    """A recurrent step with a state input, like streaming audio/RNN models.

    Inputs "x" float32 [1, features] and "h" float32 [1, hidden] (the previous state; zeros at
    the start). Outputs "y" float32 [1, 2] and "h_out" float32 [1, hidden] = tanh(x@U + h@V + b),
    to be fed back as "h" on the next call.
    """
    rng = _rng(seed)
    u, b = _dense(rng, features, hidden)
    v, _ = _dense(rng, hidden, hidden)
    o, ob = _dense(rng, hidden, 2)
    nodes = [
        helper.make_node("MatMul", ["x", "U"], ["xu"]),
        helper.make_node("MatMul", ["h", "V"], ["hv"]),
        helper.make_node("Add", ["xu", "hv"], ["pre0"]),
        helper.make_node("Add", ["pre0", "B"], ["pre"]),
        helper.make_node("Tanh", ["pre"], ["h_out"]),
        helper.make_node("MatMul", ["h_out", "O"], ["yo"]),
        helper.make_node("Add", ["yo", "OB"], ["y"]),
    ]
    return _save(
        path,
        nodes,
        [
            _value("x", TensorProto.FLOAT, [1, features]),
            _value("h", TensorProto.FLOAT, [1, hidden]),
        ],
        [_value("y", TensorProto.FLOAT, [1, 2]), _value("h_out", TensorProto.FLOAT, [1, hidden])],
        [_const("U", u), _const("V", v), _const("B", b), _const("O", o), _const("OB", ob)],
        "state",
    )


def qdq(path: str | Path, n_in: int = 16, n_out: int = 4, seed: int = 0) -> Path:
    """QDQ-quantized dense layer with float I/O (what onnxruntime's static quantizer writes).

    "input" float32 [1, n_in] -> QuantizeLinear/DequantizeLinear (uint8 activations) -> MatMul
    with int8 weights stored quantized and dequantized in-graph -> Add bias -> Relu ->
    QuantizeLinear/DequantizeLinear -> output "output" float32 [1, n_out].
    """
    w, b = _dense(_rng(seed), n_in, n_out)
    w_scale = np.float32(np.abs(w).max() / 127.0)
    w_q = np.clip(np.round(w / w_scale), -127, 127).astype(np.int8)
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "x_scale", "x_zp"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"]),
        helper.make_node("DequantizeLinear", ["W_q", "w_scale", "w_zp"], ["W_dq"]),
        helper.make_node("MatMul", ["x_dq", "W_dq"], ["mm"]),
        helper.make_node("Add", ["mm", "B"], ["pre"]),
        helper.make_node("Relu", ["pre"], ["act"]),
        helper.make_node("QuantizeLinear", ["act", "y_scale", "y_zp"], ["y_q"]),
        helper.make_node("DequantizeLinear", ["y_q", "y_scale", "y_zp"], ["output"]),
    ]
    inits = [
        _const("x_scale", np.array(2.0 / 255.0, np.float32)),  # inputs in [-1, 1]
        _const("x_zp", np.array(128, np.uint8)),
        _const("W_q", w_q),
        _const("w_scale", np.array(w_scale, np.float32)),
        _const("w_zp", np.array(0, np.int8)),
        _const("B", b),
        _const("y_scale", np.array(4.0 / 255.0, np.float32)),  # outputs in [0, 4]
        _const("y_zp", np.array(0, np.uint8)),
    ]
    return _save(
        path,
        nodes,
        [_value("input", TensorProto.FLOAT, [1, n_in])],
        [_value("output", TensorProto.FLOAT, [1, n_out])],
        inits,
        "qdq",
    )


def slow(path: str | Path, iterations: int = 30_000, size: int = 512) -> Path:
    """Very slow per inference yet small in memory (a few MB) and on disk: for timeout tests.

    Input "x" float32 [1, 8]; a Loop of `iterations` steps computes S = tanh(S @ W) on a
    [size, size] matrix seeded from x (so nothing constant-folds); output "y" float32 [1, 1].
    Each step costs 2 * size**3 flops (3.4 ms at size 512 on one thread of a 2-core x86-64 VM,
    ~75 GFLOP/s), so the defaults take ~100 s per inference on one thread there, and well over
    30 s with a few threads or a faster core. The time is linear in `iterations`: pass a small
    count for a quick run.
    """
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["S_in", "W"], ["prod"]),
            helper.make_node("Tanh", ["prod"], ["S_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "slow_body",
        [
            _value("i", TensorProto.INT64, []),
            _value("cond_in", TensorProto.BOOL, []),
            _value("S_in", TensorProto.FLOAT, [size, size]),
        ],
        [
            _value("cond_out", TensorProto.BOOL, []),
            _value("S_out", TensorProto.FLOAT, [size, size]),
        ],
    )
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["x_mean"], keepdims=0),
        helper.make_node("Expand", ["x_mean", "square"], ["S0"]),
        helper.make_node(
            "ConstantOfShape",
            ["square"],
            ["W"],
            value=_const("w", np.array([1.0 / size], np.float32)),
        ),
        helper.make_node("Loop", ["trip_count", "keep_going", "S0"], ["S_final"], body=body),
        helper.make_node("ReduceMean", ["S_final"], ["y"], keepdims=1),
    ]
    inits = [
        _const("square", np.array([size, size], np.int64)),
        _const("trip_count", np.array(iterations, np.int64)),
        _const("keep_going", np.array(True)),
    ]
    return _save(
        path,
        nodes,
        [_value("x", TensorProto.FLOAT, [1, 8])],
        [_value("y", TensorProto.FLOAT, [1, 1])],
        inits,
        "slow",
    )


def huge_alloc(path: str | Path, shape: Sequence[int] = (1024, 1024, 256)) -> Path:
    """A tiny file that allocates a huge tensor at run time: for out-of-memory tests.

    Input "x" float32 [1, 1] is expanded to `shape` (default [1024, 1024, 256] float32 = 1 GiB,
    every byte written), then summed: output "y" float32 [1, 1]. Memory is linear in the shape's
    product; pass a small shape for a quick run.
    """
    nodes = [
        helper.make_node("Expand", ["x", "shape"], ["big"]),
        helper.make_node("ReduceSum", ["big", "all_axes"], ["total"], keepdims=0),
        helper.make_node("Reshape", ["total", "one_by_one"], ["y"]),
    ]
    inits = [
        _const("shape", np.array(list(shape), np.int64)),
        _const("all_axes", np.arange(len(shape), dtype=np.int64)),
        _const("one_by_one", np.array([1, 1], np.int64)),
    ]
    return _save(
        path,
        nodes,
        [_value("x", TensorProto.FLOAT, [1, 1])],
        [_value("y", TensorProto.FLOAT, [1, 1])],
        inits,
        "huge_alloc",
    )


def streaming_vad(
    path: str | Path,
    batch: tuple[Dim, Dim] = (None, None),
    width: int = 8,
    hidden: int = 4,
    seed: int = 0,
) -> Path:
    """A voice-activity step shaped like silero-vad's: "input" float32 [batch[0], width] (a
    chunk), "state" float32 [2, batch[1], hidden] (what the stream held before it) and "sr"
    int64 [] (the sample rate). `batch` names the two batch dims: None leaves them unnamed (as
    silero_vad.onnx does), "batch" twice ties them (as silero_vad_16k_op15.onnx does).

    Outputs "output" float32 [batch, 1] = sigmoid(h @ O + b), the speech probability, and
    "stateN" float32 [2, batch, hidden], the next state, where h = tanh(input @ U + state[0] @ V)
    * sr / 16000 (a wrong sample rate changes the answer, as it does in the real model).
    """
    rng = _rng(seed)
    u, _ = _dense(rng, width, hidden)
    v, _ = _dense(rng, hidden, hidden)
    o, ob = _dense(rng, hidden, 1)
    nodes = [
        helper.make_node("Gather", ["state", "I0"], ["s0"], axis=0),
        helper.make_node("Gather", ["state", "I1"], ["s1"], axis=0),
        helper.make_node("MatMul", ["input", "U"], ["xu"]),
        helper.make_node("MatMul", ["s0", "V"], ["sv"]),
        helper.make_node("Add", ["xu", "sv"], ["pre"]),
        helper.make_node("Tanh", ["pre"], ["h0"]),
        helper.make_node("Cast", ["sr"], ["sr_f"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["sr_f", "RATE"], ["scale"]),
        helper.make_node("Mul", ["h0", "scale"], ["h"]),
        helper.make_node("MatMul", ["h", "O"], ["ho"]),
        helper.make_node("Add", ["ho", "OB"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["output"]),
        helper.make_node("Unsqueeze", ["h", "AXIS0"], ["h_u"]),
        helper.make_node("Unsqueeze", ["s1", "AXIS0"], ["s1_u"]),
        helper.make_node("Concat", ["h_u", "s1_u"], ["stateN"], axis=0),
    ]
    first, second = batch
    return _save(
        path,
        nodes,
        [
            _value("input", TensorProto.FLOAT, [first, width]),
            _value("state", TensorProto.FLOAT, [2, second, hidden]),
            _value("sr", TensorProto.INT64, []),
        ],
        [
            _value("output", TensorProto.FLOAT, [first, 1]),
            _value("stateN", TensorProto.FLOAT, [2, first, hidden]),
        ],
        [
            _const("U", u),
            _const("V", v),
            _const("O", o),
            _const("OB", ob),
            _const("I0", np.array(0, np.int64)),
            _const("I1", np.array(1, np.int64)),
            _const("RATE", np.array(16000.0, np.float32)),
            _const("AXIS0", np.array([0])),
        ],  # fmt: skip
        "streaming_vad",
    )
