"""The results history as pytest sessions and reports use it: record a session, find the file.

The stores themselves live in harness.history (the SQLite file, a git branch, PostgreSQL; one
record format; trend judgement); this module keeps the names the plugin, the reports and the
tests have always imported (`Store`, `Trend`, `Point`, ...) and the plugin's one call,
`record_session`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.history.records import document_digest, raw_summary
from harness.history.sql import StoredRun
from harness.history.sqlite import BUSY_TIMEOUT_S, SCHEMA_VERSION, Store, StoreError, StoreWarning
from harness.history.trends import Point, Trend, figure_direction
from harness.identity import git_revision, machine_fingerprint, machine_info, model_sha256

__all__ = [
    "BUSY_TIMEOUT_S",
    "DEFAULT_PATH",
    "SCHEMA_VERSION",
    "Point",
    "Store",
    "StoreError",
    "StoreWarning",
    "StoredRun",
    "Trend",
    "default_path",
    "document_digest",
    "figure_direction",
    "machine_fingerprint",
    "machine_info",
    "model_hashes_from_config",
    "raw_summary",
    "record_session",
]

DEFAULT_PATH = Path(".harness") / "history.sqlite"


def model_hashes_from_config(config_path: Path) -> dict[str, str]:
    """{model name: sha256 of its file, or of its folder's files (harness.identity.model_sha256)}
    for the models of a config that exist on disk."""
    from harness.config import load_config

    hashes: dict[str, str] = {}
    for spec in load_config(config_path).models:
        path = spec.path if spec.path.is_absolute() else config_path.parent / spec.path
        if path.exists():
            hashes[spec.name] = model_sha256(path)
    return hashes


def default_path(config_path: Path | None) -> Path:
    """`.harness/history.sqlite` beside the config (or in the current folder without one)."""
    folder = config_path.resolve().parent if config_path is not None else Path.cwd()
    return folder / DEFAULT_PATH


def record_session(
    document: Mapping[str, Any], config_path: Path, location: str | Path | None = None
) -> tuple[int, str]:
    """Store one pytest session's results document: the plugin's call at session end.

    The history goes to `location` (a SQLite path, default `.harness/history.sqlite` beside the
    config; `git:REMOTE[#BRANCH]`; `postgresql://...`: harness.history), with the checkout's
    commit and ref (unless the document names them) and each model's SHA-256 (of its file, or
    of a language-model folder's files). Returns (run id, the location as shown)."""
    from harness.history import describe, open_history

    where = str(location if location is not None else default_path(config_path))
    git = document.get("git") or {}
    commit, ref = git.get("commit"), git.get("ref")
    if not commit:
        commit, ref = git_revision(config_path.resolve().parent)
    try:
        hashes = model_hashes_from_config(config_path)
    except Exception:  # a config that no longer loads still gets its figures stored
        hashes = {}
    store = open_history(where)
    try:
        run = store.add_results(document, commit=commit, ref=ref, model_hashes=hashes)
    finally:
        store.close()
    return run, describe(where)
