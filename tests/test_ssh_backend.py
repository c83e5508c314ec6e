"""The ssh backend: pure parts (profile fields, OpenSSH's messages, the board-side command), the
tether on this machine, and real boards: sshd in containers on 127.0.0.1 (tests/sshboard), an
amd64 one natively and an arm64 one under QEMU, Debian without any runtime (the backend pushes
them). Faults are injected for real: an unknown host key, an unauthorised key, the wrong arch, no
Python, a full /tmp, a board that drops off, an SSH session killed under a busy worker.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sshboard.board import Board, build_image, keypair, start_board

from harness.backends.base import (
    BackendUnavailable,
    WorkerClient,
    WorkerCrashed,
    WorkerTimeout,
    greet,
    load,
)
from harness.backends.ssh import SshBackend
from harness.backends.ssh_board import (
    check_probe,
    data_names,
    glibc_needed,
    libc_problem,
    worker_command,
)
from harness.backends.ssh_connection import (
    Destination,
    diagnose,
)
from harness.devices import DeviceProfile, load_profile, load_profiles
from harness.errors import ConfigError
from harness.worker.protocol import decode, encode

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "examples" / "digits"
MODEL, DATA = DIGITS / "models" / "digits.onnx", DIGITS / "data" / "digits_test.npz"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
LONG_BENCH = 3_000_000  # inferences of the digits MLP: tens of seconds, longer than any test waits


def write_profile(folder: Path, text: str, name: str = "pi") -> Path:
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


# -- pure parts ------------------------------------------------------------------------------
def test_an_ssh_profile_reads_every_field(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "pi"
    key.parent.mkdir()
    key.write_text("not a key")
    key.chmod(0o600)
    (tmp_path / "known_hosts").write_text("")
    profile = load_profile(
        write_profile(
            tmp_path,
            'backend = "ssh"\nhost = "pi.lan"\nport = 2222\nuser = "ci"\n'
            'identity_file = "keys/pi"\nknown_hosts = "known_hosts"\npython = "python3.11"\n'
            'arch = "arm64"\ncpus = 4\nthreads = 4\nmemory = "4g"\nemulates = "rpi4"\n',
        )
    )
    assert (profile.host, profile.port, profile.user) == ("pi.lan", 2222, "ci")
    assert profile.identity_file == key and profile.known_hosts == tmp_path / "known_hosts"
    assert profile.python == "python3.11" and profile.emulates == "rpi4"
    # A real arm64 board: not emulated, whatever this machine is.
    assert not profile.emulated and profile.fidelity == "measured"
    options = Destination.of(profile).options()
    for pair in (["-p", "2222"], ["-l", "ci"], ["-i", str(key)], ["-o", "BatchMode=yes"]):
        assert any(options[i : i + 2] == pair for i in range(len(options)))
    assert f"UserKnownHostsFile={tmp_path / 'known_hosts'}" in options
    assert "StrictHostKeyChecking=yes" in options and "IdentitiesOnly=yes" in options


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('backend = "ssh"\narch = "arm64"\n', 'needs host = "<name or address>"'),
        ('backend = "ssh"\nhost = "pi"\n', 'needs its arch: arch = "arm64" or "amd64"'),
        ('backend = "ssh"\nhost = "pi"\narch = "arm64"\nport = 70000\n', "is not a TCP port"),
        ('backend = "ssh"\nhost = "pi"\narch = "arm64"\nidentity_file = "nope"\n', "nope does"),
        ('backend = "docker"\nhost = "pi"\n', "host only apply to boards reached over SSH; add"),
        ('backend = "telnet"\n', "is not one of local, docker, ssh"),
    ],
)
def test_ssh_profile_mistakes_name_the_file_and_the_fix(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write_profile(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_profile(path)
    assert str(error.value).startswith(str(path)) and message in str(error.value)


def test_a_key_others_can_read_is_refused_with_chmod(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("x")
    key.chmod(0o644)
    path = write_profile(tmp_path, f'backend = "ssh"\nhost = "pi"\narch = "arm64"\n'
                         f'identity_file = "{key}"\n')  # fmt: skip
    with pytest.raises(ConfigError, match=f"chmod 600 {key}"):
        load_profile(path)


# OpenSSH 9.2's own words (captured from the failures the board tests inject).
UNKNOWN = (
    "No ED25519 host key is known for [127.0.0.1]:32770 and you have requested strict "
    "checking.\r\nHost key verification failed.\r\n"
)
CHANGED = "@@@@@@\r\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r\n"
DENIED = "board@127.0.0.1: Permission denied (publickey,password).\r\n"


def test_diagnose_gives_the_command_that_adds_an_unknown_host() -> None:
    where = Destination("127.0.0.1", 32770, "board", known_hosts=Path("/k/known"))
    text = diagnose(UNKNOWN, where, {"hostname": "127.0.0.1", "port": "32770"})
    assert "is not in /k/known, and unknown hosts are refused" in text
    assert text.endswith("ssh-keyscan -p 32770 127.0.0.1 >> /k/known")
    assert "ssh-keygen -f /k/known -R '[127.0.0.1]:32770'" in diagnose(CHANGED, where, {})
    denied = diagnose(DENIED, Destination("pi", user="ci", identity_file=Path("/k/id")), {})
    assert "never types a password (BatchMode)" in denied
    assert "ssh-copy-id -i /k/id -p 22 ci@pi" in denied


def test_probe_problems_are_one_line_with_the_fix() -> None:
    profile = load_profiles()["rpi4"]
    ssh = DeviceProfile(**{**profile.__dict__, "backend": "ssh", "host": "pi"})
    wrong = check_probe({"machine": "x86_64", "python": "3.11", "folder": "/tmp/h"}, ssh, "pi")
    assert wrong == (
        f'pi is x86_64 (uname -m) but {profile.source} says arch = "arm64" (aarch64); fix arch '
        "in the profile, or its host"
    )
    missing = check_probe({"machine": "aarch64", "python": "missing"}, ssh, "pi")
    assert missing is not None and "has no `python3` on its PATH" in missing
    assert check_probe({"machine": "aarch64", "python": "3.11", "folder": "/t"}, ssh, "pi") is None


def test_the_boards_glibc_is_checked_against_the_wheels_tags(tmp_path: Path) -> None:
    for name, tag in (("numpy", "cp311-cp311-manylinux_2_27_aarch64"), ("ort", "cp311-cp311-"
                      "manylinux_2_28_aarch64"), ("fb", "py3-none-any"), ("old", "cp310-abi3-"
                      "manylinux2014_aarch64")):  # fmt: skip
        (tmp_path / f"{name}.dist-info").mkdir()
        (tmp_path / f"{name}.dist-info" / "WHEEL").write_text(f"Wheel-Version: 1.0\nTag: {tag}\n")
    assert glibc_needed(tmp_path) == (2, 28)
    assert libc_problem("glibc 2.36", (2, 28), "pi") is None
    old = libc_problem("glibc 2.24", (2, 28), "pi")
    assert old is not None and old.startswith(
        "pi has glibc 2.24, and the runtimes' wheels need 2.28"
    )
    musl = libc_problem(" ", (2, 28), "pi")
    assert musl is not None and "use a glibc-based OS on the board" in musl


def test_worker_command_quotes_what_it_passes(tmp_path: Path) -> None:
    profile = load_profiles()["rpi4"]
    command = worker_command(profile, "/tmp/h x", "/home/b/.cache/harness-board/k", 2)
    assert command.startswith("cd '/tmp/h x' && exec env ")
    assert "'PYTHONPATH=/tmp/h x/pkg:/home/b/.cache/harness-board/k'" in command
    assert "OMP_NUM_THREADS=2" in command
    assert command.endswith("-m harness.worker.tether '/tmp/h x' -- python3 -s -m harness.worker")
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    names = data_names([a / "m.onnx", a / "m.onnx.data", b / "d.npz", a / "m.onnx"])
    assert names == {
        a / "m.onnx": "data/0/m.onnx",
        a / "m.onnx.data": "data/0/m.onnx.data",  # external data beside its model
        b / "d.npz": "data/1/d.npz",
    }


# -- the tether, on this machine ------------------------------------------------------------
def tethered(tmp_path: Path, *worker: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "harness.worker.tether", str(tmp_path), "--", *worker]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 30
    while not (tmp_path / "pids").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return process


def gone(pid: int, seconds: float = 10.0) -> bool:
    """Whether process `pid` is gone (or a zombie) within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def test_the_tether_relays_the_protocol_and_the_exit_status(tmp_path: Path) -> None:
    process = tethered(tmp_path, sys.executable, "-m", "harness.worker")
    assert process.stdin is not None and process.stdout is not None
    # As the host does: the reply is read before the session ends (closing stdin first gives a
    # worker still starting only the tether's grace period, which a loaded machine can exceed).
    process.stdin.write(encode({"id": 1, "op": "hello", "formats": []}))
    process.stdin.flush()
    assert decode(process.stdout.readline())["result"]["machine"]
    process.communicate(timeout=60)
    assert process.returncode == 0
    process = tethered(tmp_path, sys.executable, "-c", "import os; os.kill(os.getpid(), 9)")
    process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGKILL  # what ssh hands back: "killed by SIGKILL"


