"""The catalogue is the one place a gate or a figure is defined: nothing uses one it lacks."""

from __future__ import annotations

from dataclasses import fields

import pytest

from harness import catalogue
from harness.config import GateSpec
from harness.gates import RELATIVE, RULES
from harness.registry import SUITES, headline_figures
from harness.store import figure_direction


def test_every_config_gate_key_is_catalogued_and_every_entry_is_a_key() -> None:
    assert [f.name for f in fields(GateSpec)] == list(catalogue.GATES)


def test_every_rule_reads_catalogued_figures_of_its_gate() -> None:
    for rule in RULES:
        entry = catalogue.gate(rule.gate)
        assert rule.figure in catalogue.FIGURES, rule
        assert rule.emulated_figure is None or rule.emulated_figure in catalogue.FIGURES, rule
        assert (rule.symbol == "<") == (entry.bound == "min"), rule
    assert set(RELATIVE) == set(catalogue.gates_of(relative=True))


def test_every_gate_figure_and_headline_has_a_direction() -> None:
    """What reports, gates or reaches the history's trends is judged the right way."""
    suites = {s.name for s in SUITES}
    for entry in catalogue.GATES.values():
        assert entry.suite in suites, entry
        better = catalogue.HIGHER if entry.bound == "min" else catalogue.LOWER
        assert catalogue.direction(entry.figure) == better, entry
    for figure in headline_figures():
        assert figure in catalogue.FIGURES, figure
        if figure != "examples":  # a count of generated inputs, not better or worse
            assert figure_direction(figure) != 0, figure


@pytest.mark.parametrize(
    ("figure", "better"),
    [
        ("tokens_per_s", catalogue.HIGHER),
        ("perplexity", catalogue.LOWER),
        ("instructions_per_inference", catalogue.LOWER),
        ("answer_accuracy", catalogue.HIGHER),
        ("parity_top1", catalogue.HIGHER),
        ("device_top1", catalogue.HIGHER),
        ("baseline_accuracy", catalogue.HIGHER),
    ],
)
def test_directions_the_suffix_guess_got_wrong(figure: str, better: int) -> None:
    assert figure_direction(figure) == better


def test_a_min_gate_is_stricter_higher_and_a_max_gate_lower() -> None:
    assert catalogue.gate("accuracy_min").tightened(0.9, 0.95)
    assert not catalogue.gate("accuracy_min").tightened(0.95, 0.9)
    assert catalogue.gate("latency_p90_ms_max").tightened(10, 8)
    assert not catalogue.gate("tokens_per_s_min").tightened(20, 10)


def test_a_new_gate_is_one_catalogue_entry(pytester: pytest.Pytester) -> None:
    """A gate on a figure a suite already reports (latency p50) needs its catalogue entry and
    nothing else: the config accepts the key, the rule decides it, the policy knows which way is
    stricter. Tried in a pytest process whose catalogue has one entry more."""
    import sys

    from harness.modelgen.onnx import mlp

    mlp(pytester.path / "m.onnx")
    (pytester.path / "harness.toml").write_text(
        '[[models]]\nname = "m"\npath = "m.onnx"\n[models.gates]\nlatency_p50_ms_max = 0.001\n'
    )
    (pytester.path / "run.py").write_text(
        "import sys\n"
        "from harness import catalogue\n"
        "entry = catalogue.Gate('latency_p50_ms_max', 'latency', 'p50_ms', 'max', meaning='p50')\n"
        "catalogue.GATES = {**catalogue.GATES, entry.name: entry}\n"
        "import pytest\n"
        "sys.exit(pytest.main(['-p', 'no:cacheprovider', '-k', 'latency']))\n"
    )
    result = pytester.run(sys.executable, "run.py")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*latency p50 * ms > 0.001 ms (host, measured*"])
