"""The Docker backend: pure parts (stream demux, container config, binfmt and exit diagnosis)
and real containers on a real engine (x86-64 native, rpi4 and rpi-zero-2w emulated with QEMU).

Container tests are few and small: emulated onnxruntime is 15-30x slower than native.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.backends.base import BackendUnavailable, WorkerClient, WorkerCrashed
from harness.backends.docker import (
    HARNESS_DIR,
    DockerBackend,
    FrameDemuxer,
    binfmt_problem,
    container_config,
    describe_state,
)
from harness.devices import DeviceProfile, load_profiles

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "examples" / "digits"
PROFILES = load_profiles()
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


# -- pure parts ------------------------------------------------------------------------------
def test_demux_splits_streams_fed_a_byte_at_a_time() -> None:
    data = frame(1, b'{"id": 1}\n') + frame(2, b"warning: x\n") + frame(1, b"") + frame(1, b"ab")
    demux = FrameDemuxer()
    frames: list[tuple[int, bytes]] = []
    for index in range(len(data)):
        frames += demux.feed(data[index : index + 1])
    assert frames == [(1, b'{"id": 1}\n'), (2, b"warning: x\n"), (1, b""), (1, b"ab")]
    assert demux.pending == 0


def test_demux_keeps_a_partial_frame_until_it_is_complete() -> None:
    demux = FrameDemuxer()
    big = bytes(range(256)) * 1000
    data = frame(1, big)
    assert demux.feed(data[:5]) == []
    assert demux.feed(data[5:100]) == []
    assert demux.pending == 100
    assert demux.feed(data[100:] + frame(2, b"e")) == [(1, big), (2, b"e")]


def test_container_config_of_an_emulated_board(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    data = tmp_path / "d.npz"
    data.write_bytes(b"x")
    rpi4 = PROFILES["rpi4"]
    config, path_map = container_config(rpi4, [model, data, model], 3, "img:tag", host_cpus=2)
    env = config["environment"]
    assert env["QEMU_CPU"] == "cortex-a72"
    assert env["OMP_NUM_THREADS"] == "3" and env["PYTHONHASHSEED"] == "0"
    assert env["PYTHONPATH"] == "/opt/harness:/opt/site"
    assert config["nano_cpus"] == 2_000_000_000  # 4 cores wanted, the machine has 2
    assert config["mem_limit"] == config["memswap_limit"] == "4096m"
    assert config["stdin_open"] and not config["tty"]
    assert not config["detach"]  # so that the SDK sets StdinOnce
    assert config["labels"]["harness"] == "1"
    assert config["network_mode"] == "none"
    assert config["platform"] == "linux/arm64"
    assert "device_requests" not in config
    mounts = {m["Target"]: m for m in config["mounts"]}
    assert mounts["/proc/cpuinfo"]["Source"] == str(rpi4.cpuinfo)
    assert mounts["/opt/harness/harness"]["Source"] == str(HARNESS_DIR)
    assert all(m["ReadOnly"] for m in mounts.values())
    assert path_map == {model.resolve(): "/data/0/m.onnx", data.resolve(): "/data/0/d.npz"}
    assert {mounts[p]["Source"] for p in path_map.values()} == {str(model), str(data)}


def test_container_config_of_native_and_gpu_devices() -> None:
    x86, _ = container_config(PROFILES["x86-64"], [], 2, "img:tag", host_cpus=16)
    assert "QEMU_CPU" not in x86["environment"]
    assert x86["nano_cpus"] == 2_000_000_000
    assert "/proc/cpuinfo" not in {m["Target"] for m in x86["mounts"]}
    gpu, _ = container_config(PROFILES["cuda-gpu"], [], 4, "img:tag")
    (request,) = gpu["device_requests"]
    assert request["Count"] == -1 and request["Capabilities"] == [["gpu"]]
    unlimited = dataclasses.replace(PROFILES["x86-64"], cpus=0, memory_mb=None)
    config, _ = container_config(unlimited, [], 1, "img:tag")
    assert not {"nano_cpus", "mem_limit", "memswap_limit"} & set(config)


def test_emulated_profile_without_a_cpu_model_gets_no_empty_qemu_cpu() -> None:
    profile = dataclasses.replace(PROFILES["rpi4"], cpu="")
    config, _ = container_config(profile, [], 1, "img:tag")
    assert "QEMU_CPU" not in config["environment"]


def test_binfmt_problems_name_the_fix(tmp_path: Path) -> None:
    assert "not mounted" in str(binfmt_problem("arm64", tmp_path))
    (tmp_path / "status").write_text("enabled\n")
    missing = binfmt_problem("arm64", tmp_path)
    assert missing and "no qemu-aarch64" in missing and "setup-docker.sh" in missing
    entry = tmp_path / "qemu-aarch64"
    entry.write_text("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: P\n")
    assert "F flag" in str(binfmt_problem("arm64", tmp_path))
    entry.write_text("disabled\nflags: PF\n")
    assert "disabled" in str(binfmt_problem("arm64", tmp_path))
    entry.write_text("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\n")
    assert binfmt_problem("arm64", tmp_path) is None


def test_describe_state() -> None:
    zero = PROFILES["rpi-zero-2w"]
    oom = {"Running": False, "OOMKilled": True, "ExitCode": 137}
    assert describe_state(oom, zero, False) == "OOM-killed at 512 MB (rpi-zero-2w)"
    assert describe_state({"ExitCode": 139}, zero, False) == "killed by SIGSEGV"
    assert describe_state({"ExitCode": 1}, zero, False) == "exited with status 1"
    assert "killed by the harness" in describe_state({"ExitCode": 137}, zero, True)


def test_no_engine_is_unavailable_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import harness.backends.docker as backend

    monkeypatch.setattr(backend, "_CLIENT", None)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(BackendUnavailable) as error:
        DockerBackend().start(PROFILES["x86-64"], [], 1)
    assert "no Docker engine answers" in str(error.value)
    assert "scripts/setup-docker.sh" in str(error.value)
    assert not error.value.skip


# -- real containers -------------------------------------------------------------------------
def built(client: Any, name: str) -> str:
    """The device's image, built if missing (a cache hit after `harness images build`, which
    .ci/run does first). Cannot build (not root, no debootstrap): skip here, fail under CI."""
    from harness.images import BuildError, build

    try:
        return build(PROFILES[name], client=client)
    except BuildError as exc:
        if IN_CI:
            pytest.fail(f"cannot build the {name} image: {exc}", pytrace=False)
        pytest.skip(f"cannot build the {name} image here: {exc}")


@pytest.fixture(scope="module")
def x86_image(docker_client: Any) -> str:
    return built(docker_client, "x86-64")


@pytest.fixture(scope="module")
def arm64_image(docker_client: Any, arm64_binfmt: None) -> str:
    return built(docker_client, "rpi4")


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The digits example's model and test set, or a generated stand-in of the same shape."""
    model, data = DIGITS / "models" / "digits.onnx", DIGITS / "data" / "digits_test.npz"
    if model.exists() and data.exists():
        return model, data
    from harness.modelgen import onnx as gen

    folder = tmp_path_factory.mktemp("digits")
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal((64, 10)).astype(np.float32)]
    gen.mlp(folder / "digits.onnx", weights, [np.zeros(10, np.float32)])
    x = rng.standard_normal((40, 64)).astype(np.float32)
    np.savez(folder / "digits_test.npz", X=x, y=np.argmax(x @ weights[0], axis=1))
    return folder / "digits.onnx", folder / "digits_test.npz"