def test_the_end_of_its_session_kills_a_busy_worker(tmp_path: Path) -> None:
    process = tethered(tmp_path, sys.executable, "-c", "import time; time.sleep(600)")
    worker = -int((tmp_path / "pids").read_text().split()[1])
    assert process.stdin is not None
    process.stdin.close()  # what sshd does when the connection drops
    assert gone(worker)
    process.wait(10)


def test_a_killed_tether_takes_its_worker_with_it(tmp_path: Path) -> None:
    process = tethered(tmp_path, sys.executable, "-c", "import time; time.sleep(600)")
    worker = -int((tmp_path / "pids").read_text().split()[1])
    process.kill()
    process.wait()
    assert gone(worker)  # PR_SET_PDEATHSIG


# -- real boards -----------------------------------------------------------------------------
def board_for(client: Any, arch: str, folder: Path) -> Board:
    """A running board container (its image built if missing: a cache hit after the first)."""
    from harness.images import BuildError

    if shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        reason = "the OpenSSH client is not installed (apt-get install openssh-client)"
        if IN_CI:
            pytest.fail(f"{reason} (CI=true: scripts/bootstrap.sh installs it)", pytrace=False)
        pytest.skip(reason)
    try:
        build_image(client, arch)
    except BuildError as exc:
        if IN_CI:
            pytest.fail(f"cannot build the {arch} ssh board image: {exc}", pytrace=False)
        pytest.skip(f"cannot build the {arch} ssh board image here: {exc}")
    return start_board(client, arch, folder)


