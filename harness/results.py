"""A result record per item: what travels on the test report, into JSON, JUnit and the tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.devices import DeviceProfile
from harness.gates import Verdict
from harness.suites.base import Measurement

USER_PROPERTY = "harness"  # the full record rides on the report under this user property

# The figure a table shows for a suite when no gate names one.
HEADLINE = {
    "size": "size_kb",
    "accuracy": "accuracy",
    "latency": "p90_ms",
    "memory": "peak_mb",
    "parity": "parity_top1",
    "robustness": "examples",
    "operators": "errors",
    "instructions": "instructions_per_inference",
    "perplexity": "perplexity",
    "answers": "answer_accuracy",
    "generation": "tokens_per_s",
    "token_parity": "token_agreement",
    "prompt_robustness": "examples",
}


def record(
    nodeid: str,
    suite: str,
    model: str,
    profile: DeviceProfile,
    verdict: Verdict,
    measurement: Measurement | None = None,
    pair_info: dict[str, Any] | None = None,
    error: str | None = None,
    model_path: Path | None = None,
) -> dict[str, Any]:
    return {
        "nodeid": nodeid,
        "suite": suite,
        "model": model,
        "device": profile.name,
        "model_path": str(model_path) if model_path else None,
        "fidelity": measurement.fidelity if measurement else profile.fidelity,
        "verdict": verdict.as_json(),
        "figures": measurement.figures if measurement else {},
        "raw": measurement.raw if measurement else {},
        "worker": pair_info or {},
        "error": error,
    }


def junit_properties(rec: dict[str, Any]) -> list[tuple[str, object]]:
    """Flat figures for JUnit <property> elements (raw samples stay in the JSON)."""
    props: list[tuple[str, object]] = [
        ("harness.verdict", rec["verdict"]["status"]),
        ("harness.fidelity", rec["fidelity"]),
    ]
    for key, value in rec["figures"].items():
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            props.append((f"harness.{key}", round(value, 6) if isinstance(value, float) else value))
    return props
