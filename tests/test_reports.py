"""Markdown and HTML reports and `harness merge` / `harness report`, from a real results file:
the digits example measured on the host device (a few seconds)."""

from __future__ import annotations

import base64
import copy
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT
from harness.registry import headline_of
from harness.report import html, markdown, plots, wording
from harness.report.figures import number
from harness.results import merge
from harness.verdict import overall

EXAMPLE = ROOT / "examples" / "digits"


def run_example(folder: Path) -> Path:
    """Copy the example model repository into `folder`, gate it on the host, return the JSON."""
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns(".github", ".harness"))
    results = folder / "results" / "host.json"
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--device", "host",
         "--harness-json", str(results)],
        cwd=folder, capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return results


def example_results(factory: pytest.TempPathFactory) -> Path:
    """The example's host results, measured once per test session (read-only for the tests)."""
    results = factory.getbasetemp() / "digits-example" / "results" / "host.json"
    if not results.is_file():
        results = run_example(factory.getbasetemp() / "digits-example")
        results.chmod(0o444)
    return results


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return example_results(tmp_path_factory)


@pytest.fixture
def document(results: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(results.read_text())
    return loaded


def _record(document: dict[str, Any], suite: str, model: str = "digits-onnx") -> dict[str, Any]:
    found: dict[str, Any] = next(
        r for r in document["results"] if r["suite"] == suite and r["model"] == model
    )
    return found


def _fail(record: dict[str, Any], message: str) -> None:
    record["verdict"]["status"] = "FAIL"
    record["verdict"]["checks"][0]["passed"] = False
    record["verdict"]["checks"][0]["message"] = message


def _emulated_copy(document: dict[str, Any], device: str = "rpi4") -> dict[str, Any]:
    """The same figures as if measured on an emulated board (what a device job would send)."""
    other = copy.deepcopy(document)
    other["devices"] = [{**document["devices"][0], "name": device, "fidelity": "emulated"}]
    for record in other["results"]:
        record["device"] = device
        record["fidelity"] = "emulated"
        record["nodeid"] = record["nodeid"].replace("@host", f"@{device}")
    return other


def _merge_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", "merge", *args],
        capture_output=True,
        text=True,
        env={**clean, **(env or {})},
        timeout=120,
    )


# -- Markdown ---------------------------------------------------------------------------------


def test_markdown_has_a_row_per_device_model_suite_with_fidelity(document: dict[str, Any]) -> None:
    text = markdown.render(document)
    count = len(document["results"])
    assert count >= 12  # three models, at least size, accuracy, latency and memory each
    assert text.startswith(f"## ✅ harness model gate: PASS ({count} pass)\n")
    assert "| device | model | suite | figure | vs baseline | gates | verdict |" in text
    rows = [line for line in text.splitlines() if line.startswith("| host |")]
    assert len(rows) == count + 1  # the items + the devices table
    for model in ("digits-onnx", "digits-float", "digits-int8"):
        for suite in ("size", "accuracy", "latency", "memory"):
            assert any(f"| host | {model} | {suite} |" in row for row in rows), (model, suite)
    latency = _record(document, "latency")
    p90 = number(latency["figures"]["p90_ms"], "p90_ms")
    [row] = [r for r in rows if r.startswith("| host | digits-onnx | latency |")]
    assert row.startswith(f"| host | digits-onnx | latency | p90 {p90} [")
    # The interval is shown with the point's decimals (0.02377 [0.01830, ...]), which may be
    # more than the low end's own figure (0.0183): compare the number it shows.
    shown_low = row.split(" [", 1)[1].split(",", 1)[0]
    decimals = len(shown_low.partition(".")[2])
    assert float(shown_low) == pytest.approx(
        latency["figures"]["p90_low_ms"], abs=0.5 * 10**-decimals
    )
    assert "] · measured | — | latency_p90_ms_max 5 ms" in row and row.endswith("| ✅ PASS |")
    assert "| accuracy 0.9733 · measured |" in text
    assert "<details><summary>Devices and versions</summary>" in text
    assert "onnxruntime" in text and "†" not in text  # no emulated figures, no footnote


