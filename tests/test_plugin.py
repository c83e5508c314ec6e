"""The pytest plugin end to end, through pytester, on real ONNX models on the host device."""

from __future__ import annotations

import json
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from harness.modelgen import onnx as onnx_models

pytest_plugins = ["pytester"]

FAST_LATENCY = (
    "[latency]\nsamples = 40\nmin_samples = 5\ntime_budget_s = 2\nwarmup = 2\n"
    "[robustness]\nexamples = 5\n"
)


def write_repo(root: Path, gates: str = "", extra: str = "", model_extra: str = "") -> Path:
    """A model repo: an MLP, a dataset labelled by the model itself (accuracy 1.0), a config."""
    (root / "models").mkdir(exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    model = onnx_models.mlp(root / "models" / "mlp.onnx")
    x = np.random.default_rng(1).standard_normal((40, 16)).astype(np.float32)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    y = np.array([int(np.argmax(session.run(None, {"input": row[None]})[0])) for row in x])
    np.savez(root / "data" / "test.npz", X=x, y=y)
    (root / "harness.toml").write_text(
        textwrap.dedent(
            """\
            devices = ["host"]
            {extra}
            {latency}
            [[models]]
            name = "mlp"
            path = "models/mlp.onnx"
            dataset = "data/test.npz"
            {model_extra}
            [models.gates]
            {gates}
            """
        ).format(extra=extra, latency=FAST_LATENCY, gates=gates, model_extra=model_extra)
    )
    return root


@pytest.fixture
def repo(pytester: pytest.Pytester) -> Path:
    return write_repo(pytester.path, gates="accuracy_min = 0.9\nsize_kb_max = 64")


def test_options_are_in_help(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(
        ["*--device=NAME*", "*--harness-config=PATH*", "*--harness-json=PATH*"]
    )


def test_item_ids_name_suite_model_and_device(pytester: pytest.Pytester, repo: Path) -> None:
    result = pytester.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(
        [
            "harness.toml::size[[]mlp@host[]]",
            "harness.toml::operators[[]mlp@host[]]",
            "harness.toml::accuracy[[]mlp@host[]]",
            "harness.toml::latency[[]mlp@host[]]",
            "harness.toml::memory[[]mlp@host[]]",
            "harness.toml::robustness[[]mlp@host[]]",
        ]
    )
    assert result.ret == 0


def test_passing_gates_exit_zero_and_print_the_table(pytester: pytest.Pytester, repo: Path) -> None:
    result = pytester.runpytest("--device=host")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(
        [
            "*harness: config*harness.toml | devices host (measured) | seed 0*",
            "*harness gates*",
            "*device*model*suite*figure*threshold*verdict*fidelity*",
            "*host*mlp*accuracy*accuracy 1.0000*accuracy_min 0.9000*PASS*measured*",
            "*host*mlp*latency*p90 *ms*NO GATE*measured*",
        ]
    )


def test_failing_gate_fails_its_item_with_the_reason(pytester: pytest.Pytester) -> None:
    write_repo(pytester.path, gates="accuracy_min = 0.9\nlatency_p90_ms_max = 0.000001")
    result = pytester.runpytest()
    assert result.ret == 1
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.re_match_lines(
        [r".*latency\[mlp@host\]: latency p90 \d+\.\d{3} ms > 0\.000 ms \(host, measured, n=\d+\)"]
    )


def test_raising_accuracy_min_above_the_model_fails(pytester: pytest.Pytester) -> None:
    write_repo(pytester.path, gates="accuracy_min = 1.0")
    assert pytester.runpytest().ret == 0
    write_repo(pytester.path, gates="accuracy_min = 1.0\nmae_max = 0.0")  # mae: not this task
    path = pytester.path / "data" / "test.npz"
    data = dict(np.load(path))
    data["y"] = (data["y"] + 1) % 4  # every label now wrong
    np.savez(path, **data)
    result = pytester.runpytest("-k", "accuracy")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*accuracy 0.0000 < 1.0000 (host, measured, n=40)*"])


def test_json_has_raw_samples_fidelity_and_versions(pytester: pytest.Pytester, repo: Path) -> None:
    out = pytester.path / "out" / "results.json"
    pytester.runpytest(f"--harness-json={out}").assert_outcomes(passed=6)
    document = json.loads(out.read_text())
    by_suite = {r["suite"]: r for r in document["results"]}
    latency = by_suite["latency"]
    assert latency["fidelity"] == "measured"
    assert len(latency["raw"]["samples_ns"]) == latency["figures"]["n"] >= 5
    assert all(isinstance(s, int) and s > 0 for s in latency["raw"]["samples_ns"])
    assert latency["worker"]["versions"]["onnxruntime"] == ort.__version__
    assert by_suite["memory"]["figures"]["peak_mb"] > by_suite["memory"]["figures"]["empty_peak_mb"]
    assert document["devices"][0]["name"] == "host"


def test_junit_gets_figures_as_properties(pytester: pytest.Pytester, repo: Path) -> None:
    pytester.runpytest("--junitxml=junit.xml").assert_outcomes(passed=6)
    tree = ET.parse(pytester.path / "junit.xml")
    props = {
        (case.get("name"), p.get("name")): p.get("value")
        for case in tree.iter("testcase")
        for p in case.iter("property")
    }
    assert props[("accuracy[mlp@host]", "harness.accuracy")] == "1.0"
    assert props[("latency[mlp@host]", "harness.fidelity")] == "measured"
    assert float(props[("latency[mlp@host]", "harness.p90_ms")]) > 0
    assert not any(name == "harness" for _, name in props)  # the full record stays in the JSON


def test_xdist_two_workers_collect_every_result(pytester: pytest.Pytester, repo: Path) -> None:
    out = pytester.path / "results.json"
    result = pytester.runpytest_subprocess("-n", "2", f"--harness-json={out}")
    result.assert_outcomes(passed=6)
    assert sorted(r["suite"] for r in json.loads(out.read_text())["results"]) == [
        "accuracy",
        "latency",
        "memory",
        "operators",
        "robustness",
        "size",
    ]
    table = [line for line in result.outlines if " mlp " in line and "host" in line]
    assert {line.split()[2] for line in table} == {"size", "operators", "accuracy", "latency",
                                                "memory", "robustness"}  # fmt: skip


def test_custom_test_runs_the_model_through_the_fixture(
    pytester: pytest.Pytester, repo: Path
) -> None:
    pytester.makepyfile(
        test_custom="""
        import numpy as np

        def test_probabilities_sum_to_one(harness_model, harness_device):
            model = harness_model("mlp")
            out = model.run({"input": np.ones((1, 16), np.float32)})
            assert harness_device.name == "host"
            assert abs(float(out["probabilities"].sum()) - 1.0) < 1e-5
        """
    )
    result = pytester.runpytest("-k", "custom", "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_probabilities_sum_to_one[[]host[]] PASSED*"])


# --- every config mistake gets a message naming the file, the key and the fix ---------------


def test_unknown_key_suggests_the_nearest(pytester: pytest.Pytester) -> None:
    write_repo(pytester.path, gates="acuracy_min = 0.9")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*harness.toml: model 'mlp', gates: unknown key 'acuracy_min'; "
            "did you mean 'accuracy_min'?"
        ]
    )


