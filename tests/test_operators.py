"""harness.operators: the static operator check, against real models and the installed runtimes.

Where the installed onnxruntime / ai-edge-litert is the runtime being checked, the tests also
load the model for real: an error from `check` must mean the runtime refuses the model, and no
error must mean it loads.
"""

from __future__ import annotations

import builtins
import os
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
flatbuffers = pytest.importorskip("flatbuffers")
ort = pytest.importorskip("onnxruntime")
litert = pytest.importorskip("ai_edge_litert.interpreter")

from ai_edge_litert import schema_py_generated as schema  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

from harness.modelgen import onnx as gen_onnx  # noqa: E402
from harness.modelgen import tflite as gen_tflite  # noqa: E402
from harness.operators import (  # noqa: E402
    ModelOperators,
    OperatorProblem,
    OperatorReadError,
    check,
    read_operators,
    summarise,
)
from harness.operators.tables import (  # noqa: E402
    LITERT_MAX_VERSION,
    LITERT_RELEASES,
    ONNXRUNTIME_SUPPORT,
    TFLITE_MIN_RUNTIME,
)

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "examples" / "digits" / "models"
ORT_VERSION = metadata.version("onnxruntime")
# The installed onnxruntime's (opset, ML opset, IR version) row; None if newer than the table.
_MAJOR, _MINOR = (int(part) for part in ORT_VERSION.split(".")[:2])
ORT_ROW = ONNXRUNTIME_SUPPORT.get((_MAJOR, _MINOR))
LITERT_VERSION = metadata.version("ai-edge-litert")


def errors(problems: list[OperatorProblem]) -> list[OperatorProblem]:
    return [p for p in problems if p.severity == "error"]


# ---------------------------------------------------------------- ONNX helpers


def onnx_model(
    path: Path,
    nodes: list[Any],
    opsets: dict[str, int],
    *,
    ir_version: int = 8,
    initializers: list[Any] | None = None,
    functions: list[Any] | None = None,
) -> Path:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializers or [],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
        functions=functions or [],
    )
    model.ir_version = ir_version
    onnx.save(model, str(path))
    return path


def ort_loads(path: Path) -> bool:
    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception:
        return False
    return True


def relu(path: Path, opset: int, ir_version: int = 8) -> Path:
    return onnx_model(
        path, [helper.make_node("Relu", ["x"], ["y"])], {"": opset}, ir_version=ir_version
    )


# ---------------------------------------------------------------- TFLite helpers


def tflite_fc(path: Path, version: int) -> Path:
    b = gen_tflite.ModelBuilder()
    x = b.tensor("x", np.float32, [1, 4])
    w = b.constant("w", np.ones((2, 4), np.float32))
    y = b.tensor("y", np.float32, [1, 2])
    b.op("FULLY_CONNECTED", [x, w, -1], [y], version=version)
    return b.save(path, [x], [y])


def tflite_custom(path: Path, custom_code: str, *, schema_version: int = 3) -> Path:
    """RELU followed by a custom operator."""
    b = gen_tflite.ModelBuilder()
    x = b.tensor("x", np.float32, [1, 4])
    h = b.tensor("h", np.float32, [1, 4])
    y = b.tensor("y", np.float32, [1, 4])
    b.op("RELU", [x], [h])
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode = custom_code
    code.version = 1
    b.opcodes.append(code)
    op = schema.OperatorT()
    op.opcodeIndex = len(b.opcodes) - 1
    op.inputs, op.outputs = [h], [y]
    b.operators.append(op)
    data = b.to_bytes([x], [y])
    if schema_version != 3:
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
        model.version = schema_version
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        data = bytes(builder.Output())
    path.write_bytes(data)
    return path


def litert_loads(path: Path) -> bool:
    try:
        litert.Interpreter(model_path=str(path)).allocate_tensors()
    except Exception:
        return False
    return True


# ================================================================ ONNX


