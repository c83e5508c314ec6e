"""What a suite returns: figures for the gates, raw data for the reports, and their fidelity."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Measurement:
    figures: dict[str, Any]  # what gates read: p90_ms, accuracy, peak_mb, ...
    fidelity: str  # measured | emulated | counted | estimated
    raw: dict[str, Any] = field(default_factory=dict)  # samples, per-class counts, ...
