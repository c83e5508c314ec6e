"""The results document: one typed record per item, and the document that holds a session's
records (schema, build, read, write, merge, the one verdict over it).

Ground floor: it imports nothing from harness but `identity`, so measuring code, gates, stores,
reports and the command line all read and write results through here. A record travels as JSON
(on pytest's test reports under xdist, in files, in the history), so records are TypedDicts:
typed for mypy, plain dicts on the wire. Control flags (a failure found by the measurement, an
inconclusive sample, a missing baseline, the host as parity reference) ride in `flags`, never
among the figures.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, NotRequired, TypedDict

SCHEMA = "harness-results/2"
READABLE_SCHEMAS = ("harness-results/1", SCHEMA)  # /1 kept its flags among the figures
USER_PROPERTY = "harness"  # the full record rides on the test report under this user property


class Status(StrEnum):
    """An item's (or a document's) verdict, worst first: the one ordering every count, table
    and grid uses. Records carry the value (`"NO GATE"`), so files read the same."""

    ERROR = "ERROR"  # the measurement or the comparison broke: never a pass
    FAIL = "FAIL"
    INCONCLUSIVE = "INCONCLUSIVE"  # too few samples, or an interval that straddles its gate
    NO_BASELINE = "NO BASELINE"  # a relative gate without a base (baseline_missing = "report")
    WARN = "WARN"  # reported beside the gates, never fails the session (operator support unknown)
    PASS = "PASS"
    NO_GATE = "NO GATE"
    SKIPPED = "SKIPPED"

    def blocks(self, inconclusive: str = "fail") -> bool:
        """Whether this verdict blocks a merge: FAIL and ERROR always, INCONCLUSIVE unless
        the policy (`inconclusive`, the config's or --harness-inconclusive) is "pass"."""
        if self is Status.INCONCLUSIVE:
            return inconclusive != "pass"
        return self in (Status.FAIL, Status.ERROR)


def blocks(status: str, inconclusive: str = "fail") -> bool:
    """Status(status).blocks(inconclusive), for a status read from a record."""
    return status in STATUSES and Status(status).blocks(inconclusive)


PASS, FAIL, INCONCLUSIVE, NO_GATE = Status.PASS, Status.FAIL, Status.INCONCLUSIVE, Status.NO_GATE
NO_BASELINE, ERROR, SKIPPED, WARN = Status.NO_BASELINE, Status.ERROR, Status.SKIPPED, Status.WARN
STATUSES = tuple(s.value for s in Status)  # worst first


class Flags(TypedDict, total=False):
    """What a measurement found besides figures; the gates read them."""

    failure: str  # the measurement itself is a failing finding (OOM-killed, a property broke)
    oom: bool  # the failure is an out-of-memory kill
    inconclusive: str  # too few samples to decide, and what would decide it
    baseline: str  # the baseline in use (its label), when --baseline was given
    baseline_missing: str  # why there is no base to compare with
    baseline_problem: str  # why a baseline in use gave this item nothing to compare with
    baseline_other_machine: bool  # the stored base was measured on another machine
    is_reference: bool  # this device is the reference of device parity (the host)


FLAG_KEYS = tuple(Flags.__annotations__)


@dataclass
class Measurement:
    """What a suite returns: figures for the gates, raw data for the reports, their fidelity."""

    figures: dict[str, Any]  # what gates read: p90_ms, accuracy, peak_mb, ...
    fidelity: str  # measured | emulated | counted | estimated
    raw: dict[str, Any] = field(default_factory=dict)  # samples, per-class counts, ...
    flags: Flags = field(default_factory=lambda: Flags())


@dataclass(frozen=True)
class Check:
    gate: str  # the config key, e.g. latency_p90_ms_max
    figure: str  # the figure it reads, e.g. p90_ms
    value: float | None
    threshold: float
    passed: bool | None  # None: not applied (the message says why)
    message: str


@dataclass(frozen=True)
class Verdict:
    status: str
    checks: tuple[Check, ...] = ()
    reasons: tuple[str, ...] = ()  # why it failed or is inconclusive

    def as_json(self) -> VerdictJSON:
        return {
            "status": str(self.status),  # a plain str: execnet (xdist) carries no enums
            "checks": [CheckJSON(**asdict(c)) for c in self.checks],  # type: ignore[typeddict-item]
            "reasons": list(self.reasons),
        }


class CheckJSON(TypedDict):
    gate: str
    figure: str
    value: float | None
    threshold: float
    passed: bool | None
    message: str


class VerdictJSON(TypedDict):
    status: str
    checks: list[CheckJSON]
    reasons: list[str]


class Record(TypedDict):
    """One item's result: `<suite>[<model>@<device>]`."""

    nodeid: str
    suite: str
    model: str
    device: str
    model_path: str | None
    fidelity: str
    verdict: VerdictJSON
    flags: Flags
    figures: dict[str, Any]
    raw: dict[str, Any]
    worker: dict[str, Any]  # runtime, versions, machine and limits of the target
    error: str | None  # the measurement failed (no figures); the message says why
    plan: NotRequired[
        dict[str, Any]
    ]  # how much the suites did on this device (harness.emulation_plan)
    model_file: NotRequired[str]  # the model's path in the repository (build_document)


def record(
    nodeid: str,
    suite: str,
    model: str,
    device: str,
    verdict: Verdict,
    measurement: Measurement | None,
    *,
    fidelity: str,
    worker: dict[str, Any] | None = None,
    error: str | None = None,
    model_path: Path | None = None,
    plan: dict[str, Any] | None = None,
) -> Record:
    made: Record = {
        "nodeid": nodeid,
        "suite": suite,
        "model": model,
        "device": device,
        "model_path": str(model_path) if model_path else None,
        "fidelity": measurement.fidelity if measurement else fidelity,
        "verdict": verdict.as_json(),
        "flags": measurement.flags if measurement else Flags(),
        "figures": measurement.figures if measurement else {},
        "raw": measurement.raw if measurement else {},
        "worker": worker or {},
        "error": error,
    }
    if plan is not None:
        made["plan"] = plan
    return made


# -- the document ------------------------------------------------------------------------------


def build_document(
    config: Path,
    devices: list[dict[str, Any]],
    results: Iterable[Record],
    exitstatus: int,
    baseline: str | None = None,
) -> dict[str, Any]:
    """A session's document: its records with the checkout's revision and this machine."""
    import platform

    import harness
    from harness.identity import git_revision, machine_fingerprint, machine_info, repository_root

    commit, ref = git_revision(config.parent)
    top = repository_root(config.parent)
    return {
        "schema": SCHEMA,
        "harness_version": harness.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": str(config),
        "git": {"commit": commit, "ref": ref},
        "baseline": baseline,
        "host": {
            "machine": platform.machine(),
            "python": platform.python_version(),
            "node": platform.node(),
            "fingerprint": machine_fingerprint(),
            "machine_info": machine_info(),
        },
        "exitstatus": exitstatus,
        "devices": devices,
        "results": sort_records(with_model_file(r, top) for r in results),
    }


def with_model_file(record: Record, top: Path | None) -> Record:
    """The record with `model_file`, its model's path in the repository (`models/x.onnx`): the
    same in every job's checkout, where the absolute `model_path` is not (annotations)."""
    path = record.get("model_path")
    if top is None or not path:
        return record
    try:
        relative = Path(os.path.abspath(path)).relative_to(top.resolve()).as_posix()
    except ValueError:
        return record
    return {**record, "model_file": relative}


def sort_records(results: Iterable[Record]) -> list[Record]:
    return sorted(results, key=lambda r: (r["device"], r["model"], r["suite"]))


def write_atomic(path: Path, text: str) -> Path:
    """Write aside and rename: a reader (or another session) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        stream.write(text)
    os.replace(temporary, path)
    return path


def write_document(path: Path, document: Mapping[str, Any]) -> Path:
    return write_atomic(path, json.dumps(document, indent=1, default=str))


def upgrade_record(record: dict[str, Any]) -> Record:
    """A record of any readable schema in this one's form (harness-results/1 kept its flags
    among the figures)."""
    figures = dict(record.get("figures") or {})
    flags = Flags(**record.get("flags") or {})  # type: ignore[typeddict-item]
    for key in FLAG_KEYS:
        if key in figures:
            flags[key] = figures.pop(key)  # type: ignore[literal-required]
    return {**record, "figures": figures, "flags": flags}  # type: ignore[typeddict-item]


def read_document(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    if document.get("schema") not in READABLE_SCHEMAS:
        raise ValueError(f"{path}: not a harness results file (schema {document.get('schema')!r})")
    document["results"] = [upgrade_record(r) for r in document.get("results", [])]
    document["schema"] = SCHEMA
    return document


def read_all(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Read results files; a folder stands for the *.json files under it."""
    documents: list[dict[str, Any]] = []
    for path in paths:
        files = sorted(path.rglob("*.json")) if path.is_dir() else [path]
        for file in files:
            document = read_document(file)
            document.setdefault("source", str(file))
            documents.append(document)
    return documents


