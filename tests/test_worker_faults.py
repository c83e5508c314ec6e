"""Real worker faults: a malformed model, a model that really hangs, a worker killed by a signal.
Each becomes a failed item that says so, and the session goes on with the other items."""

from __future__ import annotations

import os
import signal
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from harness.backends.base import WorkerClient, WorkerCrashed, WorkerError, WorkerTimeout
from harness.backends.local import LocalBackend
from harness.devices import load_profiles
from harness.modelgen import onnx as onnx_models

pytest_plugins = ["pytester"]


def start() -> WorkerClient:
    client = WorkerClient(LocalBackend().start(load_profiles()["host"], [], 1), "host")
    client.request("hello", 60, formats=["onnx"])
    return client


def test_malformed_model_is_a_load_error_and_the_worker_lives_on(tmp_path: Path) -> None:
    good = onnx_models.mlp(tmp_path / "good.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])  # truncated
    client = start()
    with pytest.raises(WorkerError, match="onnxruntime cannot load it"):
        client.request("load", 60, model_id="bad", path=str(bad), threads=1)
    info = client.request("load", 60, model_id="good", path=str(good), threads=1)
    assert info["outputs"][0]["name"] == "probabilities"
    client.close()


def test_a_hanging_model_times_out_and_the_worker_is_killed(tmp_path: Path) -> None:
    model = onnx_models.slow(tmp_path / "slow.onnx")  # ~100 s per inference
    client = start()
    with pytest.raises(WorkerTimeout, match=r"gave no answer to 'load' within 3 s and was killed"):
        client.request("load", 3, model_id="m", path=str(model), threads=1)
    assert client.target.channel.ended() == "killed by SIGKILL"


def test_a_worker_killed_by_a_signal_is_reported_with_it(tmp_path: Path) -> None:
    model = onnx_models.slow(tmp_path / "slow.onnx", iterations=200)
    client = start()
    client.request("load", 60, model_id="m", path=str(model), threads=1)
    pid = client.request("hello", 60, formats=[])["pid"]
    threading.Timer(0.5, os.kill, (pid, signal.SIGSEGV)).start()
    with pytest.raises(WorkerCrashed, match=r"worker on host killed by SIGSEGV during 'bench'"):
        client.request("bench", 60, model_id="m", samples=1000)


def test_faulty_models_fail_their_items_and_the_session_goes_on(pytester: pytest.Pytester) -> None:
    root = pytester.path
    onnx_models.mlp(root / "good.onnx")
    (root / "garbage.onnx").write_bytes(b"this is not a protobuf at all\x00\xff" * 10)
    (root / "image.tflite").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))  # not a flatbuffer
    onnx_models.slow(root / "slow.onnx")
    np.savez(root / "d.npz", X=np.zeros((3, 16), np.float32), y=np.zeros(3, np.int64))
    (root / "harness.toml").write_text(
        textwrap.dedent("""\
        timeout_s = 4
        [robustness]
        examples = 0
        [latency]
        samples = 20
        min_samples = 10
        time_budget_s = 1
        [[models]]
        name = "garbage"
        path = "garbage.onnx"
        [[models]]
        name = "image"
        path = "image.tflite"
        [[models]]
        name = "slow"
        path = "slow.onnx"
        [[models]]
        name = "good"
        path = "good.onnx"
        dataset = "d.npz"
        [models.gates]
        accuracy_min = 0.0
        """)
    )
    result = pytester.runpytest("-p", "no:randomly")
    # garbage/image: size passes (the file is there), operators, latency and memory fail;
    # slow: the load's first inference hangs past timeout_s; good: all four pass.
    result.assert_outcomes(passed=9, failed=8)
    result.stdout.fnmatch_lines(
        [
            "*latency[[]garbage@host[]]: garbage.onnx on host: onnxruntime cannot load it:*",
            "*latency[[]image@host[]]: image.tflite on host: ai-edge-litert cannot load it:*",
            "*latency[[]slow@host[]]: worker on host gave no answer to 'load' within 4 s and was "
            "killed (raise timeout_s*",
        ]
    )
