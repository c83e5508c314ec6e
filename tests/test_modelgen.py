"""harness.modelgen writes models that load in their runtimes and compute what they claim."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("flatbuffers")
ort = pytest.importorskip("onnxruntime")
litert = pytest.importorskip("ai_edge_litert.interpreter")

from harness.modelgen import onnx as gen_onnx  # noqa: E402
from harness.modelgen import tflite as gen_tflite  # noqa: E402

# ---------------------------------------------------------------- helpers


def session(path: Path) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def io_signature(sess: Any) -> tuple[list[tuple[str, str, list[Any]]], ...]:
    return tuple(
        [(v.name, v.type, list(v.shape)) for v in values]
        for values in (sess.get_inputs(), sess.get_outputs())
    )


def interpreter(path: Path, batch: int | None = None) -> Any:
    interp = litert.Interpreter(model_path=str(path))
    if batch is not None:
        for detail in interp.get_input_details():
            shape = list(detail["shape"])
            interp.resize_tensor_input(detail["index"], [batch, *shape[1:]])
    interp.allocate_tensors()
    return interp


def invoke(interp: Any, feeds: list[np.ndarray]) -> dict[str, np.ndarray]:
    for detail, value in zip(interp.get_input_details(), feeds, strict=True):
        interp.set_tensor(detail["index"], value)
    interp.invoke()
    return {d["name"]: interp.get_tensor(d["index"]) for d in interp.get_output_details()}


def dequantize(values: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    result: np.ndarray = (values.astype(np.float64) - zero_point) * scale
    return result


def random_mlp(seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    weights = [rng.normal(0, 0.3, shape).astype(np.float32) for shape in ((6, 5), (5, 3))]
    biases = [rng.normal(0, 0.1, size).astype(np.float32) for size in (5, 3)]
    return weights, biases


@pytest.fixture(scope="module")
def digits_mlp() -> dict[str, Any]:
    """A quickly trained 64 -> 32 -> 10 digits MLP, its data and its float predictions."""
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    digits = sklearn_datasets.load_digits()
    x = (digits.images.reshape(len(digits.images), -1) / 16.0).astype(np.float32)
    y = digits.target
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    train, test = order[:1300], order[1300:]
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=150, random_state=0)
    # One BLAS thread: parallel test workers would otherwise oversubscribe the cores (9 s vs 1 s).
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x[train], y[train])
    return {
        "weights": [w.astype(np.float32) for w in clf.coefs_],
        "biases": [b.astype(np.float32) for b in clf.intercepts_],
        "x_train": x[train],
        "x_test": x[test],
        "y_test": y[test],
        "proba": clf.predict_proba(x[test]),
    }


# ---------------------------------------------------------------- TFLite


@pytest.mark.parametrize("dynamic_batch", [False, True])
def test_tflite_mlp_matches_numpy(tmp_path: Path, dynamic_batch: bool) -> None:
    weights, biases = random_mlp()
    path = gen_tflite.mlp(tmp_path / "mlp.tflite", weights, biases, dynamic_batch=dynamic_batch)
    x = np.random.default_rng(1).random((3, 6)).astype(np.float32)
    expected = gen_tflite.forward(x, weights, biases, softmax=True)[-1]

    interp = interpreter(path)
    (inp,) = interp.get_input_details()
    assert inp["name"] == "input" and inp["dtype"] == np.float32
    assert list(inp["shape_signature"]) == ([-1, 6] if dynamic_batch else [1, 6])
    assert [d["name"] for d in interp.get_output_details()] == ["probabilities"]
    out = invoke(interp, [x[:1]])["probabilities"]
    np.testing.assert_allclose(out, expected[:1], rtol=1e-5, atol=1e-6)

    no_softmax = gen_tflite.mlp(tmp_path / "logits.tflite", weights, biases, softmax=False)
    logits = invoke(interpreter(no_softmax), [x[:1]])["logits"]
    np.testing.assert_allclose(
        logits, gen_tflite.forward(x[:1], weights, biases, softmax=False)[-1], rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("kind", ["float", "int8"])
def test_tflite_dynamic_batch_resizes(tmp_path: Path, batch: int, kind: str) -> None:
    weights, biases = random_mlp()
    x = np.random.default_rng(2).random((batch, 6)).astype(np.float32)
    if kind == "float":
        path = gen_tflite.mlp(tmp_path / "m.tflite", weights, biases, dynamic_batch=True)
    else:
        calibration = np.random.default_rng(3).random((64, 6))
        path = gen_tflite.mlp_int8(
            tmp_path / "m.tflite", weights, biases, calibration, dynamic_batch=True
        )
    interp = interpreter(path, batch=batch)
    (inp,) = interp.get_input_details()
    assert list(inp["shape"]) == [batch, 6] and list(inp["shape_signature"]) == [-1, 6]
    feed = x if kind == "float" else gen_tflite.quantize(x, *inp["quantization"])
    out = invoke(interp, [feed])["probabilities"]
    assert out.shape == (batch, 3)
    (out_detail,) = interp.get_output_details()
    probabilities = out if kind == "float" else dequantize(out, out_detail)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=0.02)


@pytest.mark.parametrize("io_dtype", ["int8", "uint8"])
def test_tflite_int8_agrees_with_float_on_digits(
    tmp_path: Path, digits_mlp: dict[str, Any], io_dtype: str
) -> None:
    m = digits_mlp
    float_path = gen_tflite.mlp(tmp_path / "f.tflite", m["weights"], m["biases"])
    int8_path = gen_tflite.mlp_int8(
        tmp_path / "q.tflite", m["weights"], m["biases"], m["x_train"], io_dtype=io_dtype
    )
    n = len(m["y_test"])
    float_interp = interpreter(float_path)
    int8_interp = interpreter(int8_path)
    (inp,) = int8_interp.get_input_details()
    (out,) = int8_interp.get_output_details()
    dtype = np.dtype(io_dtype)
    assert inp["dtype"] == dtype and out["dtype"] == dtype
    assert inp["quantization"][0] > 0
    # TFLite's int8 softmax output: scale 1/256, zero-point -128 (uint8: 0).
    assert out["quantization"] == pytest.approx((1 / 256, -128 if io_dtype == "int8" else 0))

    in_scale, in_zero_point = inp["quantization"]
    float_out = np.empty((n, 10))
    int8_out = np.empty((n, 10))
    for i, sample in enumerate(m["x_test"]):
        float_out[i] = invoke(float_interp, [sample[None]])["probabilities"][0]
        q = gen_tflite.quantize(sample[None], in_scale, in_zero_point, dtype)
        int8_out[i] = dequantize(invoke(int8_interp, [q])["probabilities"][0], out)

    np.testing.assert_allclose(float_out, m["proba"], atol=1e-5)
    assert np.abs(int8_out - float_out).max() < 0.1
    assert (int8_out.argmax(1) == float_out.argmax(1)).mean() >= 0.97
    float_accuracy = (float_out.argmax(1) == m["y_test"]).mean()
    int8_accuracy = (int8_out.argmax(1) == m["y_test"]).mean()
    assert float_accuracy > 0.9
    assert int8_accuracy >= float_accuracy - 0.02
    assert int8_path.stat().st_size < float_path.stat().st_size / 2


def test_tflite_int8_logits_without_softmax(tmp_path: Path) -> None:
    weights, biases = random_mlp()
    calibration = np.random.default_rng(4).random((256, 6))
    path = gen_tflite.mlp_int8(tmp_path / "q.tflite", weights, biases, calibration, softmax=False)
    interp = interpreter(path)
    (inp,) = interp.get_input_details()
    (out,) = interp.get_output_details()
    assert out["name"] == "logits" and out["dtype"] == np.int8
    x = calibration[:1].astype(np.float32)
    logits = dequantize(
        invoke(interp, [gen_tflite.quantize(x, *inp["quantization"])])["logits"], out
    )
    expected = gen_tflite.forward(x, weights, biases, softmax=False)[-1]
    assert np.abs(logits - expected).max() < 4 * out["quantization"][0] + 0.05


def test_tflite_two_inputs_two_outputs(tmp_path: Path) -> None:
    path = gen_tflite.add_mul(tmp_path / "am.tflite", width=4)
    interp = interpreter(path)
    assert [d["name"] for d in interp.get_input_details()] == ["a", "b"]
    assert [d["name"] for d in interp.get_output_details()] == ["product", "sum"]
    a = np.arange(4, dtype=np.float32)[None]
    b = np.full((1, 4), 2.0, np.float32)
    outputs = invoke(interp, [a, b])
    np.testing.assert_array_equal(outputs["sum"], a + b)
    np.testing.assert_array_equal(outputs["product"], a * b)
    assert interp.get_signature_list() == {
        "serving_default": {"inputs": ["a", "b"], "outputs": ["product", "sum"]}
    }


def test_tflite_mlp_rejects_mismatched_layers(tmp_path: Path) -> None:
    weights, biases = random_mlp()
    with pytest.raises(ValueError, match="layer 1"):
        gen_tflite.mlp(tmp_path / "bad.tflite", [weights[0], weights[0]], biases)


# ---------------------------------------------------------------- ONNX


def test_onnx_mlp(tmp_path: Path) -> None:
    sess = session(gen_onnx.mlp(tmp_path / "mlp.onnx", dynamic_batch=True))
    assert io_signature(sess) == (
        [("input", "tensor(float)", ["batch", 16])],
        [("probabilities", "tensor(float)", ["batch", 4])],
    )
    for batch in (1, 3):
        (out,) = sess.run(None, {"input": np.ones((batch, 16), np.float32)})
        assert out.shape == (batch, 4)
        np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)

    weights, biases = random_mlp()
    x = np.random.default_rng(5).random((1, 6)).astype(np.float32)
    sess = session(gen_onnx.mlp(tmp_path / "given.onnx", weights, biases, softmax=False))
    np.testing.assert_allclose(
        sess.run(["logits"], {"input": x})[0],
        gen_tflite.forward(x, weights, biases, softmax=False)[-1],
        rtol=1e-5,
        atol=1e-6,
    )


def test_onnx_dynamic_batch_and_named_dim(tmp_path: Path) -> None:
    sess = session(gen_onnx.dynamic_dims(tmp_path / "dd.onnx"))
    assert io_signature(sess) == (
        [("tokens", "tensor(float)", [None, "sequence", 8])],
        [("scores", "tensor(float)", [None, 4])],
    )
    for batch, sequence in ((1, 1), (3, 7)):
        (out,) = sess.run(None, {"tokens": np.ones((batch, sequence, 8), np.float32)})
        assert out.shape == (batch, 4)


def test_onnx_multi_io(tmp_path: Path) -> None:
    sess = session(gen_onnx.multi_io(tmp_path / "mi.onnx"))
    assert io_signature(sess) == (
        [
            ("a", "tensor(float)", [1, 4]),
            ("b", "tensor(float)", [1, 4]),
            ("mask", "tensor(bool)", [1, 4]),
        ],
        [
            ("sum", "tensor(float)", [1, 4]),
            ("product", "tensor(float)", [1, 4]),
            ("argmax", "tensor(int64)", [1]),
        ],
    )
    a = np.array([[1, 2, 3, 4]], np.float32)
    b = np.array([[1, 1, 1, 1]], np.float32)
    mask = np.array([[True, True, True, False]])
    total, product, argmax = sess.run(None, {"a": a, "b": b, "mask": mask})
    np.testing.assert_array_equal(total, [[2, 3, 4, 0]])
    np.testing.assert_array_equal(product, a)
    assert argmax.tolist() == [2]


def test_onnx_uint8_image(tmp_path: Path) -> None:
    sess = session(gen_onnx.uint8_image(tmp_path / "img.onnx"))
    assert io_signature(sess) == (
        [("pixels", "tensor(uint8)", [1, 8, 8, 3])],
        [("probabilities", "tensor(float)", [1, 5])],
    )
    dark, bright = (
        sess.run(None, {"pixels": np.full((1, 8, 8, 3), value, np.uint8)})[0] for value in (0, 255)
    )
    np.testing.assert_allclose(dark.sum(), 1.0, rtol=1e-5)
    assert not np.allclose(dark, bright)


def test_onnx_int64_scalar(tmp_path: Path) -> None:
    sess = session(gen_onnx.int64_scalar(tmp_path / "steps.onnx"))
    assert io_signature(sess)[0] == [
        ("x", "tensor(float)", [1, 4]),
        ("steps", "tensor(int64)", []),
    ]
    x = np.array([[1, 2, 3, 4]], np.float32)
    (y,) = sess.run(None, {"x": x, "steps": np.array(3, np.int64)})
    np.testing.assert_array_equal(y, 3 * x)


def test_onnx_state_feeds_back(tmp_path: Path) -> None:
    sess = session(gen_onnx.state(tmp_path / "state.onnx"))
    assert io_signature(sess) == (
        [("x", "tensor(float)", [1, 4]), ("h", "tensor(float)", [1, 8])],
        [("y", "tensor(float)", [1, 2]), ("h_out", "tensor(float)", [1, 8])],
    )
    x = np.ones((1, 4), np.float32)
    h = np.zeros((1, 8), np.float32)
    outputs = []
    for _ in range(3):
        y, h = sess.run(None, {"x": x, "h": h})
        outputs.append(y)
    assert np.abs(h).max() <= 1.0  # tanh
    assert not np.allclose(outputs[0], outputs[1])  # the state matters


def test_onnx_qdq_close_to_float(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    path = gen_onnx.qdq(tmp_path / "qdq.onnx")
    model = onnx.load(str(path))
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("QuantizeLinear") == 2 and ops.count("DequantizeLinear") == 3
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    w = init["W_q"].astype(np.float64) * init["w_scale"]
    sess = session(path)
    assert io_signature(sess) == (
        [("input", "tensor(float)", [1, 16])],
        [("output", "tensor(float)", [1, 4])],
    )
    x = np.linspace(-1, 1, 16, dtype=np.float32)[None]
    (out,) = sess.run(None, {"input": x})
    expected = np.clip(np.maximum(x @ w + init["B"], 0), 0, 4)
    assert np.abs(out - expected).max() < 0.1


def test_onnx_slow_model_is_slow(tmp_path: Path) -> None:
    """One run with 1/300 of the default loop count; extrapolated, the default takes > 30 s."""
    iterations = 100
    path = gen_onnx.slow(tmp_path / "slow.onnx", iterations=iterations)
    assert path.stat().st_size < 10_000
    sess = session(path)
    feeds = {"x": np.ones((1, 8), np.float32)}
    start = time.perf_counter()
    (y,) = sess.run(None, feeds)
    elapsed = time.perf_counter() - start
    assert y.shape == (1, 1) and np.isfinite(y).all()
    default_iterations = 30_000
    assert elapsed / iterations * default_iterations > 30, f"{elapsed:.3f} s for {iterations}"


def test_onnx_huge_alloc_small_shape(tmp_path: Path) -> None:
    default = gen_onnx.huge_alloc(tmp_path / "huge.onnx")
    assert default.stat().st_size < 2_000  # a tiny file that would allocate 1 GiB at run time
    sess = session(gen_onnx.huge_alloc(tmp_path / "small.onnx", shape=(8, 16, 32)))
    (y,) = sess.run(None, {"x": np.full((1, 1), 0.5, np.float32)})
    np.testing.assert_allclose(y, [[0.5 * 8 * 16 * 32]])
