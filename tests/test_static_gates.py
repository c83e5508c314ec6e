"""The operators item: a static check against the device's runtime, failing with the operator's
name, before any worker starts."""

from __future__ import annotations

import textwrap
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper
from test_operators import tflite_fc

pytest_plugins = ["pytester"]


def test_opset_above_the_runtime_fails_the_operators_item(pytester: pytest.Pytester) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 30)])
    model.ir_version = 8
    onnx.save(model, pytester.path / "future.onnx")
    (pytester.path / "harness.toml").write_text(
        '[[models]]\nname = "future"\npath = "future.onnx"\n'
    )
    result = pytester.runpytest("-k", "operators", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*operators[[]future@host[]]: opset 30 (default domain) is above onnxruntime *'s "
            "maximum *: export with opset <= * or upgrade onnxruntime on the device*"
        ]
    )


def test_a_device_with_an_older_tflite_runtime_lacks_an_op_version(
    pytester: pytest.Pytester,
) -> None:
    """A user's board profile pins tflite-runtime 2.14: FULLY_CONNECTED v12 (TF >= 2.17) fails
    there, while the host's LiteRT passes it."""
    root: Path = pytester.path
    tflite_fc(root / "fc.tflite", 12)
    (root / "device-matrix").mkdir()
    (root / "device-matrix" / "old-board.toml").write_text(
        textwrap.dedent("""\
        description = "a board frozen on tflite-runtime 2.14"
        backend = "docker"
        arch = "arm64"
        cpu = "cortex-a53"
        cpus = 4
        memory = "1g"
        runtimes = ["tflite-runtime==2.14.0"]
        """)
    )
    (root / "harness.toml").write_text(
        'devices = ["host", "old-board"]\n[[models]]\nname = "fc"\npath = "fc.tflite"\n'
    )
    result = pytester.runpytest("-k", "operators", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*operators[[]fc@old-board[]]: FULLY_CONNECTED v12 needs TFLite runtime >= 2.17.0; the "
            "device has tflite-runtime 2.14.0*",
        ]
    )