def host_top1(model: Path, data: Path, count: int) -> list[int]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    x = np.load(data)["X"][:count].astype(np.float32)
    name = session.get_inputs()[0].name
    outputs = [o.name for o in session.get_outputs()]
    index = outputs.index("probabilities") if "probabilities" in outputs else 0
    return [int(np.argmax(session.run(None, {name: x[i : i + 1]})[index])) for i in range(count)]


def start(profile: DeviceProfile, files: list[Path], threads: int = 1) -> tuple[WorkerClient, Any]:
    target = DockerBackend().start(profile, files, threads)
    return WorkerClient(target, profile.name), target


def check_limits(docker_client: Any, target: Any, profile: DeviceProfile) -> None:
    container = docker_client.containers.get(target.limits["container_id"])
    host = container.attrs["HostConfig"]
    cpus = min(profile.cpus, docker_client.info()["NCPU"])
    assert host["NanoCpus"] == cpus * 1_000_000_000 == target.limits["cpus"] * 1e9
    assert host["Memory"] == host["MemorySwap"] == profile.memory_mb * 2**20
    assert container.labels["harness"] == "1"
    env = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])
    assert env["PYTHONHASHSEED"] == "0"
    if profile.emulated:
        assert env["QEMU_CPU"] == profile.cpu
        mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
        assert mounts["/proc/cpuinfo"]["Source"] == str(profile.cpuinfo)


