"""Symbolic links a checkout may hold where harness writes or reads the change's files.

A pull request can commit a link (`.harness -> /somewhere/else`, a model file that points outside
the repository): harness never writes through one below the folder it writes into, and under a
base it measures the change's model files only as regular files. Ground floor: no harness import.
"""

from __future__ import annotations

import os
from pathlib import Path


def link_on_path(path: os.PathLike[str] | str, root: os.PathLike[str] | str) -> Path | None:
    """The first symbolic link among `path` and the folders between `root` and it (None: no
    link; a `path` outside `root` is checked up to the filesystem's root)."""
    top = os.path.abspath(root)
    current = os.path.abspath(path)
    chain = []
    while True:
        chain.append(current)
        parent = os.path.dirname(current)
        if current == top or parent == current:
            break
        current = parent
    for part in reversed(chain):
        if part != top and os.path.islink(part):
            return Path(part)
    return None


def refuse_links(path: Path, root: Path, what: str) -> Path:
    """`path`, unless a link lies on the way from `root` to it: then OSError naming it."""
    link = link_on_path(path, root)
    if link is not None:
        raise OSError(
            f"{what} {path} is not written: {link} is a symbolic link (to {os.readlink(link)}), "
            "and harness never writes through a link a checkout may have placed"
        )
    return path