def test_opset_above_every_runtime_is_flagged(tmp_path: Path) -> None:
    model = read_operators(relu(tmp_path / "opset30.onnx", 30))
    assert model.opsets == {"": 30}
    cases = [("1.17.0", 20)] + ([(ORT_VERSION, ORT_ROW[0])] if ORT_ROW else [])
    for version, limit in cases:
        problems = errors(check(model, "onnxruntime", version))
        assert [(p.operator, p.version) for p in problems] == [("opset", 30)], problems
        assert problems[0].message.startswith(
            f"opset 30 (default domain) is above onnxruntime {version}'s maximum {limit}: "
            f"export with opset <= {limit} or upgrade onnxruntime on the device"
        )
    assert not ort_loads(tmp_path / "opset30.onnx")  # and the installed runtime agrees


def test_normal_opset17_model_passes(tmp_path: Path) -> None:
    path = gen_onnx.mlp(tmp_path / "mlp.onnx")
    model = read_operators(path)
    assert model.opsets == {"": 17} and model.ir_version == 8
    assert summarise(model)["operators"] == {"Add": 2, "MatMul": 2, "Relu": 1, "Softmax": 1}
    for version in ("1.17.0", "1.20.1", ORT_VERSION):
        assert check(model, "onnxruntime", version) == []
    assert ort_loads(path)


def test_opset_and_ir_limits_follow_the_table(tmp_path: Path) -> None:
    model = read_operators(relu(tmp_path / "r.onnx", 21, ir_version=10))
    assert check(model, "onnxruntime", "1.18.0") == []
    assert [p.operator for p in check(model, "onnxruntime", "1.17.3")] == ["IR version", "opset"]
    ir15 = read_operators(relu(tmp_path / "ir15.onnx", 17, ir_version=15))
    problems = check(ir15, "onnxruntime", "1.32.0")
    assert [(p.operator, p.version, p.severity) for p in problems] == [("IR version", 15, "error")]
    # A release newer than the table: its newest row is a lower bound, so only a warning.
    opset30 = read_operators(relu(tmp_path / "opset30.onnx", 30))
    (newer,) = check(opset30, "onnxruntime", "1.99.0")
    assert newer.severity == "warning" and "lower bound" in newer.message


def test_installed_runtime_matches_its_table_row(tmp_path: Path) -> None:
    if ORT_ROW is None:
        pytest.skip(f"onnxruntime {ORT_VERSION} is newer than the table")
    opset, _ml, ir = ORT_ROW
    assert ort_loads(relu(tmp_path / "top.onnx", opset, ir_version=ir))
    assert not ort_loads(relu(tmp_path / "opset.onnx", opset + 1, ir_version=ir))
    assert not ort_loads(relu(tmp_path / "ir.onnx", opset, ir_version=ir + 1))


def test_custom_domain_operator_is_flagged(tmp_path: Path) -> None:
    path = onnx_model(
        tmp_path / "custom.onnx",
        [
            helper.make_node("Relu", ["x"], ["h"]),
            helper.make_node("Foo", ["h"], ["y"], domain="my.ops"),
        ],
        {"": 17, "my.ops": 1},
    )
    model = read_operators(path)
    for version in ("1.17.0", ORT_VERSION):
        problems = check(model, "onnxruntime", version)
        assert [(p.operator, p.domain, p.severity) for p in problems] == [
            ("Foo", "my.ops", "error")
        ]
        assert problems[0].message.startswith(
            "custom operator Foo from domain 'my.ops': the device runtime has no kernel for it "
            "unless registered"
        )
    assert not ort_loads(path)