def merge(documents: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One document from several (one per device job). A record (same nodeid) found twice keeps
    the newest file's copy. Sessions are listed under `sessions` with their exit status."""
    by_node: dict[str, Record] = {}
    devices: dict[str, Any] = {}
    sessions: list[dict[str, Any]] = []
    for document in sorted(documents, key=lambda d: str(d.get("created", ""))):
        for device in document.get("devices", []):
            devices.setdefault(device["name"], device)
        sessions.append(
            {
                "source": document.get("source"),
                "created": document.get("created"),
                "exitstatus": document.get("exitstatus"),
                "config": document.get("config"),
                "host": document.get("host"),
                "git": document.get("git"),
                "devices": [d["name"] for d in document.get("devices", [])],
                "baseline": document.get("baseline"),
                "expected": document.get("expected"),
                "missing": document.get("missing"),
            }
        )
        for rec in document.get("results", []):
            by_node[rec["nodeid"]] = rec
    first = documents[0] if documents else {}
    return {
        "schema": SCHEMA,
        "harness_version": first.get("harness_version"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": first.get("config"),
        "host": first.get("host"),
        "git": first.get("git"),
        "exitstatus": max((int(s["exitstatus"] or 0) for s in sessions), default=0),
        "devices": list(devices.values()),
        "sessions": sessions,
        "results": sort_records(by_node.values()),
    }
