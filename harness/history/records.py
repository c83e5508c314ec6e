"""The run record: what every history store keeps of one results document, as one text file.

A record is the unit every store reads and writes (SQLite file, git branch, PostgreSQL), so
moving a history between stores loses nothing: export gives records, import takes them, and the
same document stored twice is one record (its `digest`, of the document's time, host and
results). On a git branch each record is one file, `runs/YYYY/MM/<created>-<digest 16>.json`:
writers never touch the same file, so two writers never conflict, only race (the branch store
retries). The text is JSON with sorted keys, one figure per line, so `git diff` and `git log -p`
read as a list of figures.

A figure row: device, testbed (the device profile and the image it ran in, `rpi4
harness-device:arm64-0123456789ab`; `host` for the host), model, suite, fidelity, figure, value,
verdict, the model's SHA-256, the runtime versions and a summary of the raw samples.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.identity import machine_fingerprint, machine_info

__all__ = [
    "SCHEMA",
    "FigureRow",
    "RunRecord",
    "document_digest",
    "from_results",
    "raw_summary",
    "read_lines",
]

SCHEMA = "harness-history/1"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def canonical(value: Any) -> str:
    """JSON text with sorted keys: what SQL stores keep in their text columns."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class FigureRow:
    device: str
    testbed: str
    model: str
    suite: str
    fidelity: str
    figure: str
    value: float
    verdict: str
    model_sha256: str | None
    versions: str  # runtime versions, canonical JSON
    raw: str  # summary of the raw samples, canonical JSON

    def key(self) -> tuple[str, str, str, str, str]:
        return (self.device, self.model, self.suite, self.figure, self.fidelity)

    def as_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "testbed": self.testbed,
            "model": self.model,
            "suite": self.suite,
            "fidelity": self.fidelity,
            "figure": self.figure,
            "value": self.value,
            "verdict": self.verdict,
            "model_sha256": self.model_sha256,
            "versions": json.loads(self.versions),
            "raw": json.loads(self.raw),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FigureRow:
        return cls(
            device=str(data["device"]),
            testbed=str(data.get("testbed") or data["device"]),
            model=str(data["model"]),
            suite=str(data["suite"]),
            fidelity=str(data["fidelity"]),
            figure=str(data["figure"]),
            value=float(data["value"]),
            verdict=str(data["verdict"]),
            model_sha256=data.get("model_sha256"),
            versions=canonical(data.get("versions") or {}),
            raw=canonical(data.get("raw") or {}),
        )


@dataclass(frozen=True)
class RunRecord:
    """One run: when, which commit, which machine, and every numeric figure of its items."""

    digest: str
    repository: str
    created: str
    recorded: str
    commit: str | None
    ref: str | None
    machine: str
    machine_info: str  # what the fingerprint hashes, canonical JSON
    harness_version: str | None
    config: str | None
    figures: tuple[FigureRow, ...]

    @property
    def path(self) -> str:
        """Where the record lives on a history branch."""
        stamp = "".join(c for c in self.created if c.isalnum())
        return f"runs/{self.created[:4]}/{self.created[5:7]}/{stamp}-{self.digest[:16]}.json"

    def as_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "digest": self.digest,
            "repository": self.repository,
            "created": self.created,
            "recorded": self.recorded,
            "commit": self.commit,
            "ref": self.ref,
            "machine": self.machine,
            "machine_info": json.loads(self.machine_info),
            "harness_version": self.harness_version,
            "config": self.config,
            "figures": [f.as_json() for f in self.figures],
        }

    def text(self) -> str:
        """The record file: sorted keys, one figure per line."""
        data = self.as_json()
        rows = data.pop("figures")
        head = json.dumps(data, sort_keys=True, indent=1).removesuffix("\n}")
        body = ",\n  ".join(json.dumps(r, sort_keys=True) for r in rows)
        figures = f"[\n  {body}\n ]" if rows else "[]"
        return f'{head},\n "figures": {figures}\n}}\n'

    def line(self) -> str:
        """The record as one JSON line (export files)."""
        return json.dumps(self.as_json(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "record") -> RunRecord:
        if data.get("schema") != SCHEMA:
            raise ValueError(
                f"{source}: not a harness history record (schema {data.get('schema')!r}, "
                f"expected {SCHEMA!r})"
            )
        return cls(
            digest=str(data["digest"]),
            repository=str(data.get("repository") or ""),
            created=str(data["created"]),
            recorded=str(data.get("recorded") or data["created"]),
            commit=data.get("commit"),
            ref=data.get("ref"),
            machine=str(data["machine"]),
            machine_info=canonical(data.get("machine_info") or {}),
            harness_version=data.get("harness_version"),
            config=data.get("config"),
            figures=tuple(sorted((FigureRow.from_json(f) for f in data["figures"]), key=_order)),
        )

    @classmethod
    def from_text(cls, text: str, source: str = "record") -> RunRecord:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}: not JSON ({exc})") from None
        return cls.from_json(data, source)


