"""Reports a reviewer reads in ten seconds, over a generated 20-model × 6-device result set with
two failures and one regression (tests/report_fixtures.py): the comment puts those three first
and fits GitHub's limit, every output writes the same headline figures, and the nightly report
finds the commit where a figure stepped."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from html import escape
from pathlib import Path
from typing import Any

import pytest
from report_fixtures import (
    DEVICES,
    FAILED_ACCURACY,
    FAILED_MEMORY,
    MODELS,
    REGRESSED,
    nights,
    results_document,
)

from harness.report import digest, html, markdown, terminal
from harness.report.figures import headline, number, shown
from harness.report.junit import junit_properties
from harness.verdict import overall


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return results_document()


@pytest.fixture(scope="module")
def page(document: dict[str, Any]) -> str:
    return html.render(document)


def _item(key: tuple[str, str, str]) -> str:
    suite, model, device = key
    return f"{suite}[{model}@{device}]"


def test_the_fixture_is_what_the_reports_are_tested_on(document: dict[str, Any]) -> None:
    results = document["results"]
    assert len({(r["model"], r["device"]) for r in results}) == len(MODELS) * len(DEVICES) == 120
    failed = {
        (r["suite"], r["model"], r["device"]) for r in results if r["verdict"]["status"] != "PASS"
    }
    assert failed == {FAILED_ACCURACY, FAILED_MEMORY}  # decided by the real gates
    assert overall(document).status == "FAIL"


def test_the_comment_shows_the_two_failures_and_the_regression_first_and_fits(
    document: dict[str, Any],
) -> None:
    whole = markdown.render(document)
    comment = markdown.render(document, limit=markdown.COMMENT_LIMIT)
    assert len(whole) > markdown.COMMENT_LIMIT >= len(comment)
    lines = comment.splitlines()
    assert lines[0] == "## ❌ harness model gate: FAIL (2 fail, 478 pass)"
    listed = [line for line in lines if line.startswith("- ")]
    assert listed[0].startswith(f"- ❌ **{_item(FAILED_ACCURACY)}** FAIL: accuracy 0.")
    assert listed[1].startswith(f"- ❌ **{_item(FAILED_MEMORY)}** FAIL: board peak ")
    assert listed[2].startswith(f"- 🔺 **{_item(REGRESSED)}** worse: +3.0% [+2.0%, +4.0%]")
    assert len(listed) == 3  # nothing else moved beyond noise
    # ... before the grid, which comes before the full table
    assert (
        comment.index(listed[2])
        < comment.index("### Model × device")
        < comment.index("<details><summary>All 480 items</summary>")
    )
    grid = [line for line in lines if line.startswith("| model-")][: len(MODELS)]
    assert len(grid) == len(MODELS) and all(line.count(" | ") == len(DEVICES) for line in grid)
    assert sum("❌" in line for line in grid) == 2
    # What it cut, said: the rows left out, and every row that did not pass is kept.
    cut = re.search(r"_(\d+) of 480 rows left out to fit a comment", comment)
    assert cut, comment[-600:]
    full_rows = [line for line in lines if re.match(r"\| [\w-]+ \| model-\d\d \| \w+ \|", line)]
    assert len(full_rows) == 480 - int(cut.group(1))
    assert sum("❌ FAIL |" in row for row in full_rows) == 2
    assert comment.count("<details>") == comment.count("</details>")


def test_the_grid_cell_is_the_worst_verdict_with_its_figure(document: dict[str, Any]) -> None:
    devices = [d["name"] for d in document["devices"]]
    table = digest.grid(document["results"], devices)
    assert table.devices == tuple(devices) and table.models == MODELS
    suite, model, device = FAILED_MEMORY
    cell = table.cells[(model, device)]
    assert (cell.status, cell.suite, cell.failing) == ("FAIL", "memory", 1)
    memory = next(
        r for r in document["results"] if (r["suite"], r["model"], r["device"]) == FAILED_MEMORY
    )
    assert cell.headline.text == shown("board_peak_mb", memory["figures"]["board_peak_mb"])
    passing = table.cells[(MODELS[0], devices[0])]
    assert (passing.status, passing.suite) == ("PASS", "latency")  # the key figure when all pass


def test_noise_is_not_a_change() -> None:
    def latency(low: float, high: float) -> dict[str, Any]:
        figures = {"ratio": (low + high) / 2, "ratio_low": low, "ratio_high": high}
        return {"suite": "latency", "figures": figures, "verdict": {"status": "PASS"}}

    assert digest.change(latency(0.99, 1.01)) is None  # the interval spans no change
    slower = digest.change(latency(1.01, 1.03))
    assert slower is not None and slower.worse and slower.text == "+2.0% [+1.0%, +3.0%]"
    faster = digest.change(latency(0.90, 0.95))
    assert faster is not None and not faster.worse
    memory = {"suite": "memory", "verdict": {"status": "PASS"}}
    small = {"memory_growth": digest.NOISE_FLOOR / 2, "model_share_mb": 10.1}
    assert digest.change({**memory, "figures": small | {"baseline_model_share_mb": 10.0}}) is None
    grown = {"memory_growth": 0.25, "model_share_mb": 12.5, "baseline_model_share_mb": 10.0}
    found = digest.change({**memory, "figures": grown})
    assert found is not None and found.text == "model share 10.0 MB → 12.5 MB (+25.0%)"


def test_terminal_markdown_and_html_agree_on_every_headline_figure(
    document: dict[str, Any], page: str
) -> None:
    text = markdown.render(document)
    lines = terminal.gate_table(document["results"], markup=False)
    checked = 0
    for record in document["results"]:
        top = headline(record)
        assert top.text != "-" and top.figure != "-"
        device, model, suite = record["device"], record["model"], record["suite"]
        row = re.compile(rf"^{device}\s+{model}\s+{suite}\s+{re.escape(top.text)}\s")
        assert any(row.match(line) for line in lines), (suite, model, device, top.text)
        assert f"| {device} | {model} | {suite} | {top.text}" in text, top.text
        cell = f"<td>{device}</td><td>{model}</td><td>{suite}</td><td>{escape(top.text)}"
        assert cell in page, top.text
        assert ("harness.headline", top.text) in junit_properties(record)  # type: ignore[arg-type]
        checked += 1
    assert checked == 480


def test_one_formatter_writes_every_figure() -> None:
    assert number(47.71, "board_peak_mb") == "47.7 MB"
    assert shown("board_peak_mb", 47.71) == "board peak 47.7 MB"
    assert number(0.017942, "p90_ms") == "0.01794 ms"
    assert number(12_345.6, "p90_ms") == "12,346 ms"
    assert number(0.97333, "accuracy") == "0.9733"
    assert number(1.079, "ratio") == "+7.9%"
    assert number(0.3, "memory_growth") == "+30.0%"
    assert number(float("nan"), "p90_ms") == "-"
    assert number(2_500_000, "instructions_per_inference") == "2.50 M"


def test_html_puts_the_coloured_grid_on_top(document: dict[str, Any], page: str) -> None:
    grid = page.index('id="grid"')
    assert grid < page.index("<h2>Needs a look</h2>") < page.index("<h2>Latency</h2>")
    assert page.count('<td class="cell fail">') == 2
    assert page.count('<td class="cell pass">') == len(MODELS) * len(DEVICES) - 2
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    for device, _, _ in DEVICES:
        for section in ("Latency", "Memory", "Accuracy per class"):
            assert f'alt="{section} on {device}"' in page


def test_nightly_writes_trends_with_the_commit_that_stepped(
    document: dict[str, Any], tmp_path: Path
) -> None:
    from harness.store import Store

    history = tmp_path / "history.sqlite"
    with Store(history) as store:
        for night in nights(document):
            store.add_results(night, commit=night["git"]["commit"])
    out = tmp_path / "nightly"
    command = [sys.executable, "-m", "harness.cli", "nightly", "--history", str(history),
               "--out", str(out)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "harness: nightly: 1 regression in the last 3 runs" in done.stdout
    summary = (out / "nightly.md").read_text()
    first = summary.split("<details>")[0]
    assert first.startswith("## ❌ harness nightly: 1 regression in the last 3 runs")
    assert f"- 🔺 **{_item(REGRESSED)}** p90 " in first
    assert "in commits `4444444444..5555555555`" in first  # the range it stepped in
    assert f"| {_item(REGRESSED)} | p90 (emulated) |" in first and "❌ regression" in first
    assert len(first) < 2000  # an issue or a chat message carries it
    page = (out / "nightly.html").read_text()
    assert "<h2>Regressions</h2>" in page and "<h2>Trends per device</h2>" in page
    assert 'alt="Trend of p90_ms on x86-64 (emulated)"' in page
    failing = subprocess.run([*command, "--fail-on-regression"], capture_output=True, text=True)
    assert failing.returncode == 1


def test_nightly_refuses_a_missing_history(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "nightly", "--history", str(tmp_path / "none.sqlite"),
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert f"harness: error: no history at {tmp_path / 'none.sqlite'}" in done.stderr


def test_merge_writes_a_comment_sized_report_and_the_whole_summary(
    document: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(document))
    summary = tmp_path / "summary.md"
    env = {"PATH": "/usr/bin:/bin", "GITHUB_STEP_SUMMARY": str(summary)}
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "merge", str(path), "--out", str(tmp_path / "out"),
         "--markdown", "--github"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    report = (tmp_path / "out" / "report.md").read_text()
    assert len(report) <= markdown.COMMENT_LIMIT
    assert "rows left out to fit a comment" in report
    whole = summary.read_text()
    assert "rows left out" not in whole and whole.count("| ✅ PASS |") == 478


def test_gate_edits_are_listed_in_the_comment_and_the_page(document: dict[str, Any]) -> None:
    from harness.results import Check, Measurement, Verdict, record

    changes = ["accuracy_min 0.95 → 0.9 (loosened)", "size_kb_max 512 → 256 (tightened)"]
    figures = {"baseline": "main", "changes": changes, "loosened": 1, "tightened": 1}
    figures["allowed"] = True
    message = "gates changed against main: accepted (--allow-gate-changes)"
    policy = record(
        "harness.toml::policy[model-03]",
        "policy",
        "model-03",
        "any",
        Verdict("PASS", (Check("policy", "gate_change", 1, 0, True, message),)),
        Measurement(figures, "measured"),
        fidelity="measured",
    )
    edited = {**document, "results": [*document["results"], policy]}
    comment = markdown.render(edited, limit=markdown.COMMENT_LIMIT)
    edits = comment.index("### Gate changes in this change")
    assert comment.index("### Needs a look") < edits < comment.index("### Model × device")
    assert f"- model-03: {changes[0]} — accepted (--allow-gate-changes)" in comment
    assert "| any |" not in comment.split("<details>")[0]  # not a column of the grid
    assert len(comment) <= markdown.COMMENT_LIMIT
    assert "<h2>Gate changes in this change</h2>" in html.render(
        {**edited, "results": [policy, *document["results"][:8]]}
    )


def test_a_comment_fits_when_everything_fails(document: dict[str, Any]) -> None:
    import copy

    failing = copy.deepcopy(document)
    for rec in failing["results"]:
        rec["verdict"]["status"] = "FAIL"
        rec["verdict"]["reasons"] = [f"{rec['suite']} failed on {rec['device']}: " + "x" * 120]
    comment = markdown.render(failing, limit=markdown.COMMENT_LIMIT)
    assert len(comment) <= markdown.COMMENT_LIMIT
    assert comment.startswith("## ❌ harness model gate: FAIL (480 fail)")
    listed = [line for line in comment.splitlines() if line.startswith("- ")]
    more = 480 - markdown.LISTED_MAX
    assert len(listed) == markdown.LISTED_MAX + 1
    assert listed[-1] == f"- … and {more} more: see the grid and the full table"
    assert "### Model × device" in comment  # the grid is never cut
    cut = re.search(
        r"_(\d+) of 480 rows left out to fit a comment \((\d+) of the 480 that", comment
    )
    assert cut and int(cut.group(1)) + int(cut.group(2)) == 480