def test_unknown_top_level_key(pytester: pytest.Pytester) -> None:
    write_repo(pytester.path, extra='device = ["host"]')
    result = pytester.runpytest()
    result.stderr.fnmatch_lines(["*harness.toml: unknown key 'device'; did you mean 'devices'?"])


def test_unknown_device_lists_the_known_names(pytester: pytest.Pytester, repo: Path) -> None:
    result = pytester.runpytest("--device=rpi5")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--device: unknown device 'rpi5'; known devices: *host*rpi-zero-2w, rpi4, x86-64*"]
    )


def test_unknown_device_in_gate_overrides(pytester: pytest.Pytester) -> None:
    write_repo(pytester.path, model_extra="[models.devices.rpi3]\nlatency_p90_ms_max = 1")
    result = pytester.runpytest()
    result.stderr.fnmatch_lines(
        ["*model 'mlp': gate overrides for unknown device 'rpi3'; known devices: *"]
    )


def test_missing_model_file_fails_its_items_and_names_the_key(pytester: pytest.Pytester) -> None:
    write_repo(pytester.path)
    (pytester.path / "models" / "mlp.onnx").unlink()
    result = pytester.runpytest()
    result.assert_outcomes(failed=6)
    result.stdout.fnmatch_lines(
        [
            "*size[[]mlp@host[]]: model file */models/mlp.onnx does not exist "
            "(path = 'models/mlp.onnx' in */harness.toml)*"
        ]
    )