@pytest.fixture(scope="module")
def amd64_board(docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Board]:
    board = board_for(docker_client, "amd64", tmp_path_factory.mktemp("board-amd64"))
    yield board
    board.remove()


@pytest.fixture(scope="module")
def arm64_board(
    docker_client: Any, arm64_binfmt: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Board]:
    board = board_for(docker_client, "arm64", tmp_path_factory.mktemp("board-arm64"))
    yield board
    board.remove()


def start(profile: DeviceProfile, files: list[Path]) -> tuple[WorkerClient, Any]:
    target = SshBackend().start(profile, files, 1)
    return WorkerClient(target, profile.name), target


def loaded(board: Board, folder: Path) -> tuple[WorkerClient, Any]:
    profile = load_profile(board.profile(folder, "board"))
    client, target = start(profile, [MODEL, DATA])
    greet(client, [MODEL], 120)
    load(client, "m", MODEL, DATA, 120, threads=1, output="probabilities")
    return client, target


def assert_left_nothing(board: Board) -> None:
    deadline = time.monotonic() + 10
    while board.processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert board.processes() == []
    assert board.exec("ls -A /tmp")[1].split() == []


INT8 = DIGITS / "models" / "digits_int8.tflite"


def top1(client: WorkerClient, model: Path, count: int) -> list[int]:
    load(client, model.stem, model, DATA, 120, threads=1, output="probabilities")
    found = client.request("evaluate", 300, model_id=model.stem, task="classification", limit=count)
    return [int(i) for i in found["top1"]]


def host_top1(count: int) -> dict[Path, list[int]]:
    """Both models' answers from a worker on this machine, natively."""
    from harness.backends.local import LocalBackend

    client = WorkerClient(LocalBackend().start(load_profiles()["host"], [], 1), "host")
    try:
        return {model: top1(client, model, count) for model in (MODEL, INT8)}
    finally:
        client.close()


