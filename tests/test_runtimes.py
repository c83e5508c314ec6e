"""Real models through the real worker (a child process) on the host: the awkward features real
models have — dynamic dims, several inputs and outputs, int8/uint8 with scale and zero-point,
int64 scalars, state inputs — either work or are rejected with a message saying what to set."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.backends.base import WorkerClient, WorkerError
from harness.backends.local import LocalBackend
from harness.devices import load_profiles
from harness.modelgen import onnx as onnx_models
from harness.modelgen import tflite as tflite_models

TIMEOUT = 60.0


@pytest.fixture
def worker() -> Iterator[WorkerClient]:
    profile = load_profiles()["host"]
    client = WorkerClient(LocalBackend().start(profile, [], 1), "host")
    client.request("hello", TIMEOUT, formats=["onnx", "tflite"])
    yield client
    client.close()


def load(worker: WorkerClient, path: Path, **arguments: Any) -> dict[str, Any]:
    return worker.request("load", TIMEOUT, model_id="m", path=str(path), threads=1, **arguments)


def weights(seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return (
        [
            rng.standard_normal((6, 5)).astype(np.float32),
            rng.standard_normal((5, 3)).astype(np.float32),
        ],
        [rng.standard_normal(5).astype(np.float32), rng.standard_normal(3).astype(np.float32)],
    )


def test_onnx_dynamic_batch_and_named_dim_resolved_from_dataset(
    worker: WorkerClient, tmp_path: Path
) -> None:
    model = onnx_models.dynamic_dims(tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((7, 5, 8)).astype(np.float32)
    np.savez(tmp_path / "d.npz", X=x, y=np.zeros(7, np.int64))
    info = load(worker, model, dataset=str(tmp_path / "d.npz"))
    assert info["input_shapes"] == {"tokens": [1, 5, 8]}
    assert info["inputs"][0]["shape"][1] == "sequence"
    result = worker.request("evaluate", TIMEOUT, model_id="m", task="classification")
    assert result["count"] == 7 and len(result["top1"]) == 7


def test_dynamic_dims_without_dataset_need_input_shapes(
    worker: WorkerClient, tmp_path: Path
) -> None:
    model = onnx_models.dynamic_dims(tmp_path / "m.onnx")
    with pytest.raises(
        WorkerError,
        match=r"input 'tokens' has dynamic shape \[\?, \?, 8\] and "
        r"nothing says its size: set input_shapes = \{ tokens = \[1, 1, 8\] \} \(with the "
        r"sizes your data has in place of the 1s at dims 0, 1",
    ):
        load(worker, model, config_file="harness.toml")
    info = load(worker, model, input_shapes={"tokens": [2, 3, 8]})
    assert info["input_shapes"] == {"tokens": [2, 3, 8]}
    assert info["output_shape"] == [2, 4]
    assert len(worker.request("bench", TIMEOUT, model_id="m", samples=5)["samples_ns"]) == 5


def test_input_shapes_that_contradict_the_model_are_rejected(
    worker: WorkerClient, tmp_path: Path
) -> None:
    model = onnx_models.dynamic_dims(tmp_path / "m.onnx")
    with pytest.raises(WorkerError, match=r"input_shapes.tokens = \[1, 3, 9\] does not fit"):
        load(worker, model, input_shapes={"tokens": [1, 3, 9]})


def test_several_inputs_and_outputs_from_named_arrays(worker: WorkerClient, tmp_path: Path) -> None:
    model = onnx_models.multi_io(tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "d.npz",
        X_a=rng.random((3, 4), np.float32),
        X_b=rng.random((3, 4), np.float32),
        X_mask=np.ones((3, 4), bool),
        y=np.zeros(3),
    )
    info = load(worker, model, dataset=str(tmp_path / "d.npz"), output="product")
    assert [o["name"] for o in info["outputs"]] == ["sum", "product", "argmax"]
    assert info["output"] == "product"
    out = worker.request(
        "run",
        TIMEOUT,
        model_id="m",
        inputs={
            "a": np.full((1, 4), 2, np.float32),
            "b": np.full((1, 4), 3, np.float32),
            "mask": np.ones((1, 4), bool),
        },
    )["outputs"]
    np.testing.assert_allclose(out["product"], 6.0)
    np.testing.assert_allclose(out["sum"], 5.0)
    assert out["argmax"].dtype == np.int64


def test_unknown_output_lists_the_real_ones(worker: WorkerClient, tmp_path: Path) -> None:
    model = onnx_models.multi_io(tmp_path / "m.onnx")
    with pytest.raises(
        WorkerError,
        match=r"output = 'scores' in harness.toml names no model "
        r"output; the model's outputs are \['sum', 'product', 'argmax'\]",
    ):
        load(
            worker,
            model,
            output="scores",
            config_file="harness.toml",
            input_shapes={},
            input_values={"a": 0, "b": 0, "mask": 1},
        )


def test_array_naming_no_input_is_rejected(worker: WorkerClient, tmp_path: Path) -> None:
    model = onnx_models.multi_io(tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", X_a=np.zeros((2, 4), np.float32), X_c=np.zeros((2, 4)))
    with pytest.raises(
        WorkerError,
        match=r"arrays \['X_c'\] name no model input; the model's "
        r"inputs are \['a', 'b', 'mask'\]",
    ):
        load(worker, model, dataset=str(tmp_path / "d.npz"))


def test_uint8_pixels_from_integer_and_float_data(worker: WorkerClient, tmp_path: Path) -> None:
    model = onnx_models.uint8_image(tmp_path / "m.onnx")
    pixels = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3))
    np.savez(tmp_path / "ints.npz", X=pixels.astype(np.int64), y=np.zeros(4, np.int64))
    np.savez(tmp_path / "floats.npz", X=pixels.astype(np.float32), y=np.zeros(4, np.int64))
    first = load(worker, model, dataset=str(tmp_path / "ints.npz"))
    assert first["inputs"][0]["dtype"] == "uint8"
    a = worker.request("evaluate", TIMEOUT, model_id="m", task="classification")["top1"]
    load(worker, model, dataset=str(tmp_path / "floats.npz"))
    b = worker.request("evaluate", TIMEOUT, model_id="m", task="classification")["top1"]
    assert a == b


def test_uint8_input_refuses_non_integer_floats(worker: WorkerClient, tmp_path: Path) -> None:
    model = onnx_models.uint8_image(tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", X=np.full((2, 8, 8, 3), 0.5, np.float32), y=np.zeros(2))
    with pytest.raises(
        WorkerError,
        match=r"array X \[2, 8, 8, 3\] is float32 but model input "
        r"'pixels' is uint8 without quantization parameters: store integer values "
        r"in \[0, 255\]",
    ):
        load(worker, model, dataset=str(tmp_path / "d.npz"))


def test_int64_scalar_needs_a_value_then_works(worker: WorkerClient, tmp_path: Path) -> None:
    model = onnx_models.int64_scalar(tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", X=np.ones((3, 1, 4), np.float32), y=np.zeros((3, 4), np.float32))
    with pytest.raises(
        WorkerError,
        match=r"model input 'steps' is an int64 scalar \[\] .* add input_values = "
        r"\{ steps = <its value> \} .* \(or array X_steps to .*d.npz\)",
    ):
        load(worker, model, dataset=str(tmp_path / "d.npz"))
    load(worker, model, dataset=str(tmp_path / "d.npz"), input_values={"steps": 3})
    values = worker.request("evaluate", TIMEOUT, model_id="m", task="regression")["values"]
    np.testing.assert_allclose(values, 3.0)


def test_state_input_filled_from_input_values(worker: WorkerClient, tmp_path: Path) -> None:
    model = onnx_models.state(tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", X_x=np.ones((2, 1, 4), np.float32), y=np.zeros(2, np.int64))
    info = load(worker, model, dataset=str(tmp_path / "d.npz"), input_values={"h": 0.0})
    assert info["input_shapes"]["h"] == [1, 8]


def test_qdq_onnx_model_runs(worker: WorkerClient, tmp_path: Path) -> None:
    model = onnx_models.qdq(tmp_path / "m.onnx")
    np.savez(
        tmp_path / "d.npz",
        X=np.random.default_rng(0).random((5, 16), np.float32),
        y=np.zeros(5, np.int64),
    )
    load(worker, model, dataset=str(tmp_path / "d.npz"))
    assert worker.request("evaluate", TIMEOUT, model_id="m", task="classification")["count"] == 5


@pytest.mark.parametrize("dynamic", [False, True])
def test_tflite_float_and_int8_agree(worker: WorkerClient, tmp_path: Path, dynamic: bool) -> None:
    w, b = weights()
    x = np.random.default_rng(1).standard_normal((50, 6)).astype(np.float32)
    np.savez(tmp_path / "d.npz", X=x, y=np.zeros(50, np.int64))
    tflite_models.mlp(tmp_path / "f.tflite", w, b, dynamic_batch=dynamic)
    tflite_models.mlp_int8(tmp_path / "q.tflite", w, b, x, dynamic_batch=dynamic)
    load(worker, tmp_path / "f.tflite", dataset=str(tmp_path / "d.npz"))
    floats = worker.request("evaluate", TIMEOUT, model_id="m", task="regression")["values"]
    info = load(worker, tmp_path / "q.tflite", dataset=str(tmp_path / "d.npz"))
    assert info["inputs"][0]["dtype"] == "int8" and info["inputs"][0]["quantization"]["scale"] > 0
    quantized = worker.request("evaluate", TIMEOUT, model_id="m", task="regression")["values"]
    # The int8 scores come back dequantized: comparable with the float model's.
    assert np.abs(quantized - floats).max() < 0.1
    assert (quantized.argmax(1) == floats.argmax(1)).mean() > 0.9


def test_tflite_uint8_io(worker: WorkerClient, tmp_path: Path) -> None:
    w, b = weights()
    x = np.random.default_rng(1).standard_normal((20, 6)).astype(np.float32)
    np.savez(tmp_path / "d.npz", X=x, y=np.zeros(20, np.int64))
    tflite_models.mlp_int8(tmp_path / "q.tflite", w, b, x, io_dtype="uint8")
    info = load(worker, tmp_path / "q.tflite", dataset=str(tmp_path / "d.npz"))
    assert info["inputs"][0]["dtype"] == "uint8"
    values = worker.request("evaluate", TIMEOUT, model_id="m", task="regression")["values"]
    np.testing.assert_allclose(values.sum(1), 1.0, atol=0.05)


def test_tflite_several_inputs_and_outputs(worker: WorkerClient, tmp_path: Path) -> None:
    model = tflite_models.add_mul(tmp_path / "m.tflite", dynamic_batch=True)
    info = load(worker, model, input_shapes={"a": [3, 4], "b": [3, 4]})
    assert info["input_shapes"] == {"a": [3, 4], "b": [3, 4]}
    out = worker.request(
        "run",
        TIMEOUT,
        model_id="m",
        inputs={"a": np.full((3, 4), 2, np.float32), "b": np.full((3, 4), 5, np.float32)},
    )["outputs"]
    np.testing.assert_allclose(out["product"], 10.0)
    np.testing.assert_allclose(out["sum"], 7.0)


def test_hello_reports_versions_and_empty_peak(worker: WorkerClient) -> None:
    hello = worker.request("hello", TIMEOUT, formats=["onnx", "tflite"])
    assert {"numpy", "onnxruntime", "ai-edge-litert"} <= set(hello["versions"])
    assert hello["empty_peak_kb"] > 10_000


# -- a GPU device whose session fell back to the CPU -----------------------------------------


DIGITS_ONNX = (
    Path(__file__).resolve().parent.parent / "examples" / "digits" / "models" / "digits.onnx"
)


@pytest.mark.filterwarnings("ignore:Specified provider")
def test_a_cuda_session_that_fell_back_to_cpu_fails_the_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """onnxruntime-gpu lists CUDAExecutionProvider even where CUDA cannot start (no driver, a
    missing libcudnn): the session then quietly runs on the CPU, and its figures would be
    labelled GPU measurements. The CPU wheel here does exactly that once it claims CUDA."""
    import onnxruntime as ort

    from harness.runtimes.base import ModelLoadError
    from harness.runtimes.onnx import OnnxRuntime
    from harness.worker.server import Worker

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("a CUDA build of onnxruntime: the CPU fallback is not what happens here")
    claimed = ["CUDAExecutionProvider", *ort.get_available_providers()]
    monkeypatch.setattr(ort, "get_available_providers", lambda: claimed)
    expected = r"asked for CUDAExecutionProvider, but the session runs on CPUExecutionProvider only"
    with pytest.raises(ModelLoadError, match=expected):
        OnnxRuntime(str(DIGITS_ONNX), 1, "cuda")
    with pytest.raises(ModelLoadError, match="onnxruntime-gpu's CUDA and cuDNN libraries"):
        Worker().load("m", str(DIGITS_ONNX), threads=1, accelerator="cuda")
    assert OnnxRuntime(str(DIGITS_ONNX), 1).provider == "CPUExecutionProvider"  # no GPU asked