def test_ops_inside_loop_bodies_and_functions_are_found(tmp_path: Path) -> None:
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Bar", ["x_in"], ["x_out"], domain="my.ops"),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_in", TensorProto.FLOAT, [1, 4]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_out", TensorProto.FLOAT, [1, 4]),
        ],
    )
    double = helper.make_function(
        "local",
        "Double",
        ["a"],
        ["b"],
        [helper.make_node("Add", ["a", "a"], ["b"])],
        [helper.make_opsetid("", 17)],
    )
    path = onnx_model(
        tmp_path / "loop.onnx",
        [
            helper.make_node(
                "Constant", [], ["n"], value=helper.make_tensor("n", TensorProto.INT64, [], [3])
            ),
            helper.make_node(
                "Constant", [], ["c"], value=helper.make_tensor("c", TensorProto.BOOL, [], [True])
            ),
            helper.make_node("Loop", ["n", "c", "x"], ["h"], name="steps", body=body),
            helper.make_node("Double", ["h"], ["y"], domain="local"),
        ],
        {"": 17, "my.ops": 1, "local": 1},
        functions=[double],
    )
    model = read_operators(path)
    by_name = {use.name: use for use in model.operators}
    assert by_name["Bar"].locations == ("graph/steps.body",)
    assert by_name["Identity"].locations == ("graph/steps.body",)
    assert by_name["Add"].locations == ("function local.Double",)
    assert by_name["Double"].local_function and by_name["Constant"].count == 2
    problems = check(model, "onnxruntime", ORT_VERSION)
    assert [(p.operator, p.locations) for p in problems] == [("Bar", ("graph/steps.body",))]
    assert "(in graph/steps.body)" in problems[0].message
    assert not ort_loads(path)


@pytest.mark.parametrize(
    ("op", "opset", "inputs", "phrase"),
    [
        ("NoSuchOp", 17, ["x"], "no ONNX opset defines it"),
        ("Gelu", 17, ["x"], "it first appears in opset 20"),
        ("Upsample", 13, ["x", "scales"], "deprecated in the default domain from opset 10"),
    ],
)
def test_standard_domain_operators_are_checked_against_the_opset(
    tmp_path: Path, op: str, opset: int, inputs: list[str], phrase: str
) -> None:
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [2], [1.0, 2.0])
    path = onnx_model(
        tmp_path / f"{op}.onnx",
        [helper.make_node(op, inputs, ["y"])],
        {"": opset},
        initializers=[scales] if "scales" in inputs else [],
    )
    for version in ("1.17.0", ORT_VERSION):
        (problem,) = check(read_operators(path), "onnxruntime", version)
        assert problem.operator == op and phrase in problem.message
    assert not ort_loads(path)


def test_missing_cpu_kernel_is_flagged_only_for_the_installed_release(tmp_path: Path) -> None:
    path = onnx_model(
        tmp_path / "contrib.onnx",
        [helper.make_node("NoSuchContribOp", ["x"], ["y"], domain="com.microsoft")],
        {"": 17, "com.microsoft": 1},
    )
    model = read_operators(path)
    (problem,) = check(model, "onnxruntime", ORT_VERSION)
    assert "has no CPU kernel for NoSuchContribOp" in problem.message
    assert check(model, "onnxruntime", "1.17.0") == []  # no kernel list for other releases
    assert not ort_loads(path)


def test_external_data_is_never_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An initializer whose data lies outside the model's folder (or nowhere) is not opened."""
    weights = helper.make_tensor("w", TensorProto.FLOAT, [4], [0.0] * 4)
    weights.ClearField("float_data")
    weights.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../../outside/secret.bin"), ("offset", "0"), ("length", "16")):
        entry = weights.external_data.add()
        entry.key, entry.value = key, value
    (tmp_path / "model").mkdir()
    path = onnx_model(
        tmp_path / "model" / "ext.onnx",
        [helper.make_node("Add", ["x", "w"], ["y"])],
        {"": 17},
        initializers=[weights],
    )
    with pytest.raises(Exception):  # noqa: B017 - what onnx raises for the missing file varies
        onnx.load(str(path))  # loading the data would go for it
    opened: list[str] = []
    real_open, real_os_open = builtins.open, os.open

    def spy_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(os.fspath(file) if not isinstance(file, int) else f"fd {file}")
        return real_open(file, *args, **kwargs)

    def spy_os_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(os.fspath(file))
        return real_os_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(os, "open", spy_os_open)
    model = read_operators(path)
    monkeypatch.undo()
    assert [Path(p).resolve() for p in opened] == [path.resolve()]
    assert [use.name for use in model.operators] == ["Add"]
    assert check(model, "onnxruntime", ORT_VERSION) == []


