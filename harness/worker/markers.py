"""Marker system calls around a counted region, for harness.counting's QEMU plugin.

`begin()` and `end()` each make one system call that the plugin (harness/counting/insn_count.c)
recognises by its number and arguments: ``lseek(-1, MAGIC, SEEK_SET)``. lseek takes a full 64-bit
offset, so the magic number is unambiguous, and fd -1 makes the call fail with EBADF on every
system: without the counting emulator the markers are no-ops (about a microsecond each). Python's
os.lseek passes its arguments straight to the C library's lseek, which makes exactly this system
call (number 62 on aarch64, 8 on x86_64).

Standard library only: this module runs inside the worker, in the device.
"""

from __future__ import annotations

import contextlib
import os

MARKER_FD = -1
# b"hrnsBEGN" and b"hrnsEND." as big-endian integers; both below 2**63, so they fit an off_t.
# Keep in step with MARKER_BEGIN / MARKER_END in harness/counting/insn_count.c.
BEGIN = 0x68726E734245474E
END = 0x68726E73454E442E


def _mark(magic: int) -> None:
    with contextlib.suppress(OSError):  # EBADF, always: the call is there to be seen
        os.lseek(MARKER_FD, magic, os.SEEK_SET)


def begin() -> None:
    """Start of the counted region."""
    _mark(BEGIN)


def end() -> None:
    """End of the counted region: the plugin appends this region's count to its outfile."""
    _mark(END)
