"""The JSON report: every record with raw samples, fidelity labels, device limits, versions,
the git revision and the machine's fingerprint."""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
from harness.config import HarnessConfig
from harness.devices import DeviceProfile

SCHEMA = "harness-results/1"


def build_document(
    config: HarnessConfig,
    devices: list[DeviceProfile],
    results: list[dict[str, Any]],
    exitstatus: int,
    baseline: str | None = None,
) -> dict[str, Any]:
    from harness.store import git_revision, machine_fingerprint, machine_info

    commit, ref = git_revision(config.root)
    return {
        "schema": SCHEMA,
        "harness_version": harness.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": str(config.source),
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
        "devices": [d.as_json() for d in devices],
        "results": sorted(results, key=lambda r: (r["device"], r["model"], r["suite"])),
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write aside and rename: a reader (or another session) never sees half a file.
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as stream:
        json.dump(document, stream, indent=1, default=str)
    os.replace(temporary, path)


def read_json(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    if document.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a harness results file (schema {document.get('schema')!r})")
    return document
