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


# -- models with internal state, and several failing properties --------------------------------


def streaming_accumulator(path: Path) -> Path:
    """A streaming model in the form TFLite converters write (keyword spotters keep their
    context this way): y = x + state; state = y, in a resource variable (VAR_HANDLE) that a
    CALL_ONCE init subgraph sets to zeros. Written with harness.modelgen's builder, no
    TensorFlow."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    from harness.modelgen.tflite import ModelBuilder

    handle_options = schema.VarHandleOptionsT()
    handle_options.sharedName = "context"
    b = ModelBuilder("streaming accumulator")
    x = b.tensor("x", np.float32, [1, 4])
    handle = b.tensor("handle", np.int32, [])
    b.tensors[handle].type = schema.TensorType.RESOURCE
    state = b.tensor("state", np.float32, [1, 4])
    y = b.tensor("y", np.float32, [1, 4])
    init = schema.CallOnceOptionsT()
    init.initSubgraphIndex = 1
    b.op("CALL_ONCE", [], [], init)
    b.op("VAR_HANDLE", [], [handle], handle_options)
    b.op("READ_VARIABLE", [handle], [state])
    b.op("ADD", [x, state], [y], schema.AddOptionsT())
    b.op("ASSIGN_VARIABLE", [handle, y], [])
    model = schema.ModelT.InitFromPackedBuf(b.to_bytes([x], [y]), 0)

    zeros = schema.BufferT()
    zeros.data = list(np.zeros((1, 4), np.float32).tobytes())
    model.buffers.append(zeros)
    init_handle, init_zeros = schema.TensorT(), schema.TensorT()
    init_handle.name, init_handle.type, init_handle.shape = "handle", schema.TensorType.RESOURCE, []
    init_zeros.name, init_zeros.type, init_zeros.shape = "zeros", schema.TensorType.FLOAT32, [1, 4]
    init_zeros.buffer = len(model.buffers) - 1
    codes = {c.builtinCode: i for i, c in enumerate(model.operatorCodes)}
    make_handle, assign = schema.OperatorT(), schema.OperatorT()
    make_handle.opcodeIndex = codes[schema.BuiltinOperator.VAR_HANDLE]
    make_handle.inputs, make_handle.outputs = [], [0]
    make_handle.builtinOptionsType = schema.BuiltinOptions.VarHandleOptions
    make_handle.builtinOptions = handle_options
    assign.opcodeIndex = codes[schema.BuiltinOperator.ASSIGN_VARIABLE]
    assign.inputs, assign.outputs = [0, 1], []
    subgraph = schema.SubGraphT()
    subgraph.name = "init"
    subgraph.tensors, subgraph.inputs, subgraph.outputs = [init_handle, init_zeros], [], []
    subgraph.operators = [make_handle, assign]
    model.subgraphs.append(subgraph)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))
    return path


def test_a_stateful_streaming_model_is_deterministic_once_its_state_is_reset(
    pytester: pytest.Pytester,
) -> None:
    from ai_edge_litert.interpreter import Interpreter

    path = streaming_accumulator(pytester.path / "stream.tflite")
    interpreter = Interpreter(model_path=str(path))  # the state is real: outputs accumulate
    interpreter.allocate_tensors()
    ones = np.ones((1, 4), np.float32)
    seen = []
    for _ in range(2):
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], ones)
        interpreter.invoke()
        seen.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy())
    assert seen[1][0, 0] == 2 * seen[0][0, 0]

    (pytester.path / "harness.toml").write_text(
        '[robustness]\nexamples = 10\n[[models]]\nname = "stream"\npath = "stream.tflite"\n'
    )
    result = pytester.runpytest(
        "-k", "robustness", "-p", "no:cacheprovider", "--harness-json", "out.json"
    )
    result.assert_outcomes(passed=1)
    import json

    (record,) = json.loads((pytester.path / "out.json").read_text())["results"]
    assert record["figures"]["state_reset"] == (
        "resource variables: a fresh interpreter before every run"
    )


def test_two_failing_properties_print_one_clean_line_each(pytester: pytest.Pytester) -> None:
    """log(x + 5) is not finite below -5, and subtracting the batch mean makes a batch differ
    from single runs: hypothesis finds both and raises an exception group; each property gets
    one line and its own saved counterexample, and no traceback is printed."""
    save(
        pytester.path / "twice.onnx",
        [
            helper.make_node("Constant", [], ["five"], value_float=5.0),
            helper.make_node("Add", ["x", "five"], ["shifted"]),
            helper.make_node("Log", ["shifted"], ["log"]),
            helper.make_node("ReduceMean", ["x"], ["mean"], axes=[0], keepdims=1),
            helper.make_node("Sub", ["log", "mean"], ["y"]),
        ],
    )
    config(pytester.path, "twice")
    result = run(pytester)
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "ExceptionGroup" not in out and "Traceback" not in out, out
    result.stdout.fnmatch_lines(
        [
            "*robustness[[]twice@host[]]: property batch: output 'y' of sample * differs when run "
            "alone and inside a batch of 3 (shrunk counterexample: */twice@host-batch.npz)",
            "property finite: output 'y' has NaN or infinite values "
            "(shrunk counterexample: */twice@host-finite.npz)",
        ]
    )
    for name in ("batch", "finite"):
        assert (pytester.path / f".harness/counterexamples/twice@host-{name}.npz").is_file()