def _order(row: FigureRow) -> tuple[str, ...]:
    return (row.device, row.model, row.suite, row.figure, row.fidelity, row.testbed)


def read_lines(text: str, source: str) -> list[RunRecord]:
    """Records from an export file: one JSON record per line."""
    return [
        RunRecord.from_text(line, f"{source} line {number}")
        for number, line in enumerate(text.splitlines(), 1)
        if line.strip()
    ]


# -- from a results document ------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def raw_summary(record: Mapping[str, Any]) -> dict[str, Any]:
    """What is kept of a record's raw data: sample count, p50/p90 (ms) and the p90's 95% CI for
    latency samples (and the baseline's, when a comparison carried them); ratio and CI when the
    record has them. The samples themselves stay in the results JSON."""
    from harness import stats

    summary: dict[str, Any] = {}
    raw = record.get("raw") or {}
    for key, prefix in (("samples_ns", ""), ("baseline_samples_ns", "baseline_")):
        samples = raw.get(key)
        if not isinstance(samples, list) or not samples:
            continue
        ms = [float(s) / 1e6 for s in samples]
        described = stats.summary(ms)
        summary[f"{prefix}n"] = described.n
        summary[f"{prefix}p50_ms"] = described.p50
        summary[f"{prefix}p90_ms"] = described.p90
        if described.n >= stats.min_samples_for_percentile(90.0):
            interval = stats.percentile_ci(ms, 90.0)
            summary[f"{prefix}p90_ci_ms"] = [interval.low, interval.high]
    figures = record.get("figures") or {}
    if "n" not in summary and _number(figures.get("n")) is not None:
        summary["n"] = figures["n"]
    for key in ("ratio", "ratio_low", "ratio_high"):
        if _number(figures.get(key)) is not None:
            summary[key] = figures[key]
    return summary


def document_digest(document: Mapping[str, Any]) -> str:
    text = json.dumps(
        [document.get("created"), document.get("host"), document.get("results")],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def testbeds(document: Mapping[str, Any]) -> dict[str, str]:
    """{device: its testbed}: the device profile and the image its workers ran in, `rpi4
    harness-device:arm64-...` (the image tag is a hash of its recipe), from any record of that
    device that names one; the device's name where none ran in an image (the host)."""
    found: dict[str, str] = {}
    for record in document.get("results", []):
        limits = (record.get("worker") or {}).get("limits") or {}
        image = limits.get("image")
        if image and record["device"] not in found:
            found[str(record["device"])] = f"{record['device']} {image}"
    return found


def from_results(
    document: Mapping[str, Any],
    *,
    commit: str | None = None,
    ref: str | None = None,
    model_hashes: Mapping[str, str] | None = None,
    machine: Mapping[str, Any] | None = None,
    repository: str = "",
    recorded: str | None = None,
) -> RunRecord:
    """The record of one results document (harness-results/1 or /2).

    commit/ref default to the document's `git` entry; model hashes to each record's
    `model_sha256`; the machine to the document's `host.machine_info`, else this machine."""
    host = document.get("host") or {}
    info = dict(machine or host.get("machine_info") or machine_info())
    git = document.get("git") or {}
    hashes = dict(model_hashes or {})
    now = _now()
    beds = testbeds(document)
    rows: list[FigureRow] = []
    for record in document.get("results", []):
        status = str((record.get("verdict") or {}).get("status", "ERROR"))
        versions = canonical((record.get("worker") or {}).get("versions") or {})
        summary = canonical(raw_summary(record))
        sha = hashes.get(record["model"]) or record.get("model_sha256")
        bed = beds.get(str(record["device"]), str(record["device"]))
        for figure, value in (record.get("figures") or {}).items():
            number = _number(value)
            if number is None:
                continue
            rows.append(
                FigureRow(
                    device=str(record["device"]),
                    testbed=bed,
                    model=str(record["model"]),
                    suite=str(record["suite"]),
                    fidelity=str(record.get("fidelity", "measured")),
                    figure=str(figure),
                    value=number,
                    verdict=status,
                    model_sha256=sha,
                    versions=versions,
                    raw=summary,
                )
            )
    return RunRecord(
        digest=document_digest(document),
        repository=repository,
        created=str(document.get("created") or now),
        recorded=recorded or now,
        commit=commit or git.get("commit"),
        ref=ref or git.get("ref"),
        machine=str(host.get("fingerprint") or machine_fingerprint(info)),
        machine_info=canonical(info),
        harness_version=document.get("harness_version"),
        config=document.get("config"),
        figures=tuple(sorted(rows, key=_order)),
    )