def check_board_runs_the_worker(board: Board, folder: Path, count: int) -> dict[str, Any]:
    """ONNX Runtime and LiteRT on the board (pushed there) answer as they do here."""
    import onnxruntime

    profile = load_profile(board.profile(folder, "board"))
    client, target = start(profile, [MODEL, INT8, DATA])
    assert target.fidelity == "measured"
    assert target.limits["machine"] == {"amd64": "x86_64", "arm64": "aarch64"}[board.arch]
    hello = greet(client, [MODEL, INT8], 120)
    assert hello["versions"]["onnxruntime"] == onnxruntime.__version__  # the pinned wheels
    assert hello["machine"] == target.limits["machine"]
    expected = host_top1(count)
    assert {model: top1(client, model, count) for model in (MODEL, INT8)} == expected
    assert any("harness.worker" in line for line in board.processes())
    client.close()
    assert_left_nothing(board)
    cache = board.exec("ls ~board/.cache/harness-board", user="board")[1].split()
    assert cache == [Path(target.limits["runtimes"]).name]
    return target.limits


def test_amd64_board_runs_the_worker_with_pushed_runtimes(
    amd64_board: Board, tmp_path: Path
) -> None:
    assert amd64_board.exec("python3 -c 'import onnxruntime'")[0] != 0  # nothing preinstalled
    limits = check_board_runs_the_worker(amd64_board, tmp_path, 450)
    marker = f"{limits['runtimes']}/.complete"
    before = amd64_board.exec(f"stat -c %Y {marker}")[1]
    check_board_runs_the_worker(amd64_board, tmp_path, 20)  # the cached runtimes again
    assert amd64_board.exec(f"stat -c %Y {marker}")[1] == before


def test_runtimes_no_session_used_for_a_month_are_removed_from_the_board(
    amd64_board: Board, tmp_path: Path
) -> None:
    """Each harness version or Python pushes its own runtimes (hundreds of MB): a session marks
    its own used and removes those unused for KEEP_DAYS, and partial pushes a day old."""
    from harness.backends.ssh_board import KEEP_DAYS

    cache = "/home/board/.cache/harness-board"
    old, recent, marked_old, partial = "0old", "0recent", "0marked", "0key.partial"
    amd64_board.exec(
        f"mkdir -p {cache} && cd {cache} && mkdir {old} {recent} {marked_old} {partial} && "
        f"touch {old}/.complete {recent}/.complete {marked_old}/.complete && "
        f"touch {recent}/.used && touch -d '{KEEP_DAYS + 9} days ago' {old}/.complete && "
        f"touch -d '{KEEP_DAYS + 9} days ago' {marked_old}/.used && "
        f"touch -d '{KEEP_DAYS - 9} days ago' {marked_old}/.complete && "  # the marker decides
        f"touch -d '2 days ago' {partial}",
        user="board",
    )
    client, target = start(load_profile(amd64_board.profile(tmp_path, "board")), [MODEL])
    client.close()
    ours = Path(target.limits["runtimes"]).name
    listed = amd64_board.exec(f"ls {cache}", user="board")[1].split()
    assert sorted(listed) == sorted([ours, recent])
    assert amd64_board.exec(f"test -f {cache}/{ours}/.used")[0] == 0
    amd64_board.exec(f"rm -rf {cache}/{recent}", user="board")
    assert_left_nothing(amd64_board)


def test_arm64_board_under_qemu_runs_the_worker(arm64_board: Board, tmp_path: Path) -> None:
    check_board_runs_the_worker(arm64_board, tmp_path, 20)


def refused(profile: Path) -> str:
    """start()'s BackendUnavailable message, failing fast (no prompt, no hang)."""
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as error:
        SshBackend().start(load_profile(profile), [MODEL], 1)
    assert time.monotonic() - started < 30
    message = str(error.value)
    assert "\n" not in message
    return message


