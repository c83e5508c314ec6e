"""Trend judgement (harness.history.trends, pure) and the catalogue behind it: every figure
that reaches the history has one entry (direction, unit), and the nightly fails when tokens per
second fall 30%, perplexity rises 10% or counted instructions rise 2%, naming the commits."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from history_fixtures import language_model_records
from report_fixtures import results_document
from test_reports import example_results

from harness import catalogue
from harness.history.trends import SINGLE_RUN_DRIFT, Point, find_steps, trend
from harness.registry import headline_of


def _points(values: list[float], figure: str, fidelity: str = "measured") -> list[Point]:
    return [
        Point(i, f"2026-11-{i + 1:02d}T03:00:00Z", f"{i:x}" * 40, "m" * 16, "host", "slm",
              "suite", fidelity, figure, v, "PASS")
        for i, v in enumerate(values)
    ]  # fmt: skip


def _trend(values: list[float], figure: str, fidelity: str = "measured") -> Any:
    return trend(
        _points(values, figure, fidelity),
        device="host",
        model="slm",
        suite="suite",
        figure=figure,
        fidelity=fidelity,
    )


@pytest.mark.parametrize(
    ("figure", "values", "fidelity", "change"),
    [
        ("tokens_per_s", [50.0, 35.0], "measured", -0.30),  # two nights, varying figure
        ("perplexity", [18.0, 19.8], "measured", +0.10),  # exact: a step at once
        ("instructions_per_inference", [1_250_000.0, 1_275_000.0], "counted", +0.02),
        ("tokens_per_s", [50.0, 50.4, 49.8, 50.1, 50.2, 49.9, 35.1], "measured", -0.299),
    ],
)
def test_a_planted_regression_fails_on_its_first_night_with_its_commit_range(
    figure: str, values: list[float], fidelity: str, change: float
) -> None:
    found = _trend(values, figure, fidelity)
    [(index, moved)] = found.regressions(window=3, min_change=0.02)
    assert index == len(values) - 1 and moved == pytest.approx(change, abs=1e-3)
    old, new = f"{index - 1:x}" * 10, f"{index:x}" * 10
    assert found.commit_range(index) == f"{old}..{new}"


@pytest.mark.parametrize(
    ("figure", "values"),
    [
        ("tokens_per_s", [50.0, 48.5]),  # -3%: one run of a timed figure may drift that far
        ("tokens_per_s", [50.0, 65.0]),  # +30%: better, not a regression
        ("perplexity", [18.0, 17.0]),  # lower perplexity is better
        ("instructions_per_inference", [1_000_000.0, 1_019_000.0]),  # +1.9% < --min-change
        ("examples", [25.0, 10.0]),  # a count of generated inputs is not judged
    ],
)
def test_noise_improvements_and_unjudged_counts_are_no_regression(
    figure: str, values: list[float]
) -> None:
    assert _trend(values, figure).regressions(window=3, min_change=0.02) == []


def test_a_varying_figure_measures_its_own_drift_once_it_has_runs() -> None:
    rng = np.random.default_rng(3)
    noisy = [float(v) for v in 50 * (1 + rng.normal(0, 0.05, 12))]  # 5% run-to-run noise
    steps, once = find_steps([*noisy, noisy[-1] * 0.88], "tokens_per_s")
    assert not once  # -12% is inside three of its own standard deviations
    steps, once = find_steps([*noisy, 50 * 0.6], "tokens_per_s")
    assert once == {len(noisy)} and steps[-1][0] == len(noisy)
    quiet = [50.0 + 0.05 * (i % 3) for i in range(12)]
    steps, once = find_steps([*quiet, 47.0], "tokens_per_s")  # -6% from a series this quiet
    assert once == {len(quiet)}


def test_a_confirmed_level_is_found_by_step_detection_and_older_steps_are_not_news() -> None:
    values = [20.0, 20.1, 19.9, 20.0, 26.0, 26.1, 25.9, 26.0, 26.2]
    found = _trend(values, "p90_ms")
    assert [s[0] for s in found.steps] == [4] and not found.unconfirmed
    assert found.regressions(window=3) == []  # stepped five runs ago: reported back then
    assert [i for i, _ in found.regressions(window=6)] == [4]
    assert SINGLE_RUN_DRIFT == 0.10


# -- the catalogue: one definition of every figure that reaches the history --------------------


def _documents(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    import json

    real = json.loads(example_results(tmp_path_factory).read_text())
    stand_ins = {"results": language_model_records(1) + language_model_records(2)}
    return [real, results_document(), stand_ins]


def test_every_figure_that_reaches_the_history_has_a_catalogue_entry(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """What the history stores of the real example run, the generated matrix and the
    generation suite's own figures: each numeric figure resolves to an entry (derived names
    such as `p90_low_ms` or `baseline_accuracy` to their figure's)."""
    from harness.history.records import from_results

    missing: set[str] = set()
    for document in _documents(tmp_path_factory):
        for row in from_results({**document, "host": {"fingerprint": "0" * 16}}).figures:
            if catalogue.entry(row.figure) is None:
                missing.add(f"{row.suite}: {row.figure}")
    assert not missing, f"add these to harness/catalogue.py FIGURES: {sorted(missing)}"


def test_every_figure_that_gates_or_heads_a_record_is_judged(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The figures a record's gates read and its headline: a direction the trends use."""
    unjudged: set[str] = set()
    for document in _documents(tmp_path_factory):
        for record in document["results"]:
            named = {c["figure"] for c in record["verdict"].get("checks") or []}
            named.add(headline_of(record) or "")
            for figure in named - {"", "examples"}:
                if catalogue.direction(figure) == 0:
                    unjudged.add(f"{record['suite']}: {figure}")
    assert not unjudged, f"give these a direction in harness/catalogue.py: {sorted(unjudged)}"


def test_derived_names_resolve_and_vary_lists_only_catalogued_figures() -> None:
    assert set(catalogue.FIGURES) >= catalogue.VARY
    for derived, figure in [
        ("baseline_p90_ms", "p90_ms"),
        ("p90_low_ms", "p90_ms"),
        ("decode_p90_high_ms", "decode_p90_ms"),
        ("tokens_per_s_low", "tokens_per_s"),
        ("estimated_ms_high", "estimated_ms"),
    ]:
        found = catalogue.entry(derived)
        assert found is not None and found.name == figure, derived
    assert catalogue.entry("no_such_figure") is None
    assert catalogue.exact("instructions_per_inference") and not catalogue.exact("tokens_per_s")
    assert catalogue.exact("p90_ms", "counted")