def test_missing_dataset_file(pytester: pytest.Pytester) -> None:
    write_repo(pytester.path)
    (pytester.path / "data" / "test.npz").unlink()
    result = pytester.runpytest()
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        ["*dataset */data/test.npz does not exist (dataset = 'data/test.npz' in *harness.toml)*"]
    )


def test_dataset_without_labels(pytester: pytest.Pytester) -> None:
    """Inputs without labels (a detector's scenes) are checked for NaN/inf, not scored; an
    accuracy gate on them asks for `y`."""
    write_repo(pytester.path)
    np.savez(pytester.path / "data" / "test.npz", X=np.zeros((4, 16), np.float32))
    result = pytester.runpytest("-k", "accuracy")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*host*mlp*accuracy*nonfinite 0*nonfinite_max*PASS*"])
    write_repo(pytester.path, gates="accuracy_min = 0.9")
    np.savez(pytester.path / "data" / "test.npz", X=np.zeros((4, 16), np.float32))
    result = pytester.runpytest()
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*accuracy[[]mlp@host[]]: */test.npz: no array 'y' with the labels, which "
            "accuracy_min needs (arrays there: X)"
        ]
    )


def test_dataset_without_inputs(pytester: pytest.Pytester) -> None:
    write_repo(pytester.path)
    np.savez(pytester.path / "data" / "test.npz", y=np.zeros(4, np.int64))
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(
        [
            "*model input 'input' (float32 [[]1, 16[]]) gets no data: add array X_input to "
            "*test.npz*input_values = { input = 0 }*"
        ]
    )
    assert result.ret == 1


def test_dataset_with_wrong_sample_shape(pytester: pytest.Pytester) -> None:
    write_repo(pytester.path)
    np.savez(pytester.path / "data" / "test.npz", X=np.zeros((4, 15), np.float32), y=np.zeros(4))
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(
        [
            "*test.npz: array X [[]4, 15[]]: one sample [[]15[]] does not fit model input 'input' "
            "[[]1, 16[]]*"
        ]
    )


def test_bad_toml_names_the_file(pytester: pytest.Pytester) -> None:
    (pytester.path / "harness.toml").write_text("devices = [host]\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*harness.toml: not valid TOML: *"])


def test_pyproject_tool_harness_table_is_read(pytester: pytest.Pytester) -> None:
    write_repo(pytester.path, gates="accuracy_min = 0.5")
    body = (pytester.path / "harness.toml").read_text()
    (pytester.path / "harness.toml").unlink()
    lines = []
    for line in body.splitlines():
        if line.startswith("[[models]]"):
            line = "[[tool.harness.models]]"
        elif line.startswith("[models."):
            line = "[tool.harness.models." + line[len("[models.") :]
        elif line.startswith("[latency]"):
            line = "[tool.harness.latency]"
        lines.append(line)
    (pytester.path / "pyproject.toml").write_text("[tool.harness]\n" + "\n".join(lines) + "\n")
    result = pytester.runpytest("pyproject.toml", "-q")
    result.assert_outcomes(passed=6)


def test_without_config_the_plugin_stays_out_of_the_way(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_ok():\n    assert True\n")
    pytester.runpytest().assert_outcomes(passed=1)
    result = pytester.runpytest("--device=host")
    result.stderr.fnmatch_lines(["*--device given but no harness config found*"])
