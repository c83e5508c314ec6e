"""Issue 21: what public models (a streaming VAD with a recurrent state and an int64 sample-rate
scalar, a detector with two outputs, a classifier with every dim dynamic) broke, each with the
test that failed before its fix. The model here is harness.modelgen.onnx.streaming_vad, shaped
like silero-vad's (tests/test_real_models.py runs the real ones)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_runtimes import TIMEOUT, load, worker  # noqa: F401  (the worker fixture)

from harness.backends.base import Target, WorkerClient, WorkerError
from harness.config import GateSpec, HarnessConfig, ModelSpec
from harness.emulation_plan import make_plan
from harness.gates import decide
from harness.modelgen import onnx as onnx_models
from harness.suites.parity import GENERATED_NAME, compare
from harness.suites.robustness import batching

pytest_plugins = ["pytester"]
SHAPES = {"input": [1, 8], "state": [2, 1, 4]}


def _stream(tmp_path: Path, rows: int = 12, labels: bool = True) -> Path:
    """A user's data for a streaming model: each chunk with the state it comes in with."""
    rng = np.random.default_rng(0)
    arrays = {
        "X_input": rng.standard_normal((rows, 8)).astype(np.float32),
        "X_state": (0.1 * rng.standard_normal((rows, 2, 1, 4))).astype(np.float32),
    }
    if labels:
        arrays["y"] = rng.integers(0, 2, rows)
    path = tmp_path / "stream.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


# 2. A misspelt input name in input_shapes / input_values is refused, listing the inputs.


@pytest.mark.parametrize(
    ("arguments", "key"),
    [
        ({"input_shapes": {"image": [1, 8], "state": [2, 1, 4]}, "input_values": {"sr": 16000}},
         "input_shapes.image"),
        ({"input_shapes": SHAPES, "input_values": {"sr": 16000, "rate": 8000}},
         "input_values.rate"),
    ],
)  # fmt: skip
def test_a_misspelt_input_name_is_refused_listing_the_models_inputs(
    worker: WorkerClient,  # noqa: F811
    tmp_path: Path,
    arguments: dict[str, Any],
    key: str,
) -> None:
    model = onnx_models.streaming_vad(tmp_path / "vad.onnx")
    with pytest.raises(WorkerError) as caught:
        load(worker, model, config_file="models/harness.toml", **arguments)
    message = str(caught.value)
    assert message.startswith(f"models/harness.toml: {key} names no input of this model")
    assert "the model's inputs are ['input', 'state', 'sr']" in message


