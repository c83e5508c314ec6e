"""Real exporters' shapes: a dynamic batch dim runs at batch 1 without configuration (and says
so), and every config line an error suggests is valid TOML."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper
from test_runtimes import TIMEOUT, load, worker  # noqa: F401  (the worker fixture)

from harness.backends.base import WorkerClient, WorkerError


def _relu(path: Path, name: str, shape: list[int | str]) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Relu", [name], ["y"])],
        "g",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_a_dynamic_batch_runs_at_batch_one_without_configuration(
    worker: WorkerClient,  # noqa: F811
    tmp_path: Path,
) -> None:
    model = _relu(tmp_path / "m.onnx", "serving_default_keras_tensor:0", ["batch", 24, 24, 3])
    info = load(worker, model)
    assert info["input_shapes"] == {"serving_default_keras_tensor:0": [1, 24, 24, 3]}
    assert info["batch_assumed"] == ["serving_default_keras_tensor:0"]
    assert len(worker.request("bench", TIMEOUT, model_id="m", samples=3)["samples_ns"]) == 3


def test_the_suggested_input_shapes_line_is_valid_toml(
    worker: WorkerClient,  # noqa: F811
    tmp_path: Path,
) -> None:
    model = _relu(tmp_path / "m.onnx", "serving_default:0", ["batch", "h", 3])
    with pytest.raises(WorkerError) as caught:
        load(worker, model, config_file="harness.toml")
    line = re.search(r"set (input_shapes = \{.*?\}) \(", str(caught.value))
    assert line is not None, caught.value
    parsed = tomllib.loads(line.group(1))
    assert parsed == {"input_shapes": {"serving_default:0": [1, 1, 3]}}
