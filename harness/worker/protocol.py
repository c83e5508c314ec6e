"""The worker's wire format: one JSON object per line, arrays as base64 .npy bytes.

Request:  {"id": 1, "op": "load", ...arguments}
Response: {"id": 1, "ok": true, "result": {...}}
          {"id": 1, "ok": false, "kind": "ModelLoadError", "error": "what went wrong"}
"""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import numpy as np

ARRAY_KEY = "__ndarray__"


def _default(value: object) -> object:
    if isinstance(value, np.ndarray):
        buffer = io.BytesIO()
        np.save(buffer, value, allow_pickle=False)
        return {ARRAY_KEY: base64.b64encode(buffer.getvalue()).decode("ascii")}
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot send {type(value).__name__} to or from the worker")


def _hook(obj: dict[str, Any]) -> object:
    if len(obj) == 1 and ARRAY_KEY in obj:
        raw = base64.b64decode(obj[ARRAY_KEY])
        return np.load(io.BytesIO(raw), allow_pickle=False)
    return obj


def encode(message: dict[str, Any]) -> bytes:
    return (json.dumps(message, default=_default, separators=(",", ":")) + "\n").encode()


def decode(line: bytes | str) -> dict[str, Any]:
    message = json.loads(line, object_hook=_hook)
    if not isinstance(message, dict):
        raise ValueError("worker message is not a JSON object")
    return message
