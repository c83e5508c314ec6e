"""GGUF through llama.cpp: Debian sid's packages extracted into a runtime set, the worker run under
the set's own loader, libllama through ctypes. Real library, real models (the example's weights
written to GGUF and quantized by llama.cpp's own llama-quantize); nothing is mocked."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from harness import language_scores
from harness.backends.base import BackendUnavailable, WorkerClient, WorkerError
from harness.backends.local import LocalBackend
from harness.devices import load_profiles
from harness.images.llamacpp import LLAMA_CPP_VERSION, version_name
from harness.runtimes.llamacpp_set import tool_command, tool_environment

TIMEOUT = 300.0


@pytest.fixture
def host_worker(slm_models: Path, llama_cpp: Callable[[str], Path]) -> Iterator[WorkerClient]:
    llama_cpp("amd64")
    files = [slm_models / "models" / "slm-f16.gguf"]
    client = WorkerClient(LocalBackend().start(load_profiles()["host"], files, 1), "host")
    client.request("hello", TIMEOUT, formats=["gguf", "genai"])
    yield client
    client.close()


def load(client: WorkerClient, model_id: str, path: Path, **options: object) -> dict:  # type: ignore[type-arg]
    text_options = {"context": 256, **options} if path.suffix == ".gguf" else None
    return client.request(
        "load", TIMEOUT, model_id=model_id, path=str(path), threads=1, accelerator="none",
        text_options=text_options,
    )  # fmt: skip


def test_the_runtime_set_is_the_pinned_llama_cpp_with_its_own_loader(
    llama_cpp: Callable[[str], Path],
) -> None:
    for arch in ("amd64", "arm64"):
        folder = llama_cpp(arch)
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["llama_cpp"] == LLAMA_CPP_VERSION and folder.name.startswith(version_name())
        assert (folder / manifest["loader"]).is_file()
        assert any(name.startswith("libc6_") for name in manifest["debs"])
    host = llama_cpp("amd64")
    done = subprocess.run(
        [*tool_command(host, "llama-quantize"), "--help"],
        capture_output=True, text=True, env=tool_environment(host),
    )  # fmt: skip
    assert "usage:" in done.stdout + done.stderr  # sid's binary runs on this bookworm host


def test_the_worker_runs_on_the_sets_c_library(host_worker: WorkerClient) -> None:
    hello = host_worker.request("hello", TIMEOUT, formats=["gguf"])
    assert hello["versions"]["llama.cpp"] == version_name()
    assert hello["versions"]["libc"] == "glibc 2.43"  # sid's, not bookworm's 2.36


def test_a_gguf_and_an_onnx_export_of_the_same_weights_agree(
    host_worker: WorkerClient, slm_models: Path
) -> None:
    models = slm_models / "models"
    gguf = load(host_worker, "gguf", models / "slm-f16.gguf")
    onnx = load(host_worker, "onnx", models / "slm-float")
    assert gguf["runtime"] == "llama.cpp" and onnx["runtime"] == "onnxruntime-genai"
    assert gguf["vocab_size"] == onnx["vocab_size"]
    text = (slm_models / "data" / "valid.txt").read_text()
    compared = host_worker.request(
        "compare", TIMEOUT, model_id="gguf", reference_id="onnx", text=text, window=64, stride=32
    )
    same = language_scores.quantization_statistics(
        compared["kld"], compared["nll"], compared["reference_nll"], compared["greedy"],
        compared["reference_greedy"], compared["counts"],
    ).figures()  # fmt: skip
    # F16 weights against fp32: a rounding's worth (measured: KLD ~5e-8, agreement 0.999).
    assert same["kld_mean"] < 1e-5
    assert same["token_agreement"] > 0.99
    assert same["perplexity_ratio"] == pytest.approx(1.0, abs=1e-3)
    prompts = [json.loads(line)["prompt"] for line in (slm_models / "data" / "prompts.jsonl")
               .read_text().splitlines()[:8]]  # fmt: skip
    a = host_worker.request("generate", TIMEOUT, model_id="gguf", prompts=prompts, new_tokens=6)
    b = host_worker.request("generate", TIMEOUT, model_id="onnx", prompts=prompts, new_tokens=6)
    assert [r["text"] for r in a["results"]] == [r["text"] for r in b["results"]]


def test_the_kv_cache_type_is_a_setting_that_moves_the_distributions(
    host_worker: WorkerClient, slm_models: Path
) -> None:
    path = slm_models / "models" / "slm-f16.gguf"
    f16 = load(host_worker, "f16", path, kv_cache="f16")
    q4 = load(host_worker, "q4", path, kv_cache="q4_0")
    assert (f16["settings"]["kv_cache"], q4["settings"]["kv_cache"]) == ("f16", "q4_0")
    text = (slm_models / "data" / "valid.txt").read_text()
    compared = host_worker.request(
        "compare", TIMEOUT, model_id="q4", reference_id="f16", text=text, window=64, stride=32,
        windows=[0, 1, 2],
    )  # fmt: skip
    assert float(np.mean(compared["kld"])) > 1e-6  # a quantized cache is not the same model


def test_llama_cpp_allocates_the_context_it_is_given(
    host_worker: WorkerClient, slm_models: Path
) -> None:
    loaded = load(host_worker, "small", slm_models / "models" / "slm-q4_k_m.gguf", context=64)
    assert loaded["context_length"] == 256  # llama.cpp rounds n_ctx up to a multiple of 256
    reply = host_worker.request(
        "generate", TIMEOUT, model_id="small", prompts=["a " * 300], new_tokens=4
    )
    assert "context of 256 tokens" in reply["results"][0]["error"]
    with pytest.raises(WorkerError, match="trained context of 256"):
        load(host_worker, "big", slm_models / "models" / "slm-q4_k_m.gguf", context=4096)


def test_a_missing_runtime_set_names_the_command_that_fetches_it(
    slm_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    with pytest.raises(BackendUnavailable, match=r"harness images llama-cpp --arch amd64"):
        LocalBackend().start(load_profiles()["host"], [slm_models / "models" / "slm-f16.gguf"], 1)


def test_a_worker_without_the_set_says_how_gguf_runs(slm_models: Path) -> None:
    client = WorkerClient(LocalBackend().start(load_profiles()["host"], [], 1), "host")
    try:
        with pytest.raises(WorkerError, match="needs the llama.cpp runtime set"):
            load(client, "m", slm_models / "models" / "slm-f16.gguf")
    finally:
        client.close()


def test_a_gguf_runs_in_the_x86_64_container_as_on_the_host(
    slm_models: Path, llama_cpp: Callable[[str], Path], docker_client: object
) -> None:
    from harness.backends.docker import DockerBackend

    llama_cpp("amd64")
    path = slm_models / "models" / "slm-q4_k_m.gguf"
    text = (slm_models / "data" / "valid.txt").read_text()
    nll = {}
    for device in ("host", "x86-64"):
        profile = load_profiles()[device]
        backend = DockerBackend() if device == "x86-64" else LocalBackend()
        target = backend.start(profile, [path], 1)
        client = WorkerClient(target, device)
        try:
            client.request("hello", TIMEOUT, formats=["gguf"])
            client.request(
                "load", TIMEOUT, model_id="m", path=target.remote(path), threads=1,
                accelerator="none", text_options={"context": 256},
            )  # fmt: skip
            nll[device] = client.request(
                "perplexity", TIMEOUT, model_id="m", text=text, window=64, stride=32,
                windows=[0, 1, 2, 3],
            )["nll"]  # fmt: skip
        finally:
            client.close()
    assert np.allclose(nll["x86-64"], nll["host"], atol=1e-4)


def test_a_gguf_runs_on_an_emulated_raspberry_pi_under_its_loader(
    slm_models: Path,
    llama_cpp: Callable[[str], Path],
    docker_client: object,
    arm64_binfmt: None,
) -> None:
    from harness.backends.docker import DockerBackend

    llama_cpp("arm64")
    path = slm_models / "models" / "slm-q4_k_m.gguf"
    profile = load_profiles()["rpi4"]
    target = DockerBackend().start(profile, [path], 1)
    client = WorkerClient(target, "rpi4")
    try:
        hello = client.request("hello", TIMEOUT, formats=["gguf"])
        assert hello["machine"] == "aarch64" and hello["versions"]["libc"] == "glibc 2.43"
        client.request(
            "load", TIMEOUT, model_id="m", path=target.remote(path), threads=1,
            accelerator="none", text_options={"context": 256},
        )  # fmt: skip
        reply = client.request(
            "generate", TIMEOUT, model_id="m", prompts=["3 plus 4 is"], new_tokens=3
        )
    finally:
        client.close()
    assert reply["results"][0]["text"].strip().startswith("7")


def test_a_worker_whose_host_goes_away_mid_request_exits(slm_models: Path) -> None:
    """pytest killed while a worker works: its stdin ends, and it exits at once instead of
    finishing minutes of work for no one (before: a container left running at 200% CPU)."""
    from harness.backends.local import worker_environment
    from harness.worker.server import ORPHANED_EXIT

    worker = subprocess.Popen(
        [sys.executable, "-P", "-m", "harness.worker"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        env=worker_environment(1),
    )  # fmt: skip
    assert worker.stdin is not None and worker.stdout is not None
    text = json.dumps((slm_models / "data" / "valid.txt").read_text())
    folder = json.dumps(str(slm_models / "models" / "slm-float"))
    worker.stdin.write(
        f'{{"op": "load", "id": 1, "model_id": "m", "path": {folder}, "threads": 1}}\n'.encode()
    )
    worker.stdin.flush()
    worker.stdout.readline()
    long = {"op": "decode_bench", "id": 2, "model_id": "m", "prompt_tokens": 32,
            "new_tokens": 8, "repeats": 1_000_000}  # fmt: skip
    worker.stdin.write((json.dumps(long)[:-1] + f', "text": {text}}}\n').encode())
    worker.stdin.flush()
    worker.stdin.close()  # what the host's death does to the pipe
    try:
        assert worker.wait(30) == ORPHANED_EXIT
    finally:
        worker.kill()  # never left running, whatever the outcome


def test_a_container_worker_stops_when_pytest_is_killed(
    slm_models: Path, docker_client: object, tmp_path: Path
) -> None:
    import docker

    script = tmp_path / "host.py"
    script.write_text(
        "import json, sys, time\n"
        "from pathlib import Path\n"
        "from harness.backends.base import WorkerClient\n"
        "from harness.backends.docker import DockerBackend\n"
        "from harness.devices import load_profiles\n"
        f"folder = Path({str(slm_models / 'models' / 'slm-float')!r})\n"
        "files = sorted(p for p in folder.iterdir())\n"
        "target = DockerBackend().start(load_profiles()['x86-64'], files, 1)\n"
        "client = WorkerClient(target, 'x86-64')\n"
        "client.request('hello', 120, formats=['genai'])\n"
        "client.request('load', 120, model_id='m', path=target.remote(files[0]).rsplit('/', 1)[0],"
        " threads=1)\n"
        "print(target.limits['container_id'], flush=True)\n"
        "client.channel.send((json.dumps({'op': 'decode_bench', 'id': 9, 'model_id': 'm',"
        " 'text': 'a b c', 'prompt_tokens': 32, 'new_tokens': 8, 'repeats': 10**6}) + '\\n')"
        ".encode())\n"
        "time.sleep(600)\n"
    )
    host = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert host.stdout is not None
    container_id = host.stdout.readline().strip()
    assert container_id, "the host process did not start its worker"
    container = docker.from_env().containers.get(container_id)
    assert container.status == "running"
    host.kill()  # pytest dies without closing its workers
    host.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        container.reload()
        if container.status != "running":
            break
        time.sleep(0.5)
    container.reload()
    assert container.status != "running", "the worker kept running after its host died"
    container.remove(force=True)