def test_x86_64_container_runs_the_worker(
    docker_client: Any, x86_image: str, digits: tuple[Path, Path]
) -> None:
    import docker.errors

    profile = PROFILES["x86-64"]
    model, data = digits
    started = time.monotonic()
    worker, target = start(profile, [model, data], threads=2)
    try:
        hello = worker.request("hello", 60, formats=["onnx"])
        assert time.monotonic() - started < 30
        assert hello["machine"] == "x86_64"
        assert hello["versions"]["onnxruntime"] == __import__("onnxruntime").__version__
        assert hello["versions"]["numpy"] == np.__version__
        assert target.fidelity == "measured"
        assert target.limits["image"] == x86_image
        check_limits(docker_client, target, profile)
        loaded = worker.request(
            "load", 60, model_id="m", path=target.remote(model), threads=2,
            dataset=target.remote(data), output="probabilities",
        )  # fmt: skip
        assert loaded["samples"] > 0
        result = worker.request("evaluate", 60, model_id="m", task="classification", limit=40)
        assert result["top1"] == host_top1(model, data, 40)  # native: same kernels as the host
        bench = worker.request("bench", 60, model_id="m", samples=50, warmup=5)
        assert len(bench["samples_ns"]) == 50 and min(bench["samples_ns"]) > 0
    finally:
        worker.close()
    assert target.channel.ended() == "exited with status 0"
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(target.limits["container_id"])


def test_rpi4_container_runs_the_worker_under_qemu(
    docker_client: Any, arm64_image: str, digits: tuple[Path, Path]
) -> None:
    profile = PROFILES["rpi4"]
    model, data = digits
    files = [model, data]
    int8 = DIGITS / "models" / "digits_int8.tflite"
    if int8.exists():
        files.append(int8)
    worker, target = start(profile, files)
    try:
        hello = worker.request("hello", 120, formats=["onnx", "tflite"])
        assert hello["machine"] == "aarch64"
        assert hello["versions"]["onnxruntime"] == __import__("onnxruntime").__version__
        assert hello["versions"]["numpy"] == np.__version__
        assert target.fidelity == "emulated"
        assert target.limits["qemu_cpu"] == "cortex-a72"
        assert target.limits["platform"] == "linux/arm64"
        check_limits(docker_client, target, profile)
        worker.request(
            "load", 120, model_id="m", path=target.remote(model), threads=1,
            dataset=target.remote(data), output="probabilities",
        )  # fmt: skip
        result = worker.request("evaluate", 120, model_id="m", task="classification", limit=30)
        assert result["nonfinite"] == 0
        # Other kernels (aarch64, another CPU model): top-1 agrees, last digits may not.
        agree = np.mean(np.array(result["top1"]) == np.array(host_top1(model, data, 30)))
        assert agree >= 0.95
        bench = worker.request("bench", 120, model_id="m", samples=10, warmup=2)
        assert len(bench["samples_ns"]) == 10
        if int8.exists():
            loaded = worker.request(
                "load", 120, model_id="q", path=target.remote(int8), threads=1,
                dataset=target.remote(data), output="probabilities",
            )  # fmt: skip
            assert loaded["runtime"]
            q = worker.request("evaluate", 120, model_id="q", task="classification", limit=30)
            labels = np.load(data)["y"][:30]
            assert np.mean(np.array(q["top1"]) == labels) >= 0.8
    finally:
        worker.close()
    assert target.channel.ended() == "exited with status 0"


def test_oom_kill_names_the_device_memory(
    docker_client: Any, arm64_image: str, tmp_path: Path
) -> None:
    from harness.modelgen.onnx import huge_alloc

    model = huge_alloc(tmp_path / "huge.onnx")  # 1 GiB float32 tensor, allocated at run time
    profile = PROFILES["rpi-zero-2w"]
    assert profile.memory_mb == 512
    worker, target = start(profile, [model])
    try:
        worker.request("hello", 120, formats=["onnx"])
        with pytest.raises(WorkerCrashed) as crash:
            worker.request("load", 300, model_id="huge", path=target.remote(model), threads=1)
        assert "OOM-killed at 512 MB (rpi-zero-2w)" in str(crash.value)
    finally:
        worker.close()
    assert target.channel.ended() == "OOM-killed at 512 MB (rpi-zero-2w)"