# ================================================================ TFLite


def test_fully_connected_v12_needs_tflite_2_17(tmp_path: Path) -> None:
    assert TFLITE_MIN_RUNTIME["FULLY_CONNECTED"][12] == "2.17.0"
    path = tflite_fc(tmp_path / "fc12.tflite", 12)
    model = read_operators(path)
    assert [(u.name, u.version) for u in model.operators] == [("FULLY_CONNECTED", 12)]
    (problem,) = check(model, "tflite-runtime", "2.14.0")
    assert (problem.operator, problem.version, problem.severity) == ("FULLY_CONNECTED", 12, "error")
    assert problem.message.startswith(
        "FULLY_CONNECTED v12 needs TFLite runtime >= 2.17.0; the device has tflite-runtime "
        "2.14.0 (upgrade the runtime on the device, or convert the model with an older "
        "converter / op set)"
    )
    assert check(model, "tflite-runtime", "2.17.0") == []
    assert check(model, "ai-edge-litert", "2.3.0") == []
    assert litert_loads(path)  # the installed LiteRT does load it


def test_litert_measurements_match_the_installed_release(tmp_path: Path) -> None:
    if LITERT_VERSION not in LITERT_RELEASES:
        pytest.skip(f"ai-edge-litert {LITERT_VERSION} is not among the measured releases")
    index = LITERT_RELEASES.index(LITERT_VERSION)
    highest = LITERT_MAX_VERSION["FULLY_CONNECTED"][index]
    assert litert_loads(tflite_fc(tmp_path / "top.tflite", highest))
    beyond = read_operators(tflite_fc(tmp_path / "beyond.tflite", highest + 1))
    (problem,) = check(beyond, "ai-edge-litert", LITERT_VERSION)
    assert problem.severity == "error"
    assert f"loads FULLY_CONNECTED up to v{highest}" in problem.message
    assert not litert_loads(tmp_path / "beyond.tflite")


def test_litert_between_and_beyond_measured_releases(tmp_path: Path) -> None:
    model = read_operators(tflite_fc(tmp_path / "fc14.tflite", 14))  # 1.4.0: <= 13; 2.1.0: 14
    (between,) = check(model, "ai-edge-litert", "2.0.9")  # 2.0.2 lacks it, 2.1.0 has it
    assert between.severity == "warning" and "unverified" in between.message
    (older,) = check(model, "ai-edge-litert", "1.3.0")  # both 1.2.0 and 1.4.0 lack it
    assert older.severity == "error"
    assert check(model, "ai-edge-litert", "9.0.0") == []
    (newest,) = check(
        read_operators(tflite_fc(tmp_path / "fc99.tflite", 99)), "ai-edge-litert", "9.0.0"
    )
    assert newest.severity == "warning" and "newest release measured" in newest.message


def test_tflite_custom_operators(tmp_path: Path) -> None:
    flex = read_operators(tflite_custom(tmp_path / "flex.tflite", "FlexAddV2"))
    assert [(u.name, u.domain) for u in flex.operators] == [
        ("RELU", "builtin"),
        ("FlexAddV2", "custom"),
    ]
    (problem,) = check(flex, "ai-edge-litert", LITERT_VERSION)
    assert problem.operator == "FlexAddV2" and "Flex delegate" in problem.message
    assert check(flex, "tensorflow", "2.16.1") == []
    assert not litert_loads(tmp_path / "flex.tflite")

    mine = read_operators(tflite_custom(tmp_path / "mine.tflite", "MyOp"))
    (problem,) = check(mine, "tflite-runtime", "2.14.0")
    assert problem.message.startswith("custom operator MyOp: tflite-runtime 2.14.0 has no kernel")
    assert not litert_loads(tmp_path / "mine.tflite")

    builtin_custom = read_operators(
        tflite_custom(tmp_path / "pp.tflite", "TFLite_Detection_PostProcess")
    )
    assert check(builtin_custom, "ai-edge-litert", LITERT_VERSION) == []


