"""What a result record adds to pytest's own JUnit XML: flat `<property>` elements."""

from __future__ import annotations

from harness.report.figures import headline
from harness.results import Record


def junit_properties(rec: Record) -> list[tuple[str, object]]:
    """Flat figures for JUnit <property> elements (raw samples stay in the JSON), led by the
    item's headline figure as every report writes it (`harness.headline`: `p90 12.35 ms`)."""
    top = headline(rec)
    props: list[tuple[str, object]] = [
        ("harness.verdict", rec["verdict"]["status"]),
        ("harness.fidelity", rec["fidelity"]),
        ("harness.headline", top.text),
        ("harness.headline_figure", top.figure),
    ]
    for key, value in rec["figures"].items():
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            props.append((f"harness.{key}", round(value, 6) if isinstance(value, float) else value))
    return props
