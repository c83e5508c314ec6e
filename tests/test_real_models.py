"""The real-model corpus (benchmarks/realmodels/corpus.py): public models shipped inside PyPI
wheels, with the configs docs/real-models.md shows, through every suite on the host, an x86-64
container and an emulated Raspberry Pi 4. What CI affords: every model on the host and x86-64,
the cheapest under QEMU (a streaming VAD and a wake word) on rpi4; benchmarks/
bench_real_models.py runs the whole corpus everywhere.

The wheels are fetched once with pip into $HARNESS_REAL_MODELS (default
~/.cache/harness/real-models); where PyPI cannot be reached the tests skip, and under CI=true
fail."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, unavailable

sys.path.insert(0, str(ROOT / "benchmarks"))

from realmodels.corpus import CHEAP, CORPUS, write_project  # noqa: E402

pytest_plugins = ["pytester"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository with the whole corpus: harness.toml, models/, data/."""
    folder = tmp_path_factory.mktemp("real-models")
    try:
        write_project(folder)
    except RuntimeError as exc:  # pip could not download a pinned wheel
        unavailable(f"the real-model corpus cannot be fetched: {exc}")
    return folder


def _run(pytester: pytest.Pytester, corpus: Path, *arguments: str) -> list[dict[str, Any]]:
    for entry in corpus.iterdir():
        target = pytester.path / entry.name
        if not target.exists():
            target.symlink_to(entry)
    out = pytester.path / "results.json"
    result = pytester.runpytest(f"--harness-json={out}", *arguments)
    outcomes = result.parseoutcomes()
    document = json.loads(out.read_text())
    errors = [
        f"{r['suite']}[{r['model']}@{r['device']}]: {r['verdict']['reasons']}"
        for r in document["results"]
        if r["verdict"]["status"] not in ("PASS", "NO GATE")
    ]
    assert not errors, errors
    assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0, outcomes
    results: list[dict[str, Any]] = document["results"]
    return results


def _figures(results: list[dict[str, Any]], suite: str, model: str, device: str) -> dict[str, Any]:
    (record,) = [
        r for r in results if (r["suite"], r["model"], r["device"]) == (suite, model, device)
    ]
    figures: dict[str, Any] = record["figures"]
    return figures


def test_the_corpus_passes_on_the_host(pytester: pytest.Pytester, corpus: Path) -> None:
    results = _run(pytester, corpus, "--device=host")
    assert {r["model"] for r in results} == {m.name for m in CORPUS}
    # The VAD decides speech on its one output (probability >= 0.5), each chunk from its state.
    vad = _figures(results, "accuracy", "silero-vad", "host")
    assert vad["accuracy"] >= 0.8 and vad["n"] > 100
    # Unnamed batch dims on two inputs: batch 1, and the row says why; named alike: varied.
    assert "unknowable" in _figures(results, "robustness", "silero-vad", "host")["batch_note"]
    assert _figures(results, "robustness", "silero-vad-op15", "host")["batch_checked"] is True
    parity = _figures(results, "parity", "silero-vad-op15", "host")
    assert "parity_cosine_min" not in parity and parity["parity_top1"] == 1.0
    # int8 in, uint8 out (scale and zero point), state in resource variables.
    assert _figures(results, "accuracy", "okay-nabu", "host")["accuracy"] >= 0.98
    # Unlabelled images: outputs checked for NaN/inf, nothing scored.
    assert "labels" in _figures(results, "accuracy", "face-detection", "host")


def test_the_corpus_agrees_in_an_x86_64_container(
    pytester: pytest.Pytester, corpus: Path, docker_client: Any
) -> None:
    results = _run(pytester, corpus, "--device=x86-64", "-k", "not ocr-recognition")
    for model in ("silero-vad", "okay-nabu", "ocr-direction"):
        assert _figures(results, "parity", model, "x86-64")["device_top1"] == 1.0
    segmentation = _figures(results, "parity", "selfie-segmentation", "x86-64")
    assert segmentation["device_cosine_min"] >= 0.9999  # 65,536 values a sample compared


def test_the_cheapest_models_on_an_emulated_rpi4(
    pytester: pytest.Pytester, corpus: Path, docker_client: Any, arm64_binfmt: None
) -> None:
    selected = "(silero-vad and not op15) or okay-nabu"
    results = _run(pytester, corpus, "--device=rpi4", "-k", selected)
    assert {r["model"] for r in results} == set(CHEAP)
    for model in CHEAP:
        accuracy = _figures(results, "accuracy", model, "rpi4")
        assert accuracy["host_agreement"] >= 0.95
        latency = [r for r in results if (r["suite"], r["model"]) == ("latency", model)][0]
        # The gate reads the timing model's estimate and no baseline compares the emulated
        # clock: no emulated timed runs were spent (harness.suites.latency.measure).
        assert latency["figures"]["emulated_runs"] == 0 and "n" not in latency["figures"]
        assert latency["figures"]["estimated_ms"] > 0


def test_the_docs_show_every_corpus_config_as_it_runs() -> None:
    """docs/real-models.md shows the configs the corpus runs with, character for character."""
    page = (ROOT / "docs" / "real-models.md").read_text()
    for model in CORPUS:
        assert model.config in page, f"{model.name}: its config in docs/real-models.md differs"
        assert f"{model.package} {model.version}" in page
