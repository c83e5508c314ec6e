"""Answers an emulated board gave, kept across sessions under $HARNESS_CACHE/answers.

Emulated arithmetic is deterministic: the same model bytes and input rows on the same device
image, emulator binary and CPU model, with the same runtime versions and thread count, give
bit-identical outputs (tests/test_answer_cache.py runs a board twice and compares the bytes). So
the dataset rows a board answered (accuracy's agreement sample, parity's sample) are kept per row
under a key of all of those plus the harness's worker sources, and a later session asks the board
only the rows it has not answered yet. A change to any part of the key (a new model in a pull
request) misses. Measured latency and memory are never kept: they belong to their session (on
an emulated board a language model's filled context is, harness.suites.context_memory).

An entry is one .npz per key: the key's text, the rows, and per row its top-1 class, its scores
and whether they were finite. Generated inputs (robustness) are kept one .npz per input and
repeat: `run` answers keyed by the inputs' bytes and by which run of that input it was (the
determinism property runs each input twice and compares two answers the board gave). An entry
that cannot be read, or holds another key, is ignored and rewritten.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.identity import content_sha256

HARNESS_DIR = Path(__file__).resolve().parent
# What computes an answer inside the target: a change here may change the answers.
WORKER_SOURCES = ("worker", "runtimes")
BINFMT = Path("/proc/sys/fs/binfmt_misc")
BINFMT_HANDLER = {"arm64": "qemu-aarch64", "amd64": "qemu-x86_64"}
NOTE = "from cache: same model, inputs, image and runtime"


def cache_folder() -> Path:
    """$HARNESS_ANSWERS_CACHE, else $HARNESS_CACHE/answers, default ~/.cache/harness/answers."""
    own = os.environ.get("HARNESS_ANSWERS_CACHE")
    if own:
        return Path(own)
    base = os.environ.get("HARNESS_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "harness") / "answers"


@dataclass(frozen=True)
class Row:
    """One dataset row's answer."""

    nonfinite: bool
    top1: int | None = None
    scores: np.ndarray | None = None


def rows_of(result: Mapping[str, Any], indices: list[int]) -> dict[int, Row]:
    """An `evaluate` result over `indices`, row by row."""
    bad = {int(i) for i in result.get("nonfinite_rows", [])}
    top1 = result.get("top1")
    values = result.get("values")
    return {
        index: Row(
            index in bad,
            int(top1[position]) if top1 is not None else None,
            np.asarray(values[position]) if values is not None else None,
        )
        for position, index in enumerate(indices)
    }


def result_of(rows: Mapping[int, Row], indices: list[int]) -> dict[str, Any]:
    """The `evaluate` result over `indices` from their rows (all of which are in `rows`)."""
    chosen = [rows[i] for i in indices]
    result: dict[str, Any] = {
        "count": len(indices),
        "nonfinite": sum(r.nonfinite for r in chosen),
        "nonfinite_rows": [i for i, r in zip(indices, chosen, strict=True) if r.nonfinite],
    }
    if chosen and all(r.top1 is not None for r in chosen):
        result["top1"] = [r.top1 for r in chosen]
    if chosen and all(r.scores is not None for r in chosen):
        result["values"] = np.stack([r.scores for r in chosen if r.scores is not None])
    return result