def test_an_unknown_host_key_is_refused_with_the_command_that_adds_it(
    amd64_board: Board, tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    message = refused(amd64_board.profile(tmp_path, "b", known_hosts=str(empty)))
    assert f"ssh-keyscan -p {amd64_board.port} 127.0.0.1 >> {empty}" in message
    assert empty.read_text() == ""  # never added silently


def test_a_changed_host_key_and_an_unreachable_board_are_refused(
    amd64_board: Board, tmp_path: Path
) -> None:
    impostor = keypair(tmp_path, "impostor").with_suffix(".pub").read_text().split()
    changed = tmp_path / "known_hosts"
    changed.write_text(f"[127.0.0.1]:{amd64_board.port} {impostor[0]} {impostor[1]}\n")
    message = refused(amd64_board.profile(tmp_path, "b", known_hosts=str(changed)))
    assert "the board was reinstalled, or someone is in between" in message
    assert f"ssh-keygen -f {changed} -R '[127.0.0.1]:{amd64_board.port}'" in message
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    message = refused(amd64_board.profile(tmp_path, "b", port=free))
    assert message.endswith(f"port {free}: Connection refused")


def test_a_key_the_board_does_not_know_fails_without_a_password_prompt(
    amd64_board: Board, tmp_path: Path
) -> None:
    stranger = keypair(tmp_path, "stranger")
    message = refused(amd64_board.profile(tmp_path, "b", identity_file=str(stranger)))
    assert "refused the login (board@127.0.0.1: Permission denied (publickey,password).)" in message
    assert f"ssh-copy-id -i {stranger}" in message


def test_the_wrong_arch_and_a_missing_python_fail_and_leave_nothing(
    amd64_board: Board, tmp_path: Path
) -> None:
    message = refused(amd64_board.profile(tmp_path, "b", arch="arm64", emulates="rpi4"))
    assert "is x86_64 (uname -m) but" in message and 'says arch = "arm64"' in message
    assert_left_nothing(amd64_board)
    assert amd64_board.exec("mv /usr/bin/python3 /usr/bin/python3.hidden")[0] == 0
    try:
        message = refused(amd64_board.profile(tmp_path, "b"))
    finally:
        amd64_board.exec("mv /usr/bin/python3.hidden /usr/bin/python3")
    assert "has no `python3` on its PATH: install Python 3 on the board" in message
    assert_left_nothing(amd64_board)


def test_a_full_disk_fails_the_copy_and_leaves_nothing(amd64_board: Board, tmp_path: Path) -> None:
    amd64_board.exec("dd if=/dev/zero of=/tmp/fill bs=64k 2>/dev/null; true")
    try:
        message = refused(amd64_board.profile(tmp_path, "b"))
        assert amd64_board.exec("ls -A /tmp")[1].split() == ["fill"]
    finally:
        amd64_board.exec("rm -f /tmp/fill")
    assert "no space left on the board while copying the worker and the model files" in message
    assert_left_nothing(amd64_board)


def test_a_full_disk_under_the_runtimes_cache_fails_their_push(
    docker_client: Any, amd64_board: Board, tmp_path: Path
) -> None:
    """~/.cache on a 32 MB filesystem: the runtimes (hundreds of MB) cannot be pushed."""
    board = start_board(docker_client, "amd64", tmp_path, cache_mb=32)
    try:
        message = refused(board.profile(tmp_path, "b"))
        assert "no space left on the board while copying the runtimes (ai-edge-litert==" in message
        assert message.endswith("free space there (df -h ~/.cache/harness-board)")
        assert board.exec("ls -A /home/board/.cache/harness-board")[1].split() == []
        assert_left_nothing(board)
    finally:
        board.remove()


def test_a_timeout_kills_the_worker_on_the_board(amd64_board: Board, tmp_path: Path) -> None:
    client, _ = loaded(amd64_board, tmp_path)
    with pytest.raises(WorkerTimeout):
        client.request("bench", 1.0, model_id="m", samples=LONG_BENCH)
    assert_left_nothing(amd64_board)


def test_a_dropped_ssh_session_ends_a_busy_worker(amd64_board: Board, tmp_path: Path) -> None:
    """The host's ssh dies (pytest killed) while the worker is inside a long request: the board
    ends the worker by itself (the tether), before any cleanup from the host."""
    client, target = loaded(amd64_board, tmp_path)
    target.channel.send(encode({"id": 9, "op": "bench", "model_id": "m", "samples": LONG_BENCH}))
    time.sleep(0.5)
    assert any("harness.worker" in line for line in amd64_board.processes())
    target.channel.process.process.kill()
    deadline = time.monotonic() + 15
    while amd64_board.processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert amd64_board.processes() == []
    target.channel.close(kill=True)  # the host's cleanup: the folder
    assert_left_nothing(amd64_board)


def test_a_killed_pytest_leaves_no_ssh_connection_behind(
    amd64_board: Board, tmp_path: Path
) -> None:
    profile = amd64_board.profile(tmp_path, "b")
    script = (
        "import time\n"
        "from pathlib import Path\n"
        "from harness.backends.ssh_connection import Destination, connection\n"
        "from harness.devices import load_profile\n"
        f"master = connection(Destination.of(load_profile(Path({str(profile)!r}))))._master\n"
        "print(master.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    session = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert session.stdout is not None
    master = int(session.stdout.readline())
    assert not gone(master, 0.5)
    session.kill()  # no atexit, no finally: only the kernel knows
    session.wait()
    assert gone(master)


def test_a_board_that_drops_off_mid_run_fails_the_request_in_one_line(
    amd64_board: Board, tmp_path: Path
) -> None:
    client, target = loaded(amd64_board, tmp_path)
    stopper = threading.Timer(1.0, amd64_board.container.stop, kwargs={"timeout": 0})
    stopper.start()
    try:
        with pytest.raises(WorkerCrashed) as crash:
            client.request("bench", 120, model_id="m", samples=LONG_BENCH)
        first = str(crash.value).splitlines()[0]
        assert "lost its SSH connection to board@127.0.0.1" in first
        assert "during 'bench'" in first
    finally:
        stopper.join()
        amd64_board.restart()
    assert_left_nothing(amd64_board)


# -- through pytest: items fail with the reason; verdicts as on the container it stands for ----
def digits_copy(folder: Path, board: Board, **overrides: Any) -> Path:
    shutil.copytree(DIGITS, folder / "digits", ignore=shutil.ignore_patterns(".harness"))
    matrix = folder / "digits" / "device-matrix"
    matrix.mkdir()
    board.profile(matrix, "board", **overrides)
    return folder / "digits"


def run_pytest(folder: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *arguments],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_board_fault_fails_its_items_with_one_line_not_the_session(
    amd64_board: Board, tmp_path: Path
) -> None:
    folder = digits_copy(tmp_path, amd64_board, arch="arm64", emulates="rpi4")
    done = run_pytest(folder, "--device=board", "-k", "digits-onnx and (accuracy or latency)")
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 failed" in done.stdout and "error" not in done.stdout.splitlines()[-1]
    assert "is x86_64 (uname -m) but" in done.stdout


def verdicts(path: Path) -> dict[tuple[str, str], tuple[str, list[tuple[str, bool | None]]]]:
    document = json.loads(path.read_text())
    return {
        (r["suite"], r["model"]): (
            r["verdict"]["status"],
            [(c["gate"], c["passed"]) for c in r["verdict"]["checks"]],
        )
        for r in document["results"]
    }


def test_amd64_board_gives_the_verdicts_of_the_x86_64_container(
    amd64_board: Board, docker_client: Any, tmp_path: Path
) -> None:
    """The done-means check, kept small: the int8 digits model (and its float parity partner)."""
    from harness.images import build

    build(load_profiles()["x86-64"], client=docker_client)  # a cache hit after bootstrap
    folder = digits_copy(tmp_path, amd64_board)
    chosen = ["-k", "digits-int8 and not robustness"]
    for device in ("x86-64", "board"):
        done = run_pytest(folder, f"--device={device}", f"--harness-json={device}.json", *chosen)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    container, board = verdicts(folder / "x86-64.json"), verdicts(folder / "board.json")
    assert container == board and len(board) >= 5
    fidelity = {r["fidelity"] for r in json.loads((folder / "board.json").read_text())["results"]}
    assert fidelity == {"measured"}


def test_calibrate_measures_on_the_board_and_fits_its_counterpart(
    amd64_board: Board, counting_plugin: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`harness calibrate --device <ssh board>`: measured on the board, counted as the profile it
    stands for (x86-64 here), written as that profile's timing model with the board's band."""
    from harness.cli import main
    from harness.timing import cpu_for_profile

    matrix = tmp_path / "device-matrix"
    matrix.mkdir()
    amd64_board.profile(matrix, "board", emulates="x86-64")
    models = [str(MODEL), str(DIGITS / "models" / "digits_float.tflite"), str(INT8)]
    code = main(["calibrate", "--device", "board", "--models", *models, "--matrix", str(matrix),
                 "--seconds", "0.3"])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "held out (leave-one-out)" in out.out
    x86 = load_profiles(matrix)["x86-64"]
    assert x86.timing_model == (matrix / "timing" / "board.toml").resolve()
    assert cpu_for_profile(x86).band_source.startswith("validated on 3 models on board")
    assert_left_nothing(amd64_board)
