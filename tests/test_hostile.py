"""Hostile input from a pull request: each case is a named failed item with a message that says
what is wrong and what to do, the rest of the session finishes, and nothing of the user's is
overwritten. (Truncated/corrupt models, hangs, crashes and OOM: test_worker_faults.py and
test_device_matrix.py; corrupt history: test_store.py; bad baselines: test_baseline.py.)"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.modelgen import onnx as onnx_models
from harness.modelgen import tflite as tflite_models

pytest_plugins = ["pytester"]

QUIET = "[robustness]\nexamples = 0\n[latency]\nsamples = 20\nmin_samples = 5\ntime_budget_s = 1\n"


def external_model(path: Path, location: str) -> None:
    """y = x + W with W stored as external data at `location` (written by hand: onnx's own
    helpers refuse locations outside the folder)."""
    weight = numpy_helper.from_array(np.ones((1, 4), np.float32), "W")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "W"], ["y"])],
        "external",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        # .harness/: harness's own; .cache/: pytester's HOME, where onnxruntime keeps a device id
        if p.is_file()
        and not {".harness", ".cache"} & set(p.parts)
        and not p.name.endswith(".json")
    }


def models_config(*entries: str) -> str:
    return QUIET + "".join(textwrap.dedent(entry) for entry in entries)


def test_external_data_outside_the_model_folder_is_refused_and_never_read(
    pytester: pytest.Pytester,
) -> None:
    root = pytester.path
    (root / "models").mkdir()
    # A FIFO: any attempt to open it would block this test forever.
    os.mkfifo(root / "secret.bin")
    external_model(root / "models" / "escape.onnx", "../secret.bin")
    external_model(root / "models" / "absolute.onnx", "/etc/passwd")
    (root / "models" / "w.bin").write_bytes(np.full(4, 2, np.float32).tobytes())
    external_model(root / "models" / "beside.onnx", "w.bin")
    (root / "harness.toml").write_text(
        models_config(
            '[[models]]\nname = "escape"\npath = "models/escape.onnx"\n',
            '[[models]]\nname = "absolute"\npath = "models/absolute.onnx"\n',
            '[[models]]\nname = "beside"\npath = "models/beside.onnx"\n',
        )
    )
    result = pytester.runpytest("-k", "memory", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*memory[[]escape@host[]]: escape.onnx: external data location '../secret.bin' points "
            "outside the model's folder */models; refused, and the file was not read*",
            "*memory[[]absolute@host[]]: absolute.onnx: external data location '/etc/passwd' "
            "points outside*",
        ]
    )


def test_pickled_npz_is_refused_and_never_unpickled(pytester: pytest.Pytester) -> None:
    root = pytester.path
    onnx_models.mlp(root / "mlp.onnx")
    marker = root / "unpickled"
    payload = np.array([Boom(str(marker))], dtype=object)
    np.savez(root / "evil.npz", X=np.zeros((2, 16), np.float32), y=payload)
    (root / "harness.toml").write_text(
        models_config('[[models]]\nname = "mlp"\npath = "mlp.onnx"\ndataset = "evil.npz"\n')
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*evil.npz: holds pickled Python objects, which harness never loads; save plain "
            "numeric arrays (np.savez with numeric dtypes)*"
        ]
    )
    assert not marker.exists()


class Boom:
    """Unpickling this creates a file: proof that something unpickled it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (Path.write_text, (Path(self.path), "unpickled!"))  # type: ignore[return-value]


def test_dataset_with_an_unusable_dtype(pytester: pytest.Pytester) -> None:
    onnx_models.mlp(pytester.path / "mlp.onnx")
    np.savez(pytester.path / "d.npz", X=np.full((3, 16), "a"), y=np.zeros(3, np.int64))
    (pytester.path / "harness.toml").write_text(
        models_config('[[models]]\nname = "mlp"\npath = "mlp.onnx"\ndataset = "d.npz"\n')
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-k", "accuracy")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*d.npz: array X [[]3, 16[]] is <U1 and model input 'input' is float32: harness cannot "
            "convert between them; store the array as float32*"
        ]
    )


def test_files_in_the_wrong_format_for_their_extension(pytester: pytest.Pytester) -> None:
    root = pytester.path
    tflite_models.add_mul(root / "real.tflite")
    shutil.copy(root / "real.tflite", root / "tflite-inside.onnx")
    onnx_models.mlp(root / "real.onnx")
    shutil.copy(root / "real.onnx", root / "onnx-inside.tflite")
    (root / "harness.toml").write_text(
        models_config(
            '[[models]]\nname = "a"\npath = "tflite-inside.onnx"\n',
            '[[models]]\nname = "b"\npath = "onnx-inside.tflite"\n',
        )
    )
    before = digest(root)
    result = pytester.runpytest("-p", "no:cacheprovider", "-k", "latency")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*latency[[]a@host[]]: tflite-inside.onnx on host: onnxruntime cannot load it:*",
            "*latency[[]b@host[]]: onnx-inside.tflite on host: ai-edge-litert cannot load it:*",
        ]
    )
    assert digest(root) == before  # nothing of the user's was changed


def test_concurrent_sessions_with_xdist_lose_no_history_rows(tmp_path: Path) -> None:
    onnx_models.mlp(tmp_path / "mlp.onnx")
    np.savez(tmp_path / "d.npz", X=np.zeros((4, 16), np.float32), y=np.zeros(4, np.int64))
    (tmp_path / "harness.toml").write_text(
        models_config('[[models]]\nname = "mlp"\npath = "mlp.onnx"\ndataset = "d.npz"\n')
    )
    before = digest(tmp_path)
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-n",
        "2",
        "--harness-json=shared.json",
    ]
    sessions = [
        subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(2)
    ]
    outputs = [session.communicate(timeout=300)[0].decode() for session in sessions]
    assert all(session.returncode == 0 for session in sessions), outputs
    with sqlite3.connect(tmp_path / ".harness" / "history.sqlite") as db:
        runs = db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        rows = db.execute("SELECT COUNT(DISTINCT run_id || suite) FROM figures").fetchone()[0]
    assert runs == 2
    assert rows == 2 * 5  # size, operators, accuracy, latency, memory: every row of both
    document = json.loads((tmp_path / "shared.json").read_text())  # whole, never interleaved
    assert len(document["results"]) == 5
    assert digest(tmp_path) == before