@functools.cache
def worker_sources_sha256() -> str:
    """One digest of the harness code that runs in the target and computes answers."""
    digest = hashlib.sha256()
    for folder in WORKER_SOURCES:
        for path in sorted((HARNESS_DIR / folder).rglob("*.py")):
            digest.update(str(path.relative_to(HARNESS_DIR)).encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()


def emulator_sha256(arch: str, root: Path = BINFMT) -> str:
    """The sha256 of the QEMU binary binfmt_misc runs `arch` binaries with ("unknown" where it
    cannot be read: such a key still differs from every readable one)."""
    handler = root / BINFMT_HANDLER.get(arch, f"qemu-{arch}")
    try:
        for line in handler.read_text().splitlines():
            if line.startswith("interpreter "):
                return content_sha256(Path(line.split(" ", 1)[1]).resolve())
    except OSError:
        pass
    return "unknown"


def key_text(fields: Mapping[str, Any]) -> str:
    """The key as canonical JSON (what two sessions compare)."""
    return json.dumps(fields, sort_keys=True, default=str, separators=(",", ":"))


def _save(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write an .npz atomically; a cache that cannot be written is only a slower next session."""
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, **arrays)  # type: ignore[arg-type]
        os.replace(temporary, path)
    except OSError:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)


def inputs_sha256(inputs: Mapping[str, np.ndarray]) -> str:
    """A digest of named input arrays: names, dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for name in sorted(inputs):
        array = np.ascontiguousarray(inputs[name])
        digest.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


class RunCache:
    """`run` answers (outputs by name) under one key, per input and per repeat of that input."""

    def __init__(self, fields: Mapping[str, Any], folder: Path | None = None) -> None:
        self.key = key_text(fields)
        name = hashlib.sha256(self.key.encode()).hexdigest()[:40]
        self.folder = (folder or cache_folder()) / f"runs-{name}"

    def _path(self, inputs: str, repeat: int) -> Path:
        return self.folder / f"{inputs[:40]}-{repeat}.npz"

    def get(self, inputs: str, repeat: int) -> dict[str, np.ndarray] | None:
        """The outputs kept for the `repeat`th run of these inputs, or None."""
        try:
            with np.load(self._path(inputs, repeat), allow_pickle=False) as entry:
                if str(entry["key"]) != self.key or str(entry["inputs"]) != inputs:
                    return None
                return {k[4:]: np.array(entry[k]) for k in entry.files if k.startswith("out_")}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return None

    def put(self, inputs: str, repeat: int, outputs: Mapping[str, np.ndarray]) -> None:
        arrays = {f"out_{k}": np.asarray(v) for k, v in outputs.items()}
        _save(
            self._path(inputs, repeat),
            arrays | {"key": np.array(self.key), "inputs": np.array(inputs)},
        )


class AnswerCache:
    """The rows answered under one key."""

    def __init__(self, fields: Mapping[str, Any], folder: Path | None = None) -> None:
        self.key = key_text(fields)
        name = hashlib.sha256(self.key.encode()).hexdigest()[:40]
        self.path = (folder or cache_folder()) / f"{name}.npz"

    def read(self) -> dict[int, Row]:
        """The rows kept under this key; none when there is no entry, or it is unreadable or
        another key's."""
        try:
            with np.load(self.path, allow_pickle=False) as entry:
                if str(entry["key"]) != self.key:
                    return {}
                indices = [int(i) for i in entry["rows"]]
                nonfinite = entry["nonfinite"]
                top1 = entry["top1"] if "top1" in entry.files else None
                scores = entry["scores"] if "scores" in entry.files else None
                for array in (nonfinite, top1, scores):
                    if array is not None and array.shape[0] != len(indices):
                        return {}
                return {
                    index: Row(
                        bool(nonfinite[p]),
                        int(top1[p]) if top1 is not None else None,
                        np.array(scores[p]) if scores is not None else None,
                    )
                    for p, index in enumerate(indices)
                }
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return {}

    def write(self, rows: Mapping[int, Row]) -> None:
        """Keep `rows` (all of this key's rows, old and new), replacing the entry."""
        indices = sorted(rows)
        chosen = [rows[i] for i in indices]
        arrays: dict[str, np.ndarray] = {
            "key": np.array(self.key),
            "rows": np.array(indices, dtype=np.int64),
            "nonfinite": np.array([r.nonfinite for r in chosen], dtype=bool),
        }
        if chosen and all(r.top1 is not None for r in chosen):
            arrays["top1"] = np.array([r.top1 for r in chosen], dtype=np.int64)
        if chosen and all(r.scores is not None for r in chosen):
            shapes = {r.scores.shape for r in chosen if r.scores is not None}
            if len(shapes) == 1:
                arrays["scores"] = np.stack([r.scores for r in chosen if r.scores is not None])
        _save(self.path, arrays)


def missing(known: Mapping[int, Row], indices: Iterable[int]) -> list[int]:
    """Of `indices`, those `known` does not hold (in order)."""
    return [i for i in indices if i not in known]


def board_answers(results: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """The figure a record gets when some of its board answers came from the cache (none
    otherwise): `board_answers = "from cache: same model, inputs, image and runtime (64 of 64
    answers)"`."""
    done = list(results)
    cached = sum(int(r.get("from_cache", 0)) for r in done)
    total = sum(int(r.get("count", 0)) for r in done)
    return {"board_answers": f"{NOTE} ({cached} of {total} answers)"} if cached else {}