def test_markdown_labels_emulated_time_never_as_device_time(document: dict[str, Any]) -> None:
    text = markdown.render(merge([document, _emulated_copy(document)]))
    emulated = [line for line in text.splitlines() if line.startswith("| rpi4 | digits-onnx |")]
    assert all("· emulated†" in line for line in emulated), emulated
    assert wording.FOOTNOTE["emulated"] in text
    assert "not device milliseconds" in text
    assert plots.time_axis("emulated").startswith("QEMU wall-clock ms")
    assert "not device time" in plots.time_axis("emulated")


def test_markdown_shows_baseline_deltas_with_intervals(document: dict[str, Any]) -> None:
    latency = _record(document, "latency")
    latency["figures"].update(
        ratio=1.079, ratio_low=1.051, ratio_high=1.106, rounds=240, paired=True
    )
    _fail(latency, "latency +7.9% [+5.1%, +10.6%] > 5% (host, measured, paired n=240)")
    accuracy = _record(document, "accuracy", "digits-int8")
    accuracy["figures"]["baseline_accuracy"] = 0.98
    memory = _record(document, "memory", "digits-float")
    memory["figures"]["baseline_peak_mb"] = memory["figures"]["peak_mb"] / 1.1
    memory["baseline"] = {"machine": "0123456789abcdef"}
    document["host"]["fingerprint"] = "fedcba9876543210"
    text = markdown.render(document)
    assert "| +7.9% [+5.1%, +10.6%] (paired n=240) |" in text
    assert "| -0.0067 (base 0.9800) |" in text
    assert "+10.0% (base " in text
    passed = len(document["results"]) - 1
    assert text.startswith(f"## ❌ harness model gate: FAIL (1 fail, {passed} pass)")
    look = text.split("### Needs a look\n\n")[1].split("\n\n")[0].splitlines()
    assert look[0].startswith("- ❌ **latency[digits-onnx@host]** FAIL: p90 ")
    assert look[0].endswith(
        " · measured · latency +7.9% [+5.1%, +10.6%] > 5% (host, measured, paired n=240)"
    )
    # Accuracy on a fixed dataset is deterministic: any move against the base is listed.
    assert look[1].startswith("- 🔺 **accuracy[digits-int8@host]** worse: 0.9800 → 0.9733")
    assert "baseline measured on another machine (0123456789abcdef, this run fedcba9876543210)" in (
        text
    )


def test_markdown_is_cut_to_a_comment_limit(document: dict[str, Any]) -> None:
    whole = markdown.render(document)
    cut = markdown.render(document, limit=2500)
    assert len(cut) <= 2500 < len(whole)
    assert cut.startswith(whole.split("<details>")[0])  # verdict, list and grid kept whole
    left = len(document["results"]) - cut.count("| ✅ PASS |")
    assert f"_{left} of {len(document['results'])} rows left out to fit a comment" in cut
    assert cut.count("<details>") == cut.count("</details>")
    tiny = markdown.render(document, limit=300)
    assert len(tiny) <= 300 and tiny.endswith(markdown.CUT_NOTE)


def test_errors_and_inconclusive_are_explained(document: dict[str, Any]) -> None:
    latency = _record(document, "latency")
    latency["verdict"]["status"] = "INCONCLUSIVE"
    latency["verdict"]["reasons"] = ["undecided after 10.0 s: needs ~1200 more samples"]
    memory = _record(document, "memory")
    memory["verdict"] = {"status": "ERROR", "checks": [], "reasons": []}
    memory["error"] = "WorkerCrashed: the worker died (exit -9, OOMKilled)\ntraceback..."
    text = markdown.render(document)
    assert "ERROR" in text.splitlines()[0]
    look = text.split("### Needs a look\n\n")[1].split("\n\n")[0].splitlines()
    assert look[0].startswith("- 💥 **memory[digits-onnx@host]** ERROR: ")  # worst first
    assert look[0].endswith("WorkerCrashed: the worker died (exit -9, OOMKilled)")
    assert look[1].startswith("- ⚠️ **latency[digits-onnx@host]** INCONCLUSIVE: p90 ")
    assert look[1].endswith(" · measured · undecided after 10.0 s: needs ~1200 more samples")
    assert "traceback" not in text


