"""Progress of a long item: `accuracy[mnv2@rpi4] agreement 23/64, ~40 s left`, written as its own
line in pytest's terminal once an item has run a few seconds, then at most every few seconds.
Under pytest-xdist workers there is no terminal to write to, and nothing is written."""

from __future__ import annotations

import time
from collections.abc import Callable

AFTER_S = 5.0  # quicker items say nothing
EVERY_S = 10.0


class Progress:
    def __init__(
        self,
        name: str,
        write: Callable[[str], None] | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.write = write
        self.clock = clock
        self.started = clock()
        self.last_written = -EVERY_S  # the first line may come as soon as AFTER_S has passed

    def __call__(self, what: str, done: int, total: int) -> None:
        if self.write is None:
            return
        now = self.clock()
        elapsed = now - self.started
        if elapsed < AFTER_S or now - self.last_written < EVERY_S:
            return
        self.last_written = now
        line = f"  {self.name} {what} {done}/{total}"
        if 0 < done < total:
            line += f", ~{elapsed / done * (total - done):.0f} s left"
        self.write(line)


def silent(what: str, done: int, total: int) -> None:
    """The progress of an item nobody watches."""
