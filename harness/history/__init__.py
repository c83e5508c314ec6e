"""The results history, in one of three stores chosen by where it is (like pytest-benchmark's
storage URIs), all keeping the same records (harness.history.records):

- a path, or `sqlite:PATH`: one SQLite file, the default (`.harness/history.sqlite`):
  sqlite.py;
- `git:REMOTE[#BRANCH]` or `git+URL[#BRANCH]`: one file per run on a branch (default
  `harness-history`), read through a local SQLite cache: gitbranch.py;
- `postgresql://...` (or `postgres://`): one PostgreSQL database for many repositories:
  postgresql.py.

REMOTE is a remote of the repository in the current folder (`git:origin`), a path to a
repository (`git:/srv/history.git`) or a URL (`git:https://github.com/OWNER/NAME.git`).
Trend judgement is pure and shared (trends.py); so is the SQL (sql.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import ConfigError
from harness.history.gitbranch import DEFAULT_BRANCH

if TYPE_CHECKING:
    from harness.history.sql import Queries

__all__ = ["DEFAULT_BRANCH", "describe", "kind_of", "open_history"]


def kind_of(location: str) -> str:
    """ "sqlite", "git" or "postgresql": which store a --history location names."""
    if location.startswith(("postgresql://", "postgres://")):
        return "postgresql"
    if location.startswith(("git:", "git+")):
        return "git"
    if "://" in location and not location.startswith("sqlite:"):
        scheme = location.split("://", 1)[0]
        raise ConfigError(
            f"--history {location}: no history store for {scheme}://; use a path (SQLite), "
            "git:REMOTE[#BRANCH] (a git branch) or postgresql://USER@HOST/DATABASE"
        )
    return "sqlite"


def describe(location: str) -> str:
    """The location with any password left out (for messages and logs)."""
    if kind_of(location) == "postgresql":
        from harness.history.postgresql import redact

        return redact(location)
    return location


def open_history(
    location: str,
    *,
    repository: str | None = None,
    readonly: bool = False,
    cache: Path | None = None,
    create: bool = True,
) -> Queries:
    """The store at `location`; reads scoped to `repository` when given. `readonly`: a git
    branch is fetched, never pushed. `cache`: where a git branch's clone and SQLite cache live
    (default: under $HARNESS_CACHE). `create`: False refuses a SQLite file that does not exist."""
    kind = kind_of(location)
    if kind == "postgresql":
        from harness.history.postgresql import PostgresHistory

        return PostgresHistory(location, repository=repository)
    if kind == "git":
        from harness.history.gitbranch import GitHistory

        return GitHistory.open(location, repository=repository, readonly=readonly, cache=cache)
    from harness.history.sqlite import Store

    path = Path(location.removeprefix("sqlite:"))
    if not create and not path.is_file():
        raise ConfigError(
            f"no history at {path}: pass the SQLite file `pytest` writes, git:REMOTE[#BRANCH] "
            "or postgresql://..."
        )
    return Store(path, repository=repository)
