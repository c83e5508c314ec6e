"""Operators whose support the harness cannot tell for the device's runtime version: a warning
verdict (WARN) that names them and does not fail the session, never "every operator is
supported"."""

from __future__ import annotations

import textwrap

import onnx
import pytest
from onnx import TensorProto, helper

from harness.config import GateSpec
from harness.gates import decide

pytest_plugins = ["pytester"]

UNKNOWN = (
    "onnxruntime 0.5.0 is older than every release the harness knows (from 1.0): its operator "
    "support is unknown"
)


def test_unknown_support_is_a_warning_verdict_not_a_pass() -> None:
    figures = {"runtime": "onnxruntime", "runtime_version": "0.5.0", "errors": 0}
    verdict = decide("operators", figures | {"warnings": [UNKNOWN]}, GateSpec(), "b", "measured")
    assert verdict.status == "WARN"
    assert verdict.reasons == (f"operator support unknown on onnxruntime 0.5.0 (b): {UNKNOWN}",)
    assert not any("every operator is supported" in c.message for c in verdict.checks)
    known = decide("operators", figures | {"warnings": []}, GateSpec(), "b", "measured")
    assert known.status == "PASS"
    assert known.checks[0].message == "every operator is supported by onnxruntime 0.5.0 (b)"


def test_a_runtime_the_tables_do_not_know_warns_in_the_table_and_passes(
    pytester: pytest.Pytester,
) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.save(model, pytester.path / "relu.onnx")
    (pytester.path / "device-matrix").mkdir()
    (pytester.path / "device-matrix" / "ancient.toml").write_text(
        textwrap.dedent("""\
        description = "a board frozen on an onnxruntime older than the harness's tables"
        backend = "docker"
        arch = "arm64"
        cpu = "cortex-a53"
        cpus = 4
        memory = "1g"
        runtimes = ["onnxruntime==0.5.0"]
        """)
    )
    (pytester.path / "harness.toml").write_text(
        'devices = ["ancient"]\nmatrix = "device-matrix"\n'
        '[[models]]\nname = "relu"\npath = "relu.onnx"\n'
    )
    result = pytester.runpytest("-k", "operators", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        ["ancient*relu*operators*WARN*operator support unknown on onnxruntime 0.5.0 (ancient)*"]
    )
    assert "every operator is supported" not in result.stdout.str()
