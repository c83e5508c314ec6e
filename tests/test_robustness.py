"""The hypothesis property suite finds planted faults on the device and saves a shrunk
counterexample; a sound model passes."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from harness.modelgen import onnx as onnx_models

pytest_plugins = ["pytester"]


def save(path: Path, nodes: list[onnx.NodeProto], batch: str | int = "N") -> None:
    graph = helper.make_graph(
        nodes,
        "planted",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def config(root: Path, name: str) -> None:
    (root / "harness.toml").write_text(
        textwrap.dedent(f"""\
        [robustness]
        examples = 15
        time_budget_s = 60
        [[models]]
        name = "{name}"
        path = "{name}.onnx"
        input_shapes = {{ x = [1, 4] }}
        """)
    )


def run(pytester: pytest.Pytester) -> pytest.RunResult:
    return pytester.runpytest("-k", "robustness", "-p", "no:cacheprovider")


def test_planted_nondeterminism_is_found(pytester: pytest.Pytester) -> None:
    save(
        pytester.path / "noisy.onnx",
        [
            helper.make_node("RandomUniformLike", ["x"], ["noise"], low=0.0, high=1e-3),
            helper.make_node("Add", ["x", "noise"], ["y"]),
        ],
    )
    config(pytester.path, "noisy")
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*robustness[[]noisy@host[]]: property deterministic: output 'y' changed between two "
            "runs of the same input*(shrunk counterexample: */.harness/counterexamples/"
            "noisy@host-deterministic.npz)*"
        ]
    )
    saved = np.load(pytester.path / ".harness/counterexamples/noisy@host-deterministic.npz")
    assert saved["X_x"].shape[1] == 4


def test_planted_batch_inconsistency_is_found_and_shrunk(pytester: pytest.Pytester) -> None:
    save(
        pytester.path / "leaky.onnx",
        [
            helper.make_node("ReduceMean", ["x"], ["mean"], axes=[0], keepdims=1),
            helper.make_node("Sub", ["x", "mean"], ["y"]),
        ],
    )
    config(pytester.path, "leaky")
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*property batch: output 'y' of sample * differs when run alone "
            "and inside a batch of 3*leaky@host-batch.npz*"
        ]
    )
    x = np.load(pytester.path / ".harness/counterexamples/leaky@host-batch.npz")["X_x"]
    assert x.shape == (3, 4)
    # The saved counterexample reproduces the fault outside the harness.
    session = ort.InferenceSession(str(pytester.path / "leaky.onnx"))
    together = session.run(None, {"x": x})[0]
    alone = np.concatenate([session.run(None, {"x": row[None]})[0] for row in x])
    assert not np.allclose(together, alone)


def test_non_finite_output_from_finite_input_is_found(pytester: pytest.Pytester) -> None:
    save(pytester.path / "logs.onnx", [helper.make_node("Log", ["x"], ["y"])])
    config(pytester.path, "logs")
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*property finite: output 'y' has NaN or infinite values*"])


def test_a_sound_model_passes_every_property(pytester: pytest.Pytester) -> None:
    onnx_models.mlp(pytester.path / "mlp.onnx", dynamic_batch=True)
    (pytester.path / "harness.toml").write_text(
        textwrap.dedent("""\
        [robustness]
        examples = 10
        [[models]]
        name = "mlp"
        path = "mlp.onnx"
        input_shapes = { input = [1, 16] }
        """)
    )
    result = run(pytester)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*robustness*examples 10*properties*PASS*"])