# -- HTML -------------------------------------------------------------------------------------


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_html_is_self_contained_with_plots(document: dict[str, Any]) -> None:
    import matplotlib.image

    latency = _record(document, "latency", "digits-int8")
    latency["raw"]["baseline_samples_ns"] = [s * 0.9 for s in latency["raw"]["samples_ns"]]
    page = html.render(merge([document, _emulated_copy(document)]))
    for heading in ("Gates", "Latency", "Accuracy per class", "Memory", "Devices"):
        assert f"<h2>{heading}</h2>" in page
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert "<style>" in page
    images = _images(page)
    # per device (host, rpi4): latency (base beside head), memory, accuracy
    assert len(images) == 6
    assert page.index('id="grid"') < page.index("<h2>Latency</h2>")  # the grid on top
    for png in images:
        pixels = matplotlib.image.imread(io.BytesIO(png), format="png")
        assert pixels.shape[0] > 100 and pixels.shape[1] > 300
        assert pixels[..., :3].std() > 0.05  # not blank
    assert "digits-onnx" in page and "emulated" in page


# -- merge ------------------------------------------------------------------------------------


def test_merge_writes_reports_and_passes(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = _merge_cli(str(results), "--out", str(out))
    assert done.returncode == 0, done.stderr
    count = len(json.loads(results.read_text())["results"])
    assert f"harness: PASS ({count} pass); written" in done.stdout
    assert {p.name for p in out.iterdir()} == {"results.json", "report.md", "report.html"}
    merged = json.loads((out / "results.json").read_text())
    assert merged["schema"] == "harness-results/2" and len(merged["results"]) == count
    assert merged["sessions"][0]["source"] == str(results)
    assert "::" not in done.stdout  # no annotations outside GitHub Actions

    only = tmp_path / "only-md"
    assert _merge_cli(str(results), "--out", str(only), "--markdown").returncode == 0
    assert {p.name for p in only.iterdir()} == {"results.json", "report.md"}


def test_merge_over_device_jobs_fails_on_a_failed_gate(
    document: dict[str, Any], results: Path, tmp_path: Path
) -> None:
    other = _emulated_copy(document)
    _fail(_record(other, "accuracy", "digits-int8"), "accuracy 0.9733 < 0.9900 (rpi4, emulated)")
    (tmp_path / "jobs").mkdir()
    shutil.copy(results, tmp_path / "jobs" / "host.json")
    (tmp_path / "jobs" / "rpi4.json").write_text(json.dumps(other))
    summary, output = tmp_path / "summary.md", tmp_path / "output"
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_STEP_SUMMARY": str(summary),
        "GITHUB_OUTPUT": str(output),
        "GITHUB_WORKSPACE": str(results.parent.parent),
    }
    out = tmp_path / "out"
    done = _merge_cli(str(tmp_path / "jobs"), "--out", str(out), "--markdown", env=env)
    assert done.returncode == 1
    assert f"harness: FAIL (1 fail, {2 * len(document['results']) - 1} pass)" in done.stdout
    assert (
        "::error file=models/digits_int8.tflite,title=harness%3A accuracy[digits-int8@rpi4] FAIL"
        "::accuracy 0.9733 < 0.9900 (rpi4, emulated)"
    ) in done.stdout.splitlines()
    assert output.read_text() == f"verdict=FAIL\nreport={out / 'report.md'}\n"
    assert summary.read_text() == (out / "report.md").read_text()
    assert "| rpi4 | digits-int8 | accuracy | accuracy 0.9733 · emulated† |" in summary.read_text()