def test_the_suggested_shape_says_which_dims_are_placeholders(
    worker: WorkerClient,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The line an error suggests for dynamic dims is not a size to copy: 1 x 1 images pass
    every gate."""
    model = onnx_models.dynamic_dims(tmp_path / "m.onnx")
    with pytest.raises(WorkerError) as caught:
        load(worker, model, config_file="harness.toml")
    assert "in place of the 1s at dims 0, 1: 1 there measures a degenerate input" in str(
        caught.value
    )


# 4. An integer scalar nothing gives a value to is refused with the line to add.


@pytest.mark.parametrize("with_dataset", [False, True])
def test_an_integer_scalar_without_a_value_is_refused_with_the_input_values_line(
    worker: WorkerClient,  # noqa: F811
    tmp_path: Path,
    with_dataset: bool,
) -> None:
    model = onnx_models.streaming_vad(tmp_path / "vad.onnx")
    dataset = {"dataset": str(_stream(tmp_path))} if with_dataset else {"input_shapes": SHAPES}
    with pytest.raises(WorkerError) as caught:
        load(worker, model, config_file="harness.toml", **dataset)
    message = str(caught.value)
    assert "model input 'sr' is an int64 scalar [] (a sample rate, a step count)" in message
    assert "add input_values = { sr = <its value> } for this model in harness.toml" in message


# 1. input_values reach the counted worker, and its messages name the user's files.


def test_a_targets_paths_become_the_users_in_worker_messages() -> None:
    target = Target(
        channel=None,  # type: ignore[arg-type]  (unused: only the path map is read)
        fidelity="emulated",
        path_map={Path("/home/me/data/test.npz"): "/data/1/file.npz"},
    )
    text = "add array X_sr to /data/1/file.npz, or give a constant"
    assert target.local(text) == "add array X_sr to /home/me/data/test.npz, or give a constant"


@pytest.mark.usefixtures("counting_plugin")  # QEMU: the "qemu" marker
def test_the_counted_worker_gets_input_values_and_names_the_users_files(tmp_path: Path) -> None:
    """The board estimate of a model with a scalar input: counted under QEMU (x86-64 here, the
    host's Python where no image trees are built) with the config's input_values."""
    import shutil

    from conftest import unavailable
    from harness.backends.base import BackendUnavailable
    from harness.devices import load_profiles
    from harness.timing import estimate_latency

    if shutil.which("qemu-x86_64") is None:
        unavailable("qemu-user is not installed: run scripts/setup-counting.sh as root")
    profile = load_profiles()["x86-64"]
    model = onnx_models.streaming_vad(tmp_path / "vad.onnx")
    dataset = _stream(tmp_path, rows=2)
    config = str(tmp_path / "harness.toml")
    with pytest.raises(WorkerError) as caught:
        estimate_latency(profile, model, dataset, timeout=600, config_file=config)
    message = str(caught.value)
    assert f"array X_sr to {dataset}" in message and f"for this model in {config}" in message
    assert "/data/" not in message
    try:
        estimate = estimate_latency(
            profile, model, dataset, input_values={"sr": 16000}, timeout=600, config_file=config
        )
    except BackendUnavailable as exc:
        unavailable(f"timing counts on x86-64: {exc}")
    assert estimate.ms > 0 and estimate.instructions_per_inference > 0


# 3. Robustness varies the batch only where the spec ties it.


def _spec(name: str, shape: list[Any]) -> dict[str, Any]:
    return {"name": name, "shape": shape, "dtype": "float32", "quantization": None}


def test_batch_dims_are_those_the_spec_ties() -> None:
    scalar = _spec("sr", [])
    unnamed = [_spec("input", [None, 8]), _spec("state", [2, None, 4]), scalar]
    outputs = [_spec("output", [None, 1]), _spec("stateN", [None, None, None])]
    assert batching(unnamed, outputs, {"sr"}).inputs == {}
    assert "which dim of each is the batch is unknowable" in batching(unnamed, outputs, {"sr"}).note
    tied = [_spec("input", ["batch", "sequence"]), _spec("state", [2, "batch", 4]), scalar]
    named = [_spec("output", ["batch", 1]), _spec("stateN", ["d0", "batch", "d2"])]
    found = batching(tied, named, {"sr"})
    assert found.inputs == {"input": 0, "state": 1}
    assert found.outputs == {"output": 0, "stateN": 1}
    single = batching([_spec("x", [None, 3, None, None])], [_spec("p", [None, 2])], set())
    assert single.inputs == {"x": 0} and single.outputs == {"p": 0}


def _project(root: Path, body: str, files: dict[str, Path] | None = None) -> None:
    (root / "harness.toml").write_text(
        textwrap.dedent("""\
        devices = ["host"]
        [robustness]
        examples = 6
        time_budget_s = 60
        """)
        + textwrap.dedent(body)
    )


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("with_dataset", [False, True])
def test_robustness_passes_a_correct_stateful_model(
    pytester: pytest.Pytester, tied: bool, with_dataset: bool
) -> None:
    root = pytester.path
    batch = ("batch", "batch") if tied else (None, None)
    onnx_models.streaming_vad(root / "vad.onnx", batch=batch)
    shapes = f"input_shapes = {_toml(SHAPES)}"
    data = f'dataset = "{_stream(root).name}"' if with_dataset else shapes
    _project(
        root,
        f"""\
        [[models]]
        name = "vad"
        path = "vad.onnx"
        {data}
        input_values = {{ sr = 16000 }}
        """,
    )
    result = pytester.runpytest("-k", "robustness", "--harness-json", "out.json")
    result.assert_outcomes(passed=1)
    (record,) = [r for r in _results(root) if r["suite"] == "robustness"]
    figures = record["figures"]
    assert figures["batch_checked"] is tied
    if not tied:
        assert "inputs input [?, 8], state [2, ?, 4] have free dims" in figures["batch_note"]


def _toml(table: dict[str, list[int]]) -> str:
    return "{ " + ", ".join(f"{k} = {v}" for k, v in table.items()) + " }"


def _results(root: Path) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = json.loads((root / "out.json").read_text())["results"]
    return results


# 4. Parity without a dataset: generated inputs follow the configured shapes and values.


def test_parity_without_a_dataset_keeps_a_states_leading_axis(pytester: pytest.Pytester) -> None:
    root = pytester.path
    onnx_models.streaming_vad(root / "vad.onnx")
    onnx_models.streaming_vad(root / "vad-copy.onnx")
    model = f"""\
        input_shapes = {_toml(SHAPES)}
        input_values = {{ sr = 16000 }}
        """
    _project(
        root,
        f"""\
        [[models]]
        name = "vad"
        path = "vad.onnx"
        {model}
        [[models]]
        name = "vad-copy"
        path = "vad-copy.onnx"
        parity_with = "vad"
        {model}
        [models.gates]
        parity_max_abs_error = 1e-6
        parity_cosine_min = 0.99
        """,
    )
    result = pytester.runpytest("-k", "parity and vad-copy", "--harness-json", "out.json")
    result.assert_outcomes(passed=1)
    (record,) = [r for r in _results(root) if r["suite"] == "parity"]
    assert record["figures"]["parity_max_abs_error"] == 0.0
    # 5. One value per sample: cosine says nothing, and the row says why it is not applied.
    (cosine,) = [c for c in record["verdict"]["checks"] if c["gate"] == "parity_cosine_min"]
    assert cosine["passed"] is None
    assert "the output has 1 value(s) per sample, fewer than 8" in cosine["message"]


def test_a_parity_refusal_names_no_file_the_user_never_made(pytester: pytest.Pytester) -> None:
    root = pytester.path
    onnx_models.streaming_vad(root / "vad.onnx")
    onnx_models.int64_scalar(root / "steps.onnx")
    _project(
        root,
        f"""\
        [[models]]
        name = "steps"
        path = "steps.onnx"
        input_values = {{ steps = 4 }}
        [[models]]
        name = "vad"
        path = "vad.onnx"
        parity_with = "steps"
        input_shapes = {_toml(SHAPES)}
        input_values = {{ sr = 16000 }}
        """,
    )
    result = pytester.runpytest("-k", "parity and vad", "--harness-json", "out.json")
    result.assert_outcomes(failed=1)
    (record,) = [r for r in _results(root) if r["suite"] == "parity"]
    assert GENERATED_NAME in record["error"]
    assert "-generated.npz" not in record["error"]


# 5. Figures that mislead.


def test_cosine_is_not_computed_on_one_value_outputs() -> None:
    mine = {"values": np.array([[0.1], [0.9]]), "top1": [0, 1]}
    theirs = {"values": np.array([[0.05], [0.97]]), "top1": [0, 1]}
    figures = compare(mine, theirs, "parity_")
    assert "parity_cosine_min" not in figures
    verdict = decide("parity", figures, GateSpec(parity_cosine_min=0.99), "host", "measured")
    (check,) = verdict.checks
    assert check.passed is None and "not applied: cosine similarity not computed" in check.message
    wide = compare({"values": np.eye(8)}, {"values": np.eye(8)}, "parity_")
    assert wide["parity_cosine_min"] == 1.0


def test_a_planned_pair_has_the_latency_budget_its_plan_states(tmp_path: Path) -> None:
    """The plan line's latency runs are what the record holds: an emulated inference of 5 s
    plans 12 runs, which latency.time_budget_s (10 s) alone would cut to 2."""
    from harness.baseline import BaselineContext
    from harness.devices import load_profiles
    from harness.pairs import Pair, Shared, WorkerHandle

    config = HarnessConfig(source=tmp_path / "harness.toml")
    model = ModelSpec(name="m", path=tmp_path / "m.onnx")
    profile = load_profiles()["rpi4"]
    pair = Pair(model, profile, config, WorkerHandle(model, profile, config), BaselineContext(),
                Shared(config))  # fmt: skip
    pair._plan = make_plan("rpi4", True, 5.0, 0, config)
    planned = pair.planned()
    runs = planned.config.latency.samples + planned.config.latency.warmup
    assert planned.config.latency.samples == pair._plan.latency_samples == 12
    assert planned.config.latency.time_budget_s >= 5.0 * runs


def test_accuracy_rows_say_what_their_n_rests_on() -> None:
    """On an emulated board accuracy is the host's (n=243) and the board answered 64: the
    row says so instead of `(rpi4, emulated, n=243)`."""
    figures = {
        "n": 243,
        "accuracy": 0.97,
        "nonfinite": 0,
        "basis_accuracy": "n=243 on the host, measured",
        "basis_nonfinite": "n=243 on the host, measured; n=64 on the board, emulated",
    }
    verdict = decide("accuracy", figures, GateSpec(accuracy_min=0.9), "rpi4", "emulated")
    messages = {c.gate: c.message for c in verdict.checks}
    assert messages["accuracy_min"].endswith("(rpi4: n=243 on the host, measured)")
    assert "n=64 on the board, emulated" in messages["nonfinite_max"]
    assert "emulated, n=243" not in " ".join(messages.values())


def _latency_on_rpi4() -> dict[str, Any]:
    """A latency record of an emulated board: QEMU wall-clock samples, and the timing model's
    estimate that its absolute gate reads."""
    from harness.results import Measurement, record

    figures = {
        "n": 2, "p50_ms": 420.0, "p90_ms": 431.0, "estimated_ms": 9.3,
        "estimated_ms_low": 5.311, "estimated_ms_high": 9.32,
        "estimate_model": "cortex-a72 timing model",
    }  # fmt: skip
    raw = {"samples_ns": [420_000_000, 431_000_000]}
    measurement = Measurement(figures, "emulated", raw)
    verdict = decide("latency", figures, GateSpec(latency_p90_ms_max=10.0), "rpi4", "emulated")
    made: dict[str, Any] = record("harness.toml::latency[vad@rpi4]", "latency", "vad", "rpi4",
                                  verdict, measurement, fidelity="emulated")  # fmt: skip
    return made


def test_reports_call_a_board_estimate_estimated_at_one_precision() -> None:
    from harness.report import html, markdown
    from harness.report.terminal import rows

    record = _latency_on_rpi4()
    document = {"results": [record], "devices": [{"name": "rpi4"}]}
    text = markdown.render(document)
    assert "estimated 9.3 ms [5.3, 9.3] · estimated‡" in text
    assert "‡ estimated" in text and "† emulated" not in text
    page = html.render(document)
    assert "Estimated latency on rpi4" in page and "QEMU wall-clock" not in page
    (row,) = rows([record])
    assert row[6] == "estimated"


def test_a_multi_line_runtime_error_is_whole_and_once() -> None:
    from harness.report import wording
    from harness.report.terminal import rows
    from harness.results import ERROR, Verdict, record

    error = (
        "vad.onnx on rpi4: Fail: [ONNXRuntimeError] : 1 : FAIL : Non-zero status code\n"
        "Status Message: Input initial_h must have shape {1,3,128}. Actual:{1,1,128}"
    )
    made = record("harness.toml::accuracy[vad@rpi4]", "accuracy", "vad", "rpi4",
                  Verdict(ERROR, (), (error,)), None, fidelity="emulated", error=error)  # fmt: skip
    (row,) = rows([made])
    assert row[-1].endswith("⏎ Status Message: Input initial_h must have shape {1,3,128}. "
                            "Actual:{1,1,128}")  # fmt: skip
    assert wording.reasons(made) == [
        error.replace("\n", " ⏎ "),
    ]


# 6. A stored baseline of an identical model is not a change.


def test_a_stored_baseline_of_an_identical_model_is_no_change() -> None:
    """Two sessions of one model, each steady within itself (chunks within 2%), one process
    landing 8% lower than the other: the comparison once read "better: -8.0% [-13.4%, -3.9%]".
    The session level's own spread (STORED_SESSION_SD, measured) is part of the interval."""
    from harness import stats
    from harness.report.digest import changes
    from harness.results import PASS, Measurement, Verdict, record
    from harness.suites.latency import STORED_SESSION_SD

    rng = np.random.default_rng(3)
    base = 1e6 * np.exp(rng.normal(0.0, 0.02, 20))
    new = 1e6 * np.exp(rng.normal(np.log(0.92), 0.02, 20))
    alone = stats.unpaired_ratio(base, new, 0.95)
    assert alone.high < 1.0  # chunks alone: a change, on one observation of two sessions
    estimate = stats.unpaired_ratio(base, new, 0.95, STORED_SESSION_SD)
    assert estimate.low < 1.0 < estimate.high
    figures = {"p90_ms": 0.92, "ratio": estimate.ratio, "ratio_low": estimate.low,
               "ratio_high": estimate.high, "paired": False}  # fmt: skip
    made = record("harness.toml::latency[m@host]", "latency", "m", "host", Verdict(PASS, ()),
                  Measurement(figures, "measured"), fidelity="measured")  # fmt: skip
    assert changes([made]) == []


# Every suite answers them right: one-value outputs, state kept inside a model.


def test_a_one_value_output_is_the_probability_of_class_one(
    worker: WorkerClient,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A VAD's speech probability: class 1 where it reaches 0.5 (argmax of one value is 0)."""
    import onnxruntime as ort

    model = onnx_models.streaming_vad(tmp_path / "vad.onnx")
    dataset = _stream(tmp_path, rows=40)
    load(worker, model, dataset=str(dataset), input_values={"sr": 16000})
    result = worker.request("evaluate", TIMEOUT, model_id="m", task="classification")
    data = np.load(dataset)
    session = ort.InferenceSession(str(model))
    expected = [
        int(session.run(["output"], {"input": x[None], "state": s, "sr": np.array(16000)})[0][0, 0]
            >= 0.5)
        for x, s in zip(data["X_input"], data["X_state"], strict=True)
    ]  # fmt: skip
    assert result["top1"] == expected and 0 < sum(expected) < len(expected)


def test_state_kept_inside_a_model_is_cleared_before_each_evaluated_sample(
    worker: WorkerClient,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A TFLite streaming model (state in a resource variable, y = x + state): each sample is
    answered from the initial state, so a board answering rows 3 and 1 gives what the host
    gives them in order."""
    from test_robustness import streaming_accumulator

    model = streaming_accumulator(tmp_path / "stream.tflite")
    x = np.arange(5, dtype=np.float32)[:, None, None] * np.ones((5, 1, 4), np.float32)
    np.savez(tmp_path / "d.npz", X=x, y=np.zeros((5, 4), np.float32))
    load(worker, model, dataset=str(tmp_path / "d.npz"))
    every = worker.request("evaluate", TIMEOUT, model_id="m", task="regression")["values"]
    np.testing.assert_array_equal(every, x.reshape(5, 4))  # no sample sees another's state
