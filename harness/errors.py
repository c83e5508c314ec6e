"""Usage errors that name the file, the key and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any


class ConfigError(Exception):
    """A mistake in the user's config, device profile or command line."""


def check_keys(table: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    """Reject unknown keys, suggesting the nearest valid one."""
    known = sorted(allowed)
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(known)}"
            raise ConfigError(f"{where}: unknown key {key!r}; {hint}")


def expect_type(value: Any, kind: type | tuple[type, ...], where: str, what: str) -> Any:
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        kind_ok = False
    else:
        kind_ok = isinstance(value, kind)
    if not kind_ok:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{where}: {what} must be {names}, not {value!r}")
    return value
