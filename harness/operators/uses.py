"""What a model's operators are, as the checks and reports see them: each operator use with
its version and where it occurs, the problems a runtime release has with them, and the counts
the reports show (summarise)."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

Severity = Literal["error", "warning"]
Format = Literal["onnx", "tflite"]

ONNX_DEFAULT = ""  # the default ONNX domain; "ai.onnx" is normalised to it
ONNX_ML = "ai.onnx.ml"
MAX_LOCATIONS = 3


class OperatorReadError(Exception):
    """The model file cannot be parsed: truncated, corrupt, or not the format its name says."""


@dataclass(frozen=True)
class OperatorUse:
    """One operator (name, domain, version) and where the model uses it.

    ONNX: `domain` is the operator's domain ("" for the default ai.onnx domain) and `version` the
    opset the model imports for that domain (0 when it imports none). TFLite: `domain` is
    "builtin" or "custom" and `version` the operator code's version.
    """

    name: str
    domain: str
    version: int
    count: int
    locations: tuple[str, ...]
    local_function: bool = False  # ONNX: a call of a function the model itself defines

    @property
    def label(self) -> str:
        if self.domain in ("", "builtin"):
            return self.name
        return f"{self.domain}.{self.name}" if self.domain != "custom" else f"custom:{self.name}"


@dataclass(frozen=True)
class ModelOperators:
    path: Path
    format: Format
    operators: tuple[OperatorUse, ...]
    opsets: dict[str, int] = field(default_factory=dict)  # ONNX: domain -> imported opset
    ir_version: int | None = None  # ONNX
    schema_version: int | None = None  # TFLite


@dataclass(frozen=True)
class OperatorProblem:
    """Something in the model the runtime release lacks (or that the harness cannot verify)."""

    operator: str  # operator name, or "opset" / "IR version" / "schema version"
    domain: str
    version: int | None  # the model's operator version, opset or IR version
    supported: str  # what the runtime supports, in words
    message: str
    severity: Severity = "error"
    locations: tuple[str, ...] = ()


class Collector:
    """Counts operator uses by (name, domain, version, local function) and where they occur."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, int, bool], int] = {}
        self.where: dict[tuple[str, str, int, bool], list[str]] = {}

    def add(
        self, name: str, domain: str, version: int, location: str, local: bool = False, n: int = 1
    ) -> None:
        key = (name, domain, version, local)
        self.counts[key] = self.counts.get(key, 0) + n
        places = self.where.setdefault(key, [])
        if location not in places:
            places.append(location)

    def result(self) -> tuple[OperatorUse, ...]:
        uses = []
        for key in sorted(self.counts, key=lambda k: (k[1], k[0], k[2], k[3])):
            name, domain, version, local = key
            uses.append(
                OperatorUse(name, domain, version, self.counts[key], tuple(self.where[key]), local)
            )
        return tuple(uses)


def onnx_domain(domain: str) -> str:
    return ONNX_DEFAULT if domain in ("", "ai.onnx") else domain


def version_tuple(version: str) -> tuple[int, ...]:
    match = re.match(r"\s*v?(\d+(?:\.\d+)*)", version)
    if not match:
        raise ValueError(f"not a version number: {version!r}")
    parts = tuple(int(part) for part in match.group(1).split("."))
    return parts + (0,) * (3 - len(parts))  # "2.14" == "2.14.0"


def format_version(version: tuple[int, ...]) -> str:
    return ".".join(str(part) for part in version)


def locations_text(use: OperatorUse) -> str:
    shown = ", ".join(use.locations[:MAX_LOCATIONS])
    more = len(use.locations) - MAX_LOCATIONS
    return f" (in {shown}{f' and {more} more' if more > 0 else ''})"


def summarise(model: ModelOperators) -> dict[str, Any]:
    """Operator counts and versions, for reports (JSON-ready)."""
    counts: Counter[str] = Counter()
    versions: dict[str, set[int]] = {}
    for use in model.operators:
        counts[use.label] += use.count
        versions.setdefault(use.label, set()).add(use.version)
    summary: dict[str, Any] = {
        "format": model.format,
        "operators": dict(sorted(counts.items())),
        "versions": {label: sorted(v) for label, v in sorted(versions.items())},
        "total": sum(counts.values()),
    }
    if model.format == "onnx":
        summary["ir_version"] = model.ir_version
        summary["opsets"] = dict(sorted(model.opsets.items()))
    else:
        summary["schema_version"] = model.schema_version
    return summary


def installed_version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