def test_qemu_cpu_reaches_the_emulator(docker_client: Any, arm64_image: str) -> None:
    """The CPU model the profile names is the one the emulated program sees (HWCAP bits)."""
    import docker.types

    script = (
        "import struct\n"
        "data = open('/proc/self/auxv', 'rb').read()\n"
        "pairs = struct.iter_unpack('<QQ', data)\n"
        "print(dict(pairs)[16])\n"  # AT_HWCAP
    )
    hwcap = {}
    host_cpus = docker_client.info()["NCPU"]
    for cpu in ("cortex-a72", "max"):
        profile = dataclasses.replace(PROFILES["rpi4"], cpu=cpu)
        config, _ = container_config(profile, [], 1, arm64_image, host_cpus)
        config.update(
            command=["python3", "-c", script],
            stdin_open=False,
            log_config=docker.types.LogConfig(type="json-file"),
            detach=False,
            remove=True,
        )
        hwcap[cpu] = int(docker_client.containers.run(**config))
    atomics = 1 << 8  # HWCAP_ATOMICS: ARMv8.1 LSE, which a Cortex-A72 lacks
    assert not hwcap["cortex-a72"] & atomics
    assert hwcap["max"] & atomics


def test_missing_image_says_how_to_build_it(
    docker_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import harness.images.recipe as recipe

    monkeypatch.setattr(recipe, "RECIPE_VERSION", 10**6)  # a recipe nobody has built
    with pytest.raises(BackendUnavailable) as error:
        DockerBackend().start(PROFILES["x86-64"], [], 1)
    message = str(error.value)
    assert "is not built" in message
    assert "harness images build --device x86-64" in message
    assert not error.value.skip


def test_an_emulated_arm64_board_must_name_its_core(docker_client: Any, arm64_binfmt: None) -> None:
    """QEMU's default `max` CPU gave the int8 digits model 0.2444 accuracy (0.9733 on a
    Cortex-A72): an emulated arm64 board without `cpu` is refused, saying what to add."""
    with pytest.raises(BackendUnavailable) as error:
        DockerBackend().start(dataclasses.replace(PROFILES["rpi4"], cpu=""), [], 1)
    assert "names no cpu" in str(error.value) and 'cpu = "cortex-a72"' in str(error.value)
    assert not error.value.skip


def test_gpu_devices_skip_where_there_is_no_gpu(docker_client: Any) -> None:
    if Path("/dev/nvidiactl").exists():
        pytest.skip("this machine has an NVIDIA GPU")
    for name in ("cuda-gpu", "jetson-orin-nano"):
        with pytest.raises(BackendUnavailable) as error:
            DockerBackend().start(PROFILES[name], [], 1)
        assert error.value.skip, name
    with pytest.raises(BackendUnavailable, match="QEMU cannot emulate"):
        DockerBackend().start(PROFILES["jetson-orin-nano"], [], 1)


def test_crash_reports_exit_status_and_last_stderr_lines(
    docker_client: Any, x86_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import harness.backends.docker as backend

    script = "import sys; sys.stderr.write('about to fail\\nboom\\n'); sys.exit(3)"
    monkeypatch.setattr(backend, "WORKER_COMMAND", ["python3", "-c", script])
    worker, target = start(PROFILES["x86-64"], [])
    with pytest.raises(WorkerCrashed) as crash:
        worker.request("hello", 30, formats=[])
    message = str(crash.value)
    assert "exited with status 3 during 'hello'" in message
    assert "about to fail\nboom" in message


def test_a_dropped_connection_ends_the_worker(docker_client: Any, x86_image: str) -> None:
    """A pytest killed without closing its workers leaves no container running (StdinOnce)."""
    worker, target = start(PROFILES["x86-64"], [])
    worker.request("hello", 60, formats=[])
    container = docker_client.containers.get(target.limits["container_id"])
    # What the peer sees when the pytest process dies: the connection is gone.
    target.channel._sock.shutdown(socket.SHUT_RDWR)
    try:
        container.wait(timeout=20)
        container.reload()
        assert container.status == "exited"
    finally:
        container.remove(force=True)


def test_timeout_kills_and_removes_the_container(
    docker_client: Any, x86_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import docker.errors

    import harness.backends.docker as backend
    from harness.backends.base import WorkerTimeout

    monkeypatch.setattr(
        backend, "WORKER_COMMAND", ["python3", "-c", "import time; time.sleep(600)"]
    )
    worker, target = start(PROFILES["x86-64"], [])
    started = time.monotonic()
    with pytest.raises(WorkerTimeout):
        worker.request("hello", 1.0, formats=[])
    assert time.monotonic() - started < 15
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(target.limits["container_id"])