@pytest.mark.parametrize(
    ("change", "args", "code", "verdict"),
    [
        ("inconclusive", (), 1, "INCONCLUSIVE"),
        ("inconclusive", ("--inconclusive", "pass"), 0, "INCONCLUSIVE"),
        ("error", (), 1, "ERROR"),
        ("broken-session", (), 1, "ERROR"),
        ("custom-test-failed", (), 1, "ERROR"),
        ("missing-device", ("--expect-device", "host,rpi4"), 1, "ERROR"),
        ("no-gates", (), 0, "NO GATE"),
    ],
)
def test_merge_verdicts_and_exit_codes(
    document: dict[str, Any],
    tmp_path: Path,
    change: str,
    args: tuple[str, ...],
    code: int,
    verdict: str,
) -> None:
    latency = _record(document, "latency")
    if change == "inconclusive":
        latency["verdict"]["status"] = "INCONCLUSIVE"
    elif change == "error":
        latency["verdict"]["status"] = "ERROR"
        latency["error"] = "boom"
    elif change == "broken-session":
        document["exitstatus"] = 3
    elif change == "custom-test-failed":
        document["exitstatus"] = 1
    elif change == "no-gates":
        for record in document["results"]:
            record["verdict"] = {"status": "NO GATE", "checks": [], "reasons": []}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(document))
    done = _merge_cli(str(path), "--out", str(tmp_path / "out"), "--markdown", *args)
    assert done.returncode == code, done.stdout + done.stderr
    assert f"harness: {verdict} (" in done.stdout
    assert overall(document, args[1].split(",") if change == "missing-device" else ()).status == (
        verdict
    )
    if change == "missing-device":
        assert "no results for device rpi4" in done.stdout


def test_merge_rejects_what_is_not_a_results_file(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.json"
    bogus.write_text('{"schema": "something-else"}')
    done = _merge_cli(str(bogus), "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert "not a harness results file (schema 'something-else')" in done.stderr
    done = _merge_cli(str(tmp_path / "missing.json"), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "no such results file" in done.stderr
    assert overall({"results": [], "devices": []}).status == "ERROR"


def test_a_rerun_replaces_the_earlier_record(document: dict[str, Any]) -> None:
    later = copy.deepcopy(document)
    later["created"] = "2999-01-01T00:00:00Z"
    _fail(_record(later, "size"), "size 99 kB > 64 kB")
    merged = merge([later, document])
    assert len(merged["results"]) == len(document["results"])
    assert overall(merged).status == "FAIL"


def test_report_with_history_shows_trends_and_fails_on_a_regression(
    document: dict[str, Any], tmp_path: Path
) -> None:
    from harness.store import Store

    history = tmp_path / "history.sqlite"
    latency = _record(document, "latency")
    with Store(history) as store:
        for night in range(12):
            copied = copy.deepcopy(document)
            copied["created"] = f"2026-11-{night + 1:02d}T03:00:00Z"
            slower = 1.5 if night >= 10 else 1.0
            _record(copied, "latency")["figures"]["p90_ms"] = (
                latency["figures"]["p90_ms"] * slower * (1 + 0.01 * (night % 3))
            )
            store.add_results(copied, commit=f"{night:040x}")
    path = tmp_path / "tonight.json"
    path.write_text(json.dumps(document))
    out = tmp_path / "report"
    command = [sys.executable, "-m", "harness.cli", "report", str(path), "--history", str(history),
               "--out", str(out)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr  # trends are reported; failing is asked for
    assert "harness: regression: p90_ms of latency[digits-onnx@host] (measured) moved +5" in (
        done.stdout
    )
    text = (out / "report.md").read_text()
    assert "### Level changes in the history" in text
    assert "| latency[digits-onnx@host] | p90 (measured) |" in text and "❌ regression" in text
    page = (out / "report.html").read_text()
    assert "<h2>Trends</h2>" in page and "<h3>Level changes</h3>" in page
    # latency, accuracy, memory, then one trend per suite's headline figure (the registry's)
    headlines = {headline_of(r) for r in document["results"]} - {None}
    assert len(_images(page)) == 3 + len(headlines)
    failed = subprocess.run([*command, "--fail-on-regression"], capture_output=True, text=True)
    assert failed.returncode == 1