def test_tflite_schema_version_and_unused_operator_codes(tmp_path: Path) -> None:
    old = read_operators(tflite_custom(tmp_path / "v2.tflite", "Mfcc", schema_version=2))
    assert old.schema_version == 2
    (problem,) = check(old, "ai-edge-litert", LITERT_VERSION)
    assert problem.operator == "schema version"
    assert not litert_loads(tmp_path / "v2.tflite")

    b = gen_tflite.ModelBuilder()
    x, y = b.tensor("x", np.float32, [1, 4]), b.tensor("y", np.float32, [1, 4])
    b.op("RELU", [x], [y])
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.ADD
    code.version = 99
    b.opcodes.append(code)  # declared, never used: the interpreter still resolves it
    model = read_operators(b.save(tmp_path / "unused.tflite", [x], [y]))
    assert summarise(model)["operators"] == {"ADD": 0, "RELU": 1}
    (problem,) = check(model, "ai-edge-litert", LITERT_VERSION)
    assert problem.operator == "ADD" and "operator codes (unused)" in problem.message
    assert not litert_loads(tmp_path / "unused.tflite")


# ================================================================ files


@pytest.mark.parametrize("name", ["digits.onnx", "digits_float.tflite", "digits_int8.tflite"])
def test_digits_models_pass_for_the_installed_runtimes(name: str) -> None:
    model = read_operators(DIGITS / name)
    if model.format == "onnx":
        runtimes = [("onnxruntime", ORT_VERSION), ("onnxruntime", "1.17.0")]
    else:
        runtimes = [("ai-edge-litert", LITERT_VERSION), ("tflite-runtime", "2.14.0")]
    for runtime, version in runtimes:
        assert check(model, runtime, version) == [], (runtime, version)
    summary = summarise(model)
    assert summary["format"] == model.format and summary["total"] > 0


@pytest.mark.parametrize("name", ["digits.onnx", "digits_int8.tflite"])
def test_truncated_or_wrong_files_raise_naming_the_file(tmp_path: Path, name: str) -> None:
    data = (DIGITS / name).read_bytes()
    for label, content in (
        ("cut", data[: len(data) // 2]),
        ("empty", b""),
        ("text", b"hello\n" * 50),
    ):
        path = tmp_path / f"{label}-{name}"
        path.write_bytes(content)
        with pytest.raises(OperatorReadError) as info:
            read_operators(path)
        assert str(path) in str(info.value)
    other = tmp_path / ("swapped.tflite" if name.endswith(".onnx") else "swapped.onnx")
    other.write_bytes(data)
    with pytest.raises(OperatorReadError, match="swapped"):
        read_operators(other)
    with pytest.raises(OperatorReadError, match="unknown model format"):
        read_operators(tmp_path / "model.pt")


def test_tflite_cut_inside_the_weights_is_caught(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = gen_tflite.mlp(
        tmp_path / "big.tflite", [rng.standard_normal((64, 256))], [np.zeros(256)]
    )
    data = path.read_bytes()
    for keep in range(len(data) - 1, len(data) // 2, -(len(data) // 16)):
        cut = tmp_path / f"cut{keep}.tflite"
        cut.write_bytes(data[:keep])
        with pytest.raises(OperatorReadError, match=f"cut{keep}"):
            read_operators(cut)


def test_check_rejects_mismatched_runtimes(tmp_path: Path) -> None:
    model: ModelOperators = read_operators(DIGITS / "digits.onnx")
    with pytest.raises(ValueError, match="unknown runtime"):
        check(model, "tvm", "0.1")
    with pytest.raises(ValueError, match="does not run onnx models"):
        check(model, "ai-edge-litert", LITERT_VERSION)
