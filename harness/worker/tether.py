"""The worker on an SSH board, tethered to its SSH session (standard library only; the ssh backend,
harness.backends.ssh, copies this file to the board with the worker).

    python3 -m harness.worker.tether FOLDER -- python3 -m harness.worker

sshd starts no pseudo-terminal for the session (binary-safe pipes), so nothing signals the worker
when the connection drops: sshd only closes the session's pipes, and a worker busy in a model
would notice at its next read, if ever. The tether notices at once, because it always reads:

- it starts the worker in a process group of its own, with PR_SET_PDEATHSIG=SIGKILL (the worker
  dies with the tether), and writes "TETHER_PID -WORKER_PGID" to FOLDER/pids for the host's
  cleanup (`kill -KILL -- $(cat FOLDER/pids)`);
- it relays its stdin to the worker and the worker's stdout to its own;
- at the end of its stdin (the host closed the session, or sshd closed the pipes of a dropped
  connection), on SIGHUP/SIGTERM, or when its stdout is gone, it gives the worker GRACE_S to exit
  by itself, then kills the worker's group;
- it exits with the worker's status (128 + N for signal N), which ssh hands back to the host.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import subprocess
import sys
import time

GRACE_S = 2.0  # after `shutdown` the worker exits within milliseconds
PR_SET_PDEATHSIG = 1


class Ended(Exception):
    """The session ended (signal)."""


def _die_with_parent() -> None:
    # Not Linux (no prctl): the host's cleanup still kills the group.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _raise_ended(signum: int, frame: object) -> None:
    raise Ended(signal.Signals(signum).name)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _relay(worker: subprocess.Popen[bytes]) -> None:
    """Copy stdin -> worker and worker -> stdout until one side ends; after the end of stdin,
    the worker's last words (a reply, its exit) for up to GRACE_S."""
    assert worker.stdin is not None and worker.stdout is not None
    inbound, outbound = sys.stdin.fileno(), worker.stdout.fileno()
    sources, deadline = [inbound, outbound], None
    while deadline is None or time.monotonic() < deadline:
        wait = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        readable, _, _ = select.select(sources, [], [], wait)
        if outbound in readable:
            chunk = os.read(outbound, 1 << 20)
            if not chunk:  # the worker ended
                return
            _write_all(1, chunk)
        if inbound in readable:
            chunk = os.read(inbound, 1 << 20)
            if chunk:
                _write_all(worker.stdin.fileno(), chunk)
                continue
            # The session ended: EOF for the worker (between requests it exits by itself).
            worker.stdin.close()
            sources, deadline = [outbound], time.monotonic() + GRACE_S


def _status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        sys.stderr.write("usage: python3 -m harness.worker.tether FOLDER -- WORKER COMMAND...\n")
        return 2
    folder, command = argv[0], argv[2:]
    for signum in (signal.SIGHUP, signal.SIGTERM):
        signal.signal(signum, _raise_ended)
    worker = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,  # its own group: killing it spares the tether
        preexec_fn=_die_with_parent,
    )
    # Written aside and renamed: a reader never sees the file half written.
    with open(os.path.join(folder, "pids.partial"), "w") as pids:
        pids.write(f"{os.getpid()} -{worker.pid}\n")
    os.replace(os.path.join(folder, "pids.partial"), os.path.join(folder, "pids"))
    try:
        _relay(worker)
    except (Ended, OSError):  # a signal, or stdout/stdin gone with the connection
        pass
    finally:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        assert worker.stdin is not None
        with contextlib.suppress(OSError):
            worker.stdin.close()
        deadline = time.monotonic() + 0.2  # a worker whose stdout just closed is exiting
        while worker.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)  # the worker, if still there, and its children
        worker.wait()
    return _status(worker.returncode)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
