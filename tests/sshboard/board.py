"""SSH "boards" for the tests: Debian with python3 and openssh-server but no runtimes, in a
container, sshd published on 127.0.0.1 only, with a client key and a host key generated here.

The image is the device image's Debian (harness.images: the x86-64 one for amd64, the rpi4 one for
arm64, built by .ci/run's bootstrap) with its runtimes folder (/opt/site) removed and
openssh-server installed by apt-get in a container (under QEMU for arm64), committed, and tagged by
a hash of the base image's tag and this recipe, so CI builds it once per cache. Measured here:
amd64 about 20 s, arm64 90 s (a debootstrap of its own took 56 s and 273 s). Nothing of
onnxruntime or LiteRT is left in it: the ssh backend must push and install them.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.images.common import BuildError, locked

BOARD_VERSION = 1  # bump when the image's assembly changes
REPOSITORY = "harness-sshboard"
DEVICE = {"amd64": "x86-64", "arm64": "rpi4"}  # whose device image the board starts from
USER = "board"
LABEL = "harness.sshboard"
INSTALL = """set -e
rm -rf /opt/site
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends openssh-server >/dev/null
rm -rf /var/lib/apt/lists/* /etc/ssh/ssh_host_*
"""
# Run as the container's command: the user (with a password, so that a client that could fall
# back to a password prompt would), our keys, then sshd in the foreground.
START = f"""set -e
id {USER} >/dev/null 2>&1 || useradd -m -s /bin/sh {USER}
echo '{USER}:not-a-secret-but-never-typed' | chpasswd
[ -z "${{QEMU_CPU:-}}" ] || echo "QEMU_CPU=$QEMU_CPU" > /etc/environment  # sessions: pam_env
mkdir -p /run/sshd /home/{USER}/.ssh
cp /setup/authorized_keys /home/{USER}/.ssh/authorized_keys
chown -R {USER}:{USER} /home/{USER}/.ssh
chmod 700 /home/{USER}/.ssh && chmod 600 /home/{USER}/.ssh/authorized_keys
exec /usr/sbin/sshd -D -e -h /setup/host_key -o PasswordAuthentication=yes
"""


def image_tag(base: str, arch: str) -> str:
    text = f"{base}:{INSTALL}:{BOARD_VERSION}"
    return f"{REPOSITORY}:{arch}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def build_image(client: Any, arch: str) -> str:
    """The board image for `arch`, built unless it exists (its base device image too, which
    needs root the first time)."""
    import docker.errors

    from harness.devices import load_profiles
    from harness.images import build

    profile = load_profiles()[DEVICE[arch]]
    base = build(profile, client=client)
    tag = image_tag(base, arch)
    with locked(tag):
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.get(tag)
            return tag
        environment = {"QEMU_CPU": profile.cpu} if profile.cpu else {}
        container = client.containers.run(
            base,
            command=["sh", "-c", INSTALL],
            platform=profile.platform,
            environment=environment,
            detach=True,
        )
        try:
            status = container.wait(timeout=1800)
            if status.get("StatusCode") != 0:
                logs = container.logs().decode(errors="replace")[-3000:]
                raise BuildError(f"installing openssh-server for the {arch} board failed:\n{logs}")
            repository, _, version = tag.partition(":")
            container.commit(repository, version, changes=[f"LABEL {LABEL}=1"])
        finally:
            container.remove(force=True)
    return tag


def keypair(folder: Path, name: str) -> Path:
    """A new ed25519 key pair (no passphrase); returns the private key's path."""
    key = folder / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True
    )
    return key


def _setup_archive(authorized: str, host_key: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data, mode in (
            ("setup/authorized_keys", authorized.encode(), 0o644),
            ("setup/host_key", host_key.read_bytes(), 0o600),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@dataclass
class Board:
    """A running board container and what a profile needs to reach it."""

    container: Any
    arch: str
    port: int
    key: Path  # the authorised client key
    known_hosts: Path  # holds the board's host key (and only it)

    def exec(self, command: str, user: str = "root") -> tuple[int, str]:
        code, output = self.container.exec_run(["sh", "-c", command], user=user)
        return int(code), output.decode(errors="replace")

    def processes(self) -> list[str]:
        """Command lines of the board's processes that are not sshd or the init shell."""
        _, output = self.exec(
            "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done"
        )
        return [line for line in output.splitlines() if "harness" in line]

    def profile(self, folder: Path, name: str, **overrides: Any) -> Path:
        """A device profile for this board in `folder` (fields overridable; None drops one)."""
        fields: dict[str, Any] = {
            "description": f"test board ({self.arch}) in a container",
            "backend": "ssh",
            "host": "127.0.0.1",
            "port": self.port,
            "user": USER,
            "identity_file": str(self.key),
            "known_hosts": str(self.known_hosts),
            "arch": self.arch,
            "cpus": 2,
            "threads": 1,
            "emulates": "x86-64" if self.arch == "amd64" else "rpi4",
        }
        fields.update(overrides)
        lines = [f"{key} = {value!r}" for key, value in fields.items() if value is not None]
        path = folder / f"{name}.toml"
        path.write_text("\n".join(line.replace("'", '"') for line in lines) + "\n")
        return path

    def restart(self) -> None:
        """Start the (stopped) container again: a new port, the same host key and home."""
        self.container.start()
        self.container.reload()
        self.port = int(self.container.attrs["NetworkSettings"]["Ports"]["22/tcp"][0]["HostPort"])
        entry = self.known_hosts.read_text().split(maxsplit=1)[1]
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {entry}")
        _wait_for_sshd(self)

    def remove(self) -> None:
        with contextlib.suppress(Exception):
            self.container.remove(force=True)


def start_board(
    client: Any, arch: str, folder: Path, *, tmp_mb: int = 64, cache_mb: int | None = None
) -> Board:
    """A board container of `arch`, sshd answering on 127.0.0.1:<port>. Its /tmp is a tmpfs of
    `tmp_mb` MB, so that a test can fill the board's temporary filesystem for real; with
    `cache_mb`, the user's ~/.cache is one too (the runtimes' cache on a full disk)."""
    from docker.types import Mount

    from harness.devices import load_profiles

    tag = build_image(client, arch)
    mounts, environment = [], {}
    if arch == "arm64":
        # A Pi 4 under QEMU: its CPU model (sshd gives sessions a fresh environment, so the
        # START script hands QEMU_CPU on through /etc/environment; under QEMU's default "max"
        # the int8 TFLite model answers wrongly) and its own /proc/cpuinfo (onnxruntime crashes
        # under QEMU reading the host's: docs/devices.md).
        rpi4 = load_profiles()["rpi4"]
        environment["QEMU_CPU"] = rpi4.cpu
        mounts.append(Mount("/proc/cpuinfo", str(rpi4.cpuinfo), type="bind", read_only=True))
    key = keypair(folder, f"client-{arch}")
    host_key = keypair(folder, f"hostkey-{arch}")
    container = client.containers.create(
        tag,
        command=["sh", "-c", START],
        platform=f"linux/{arch}",
        ports={"22/tcp": ("127.0.0.1", None)},
        tmpfs={
            "/tmp": f"size={tmp_mb}m,mode=1777",
            **({f"/home/{USER}/.cache": f"size={cache_mb}m,mode=1777"} if cache_mb else {}),
        },
        labels={LABEL: "1"},
        mounts=mounts,
        environment=environment,
        detach=True,
    )
    try:
        container.put_archive("/", _setup_archive(key.with_suffix(".pub").read_text(), host_key))
        public = host_key.with_suffix(".pub").read_text().split()
        known_hosts = folder / f"known_hosts-{arch}"
        known_hosts.write_text(f"[127.0.0.1]:0 {public[0]} {public[1]}\n")
        board = Board(container, arch, 0, key, known_hosts)
        board.restart()
    except BaseException:
        container.remove(force=True)
        raise
    return board


def _wait_for_sshd(board: Board, seconds: float = 120.0) -> None:
    """Until an ssh login works (sshd under QEMU takes a few seconds to answer)."""
    command = [
        "ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=10",
        "-o", f"UserKnownHostsFile={board.known_hosts}", "-o", "IdentitiesOnly=yes",
        "-i", str(board.key), "-p", str(board.port), f"{USER}@127.0.0.1", "true",
    ]  # fmt: skip
    deadline = time.monotonic() + seconds
    while True:
        done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if done.returncode == 0:
            return
        board.container.reload()
        if board.container.status != "running" or time.monotonic() > deadline:
            logs = board.container.logs().decode(errors="replace")[-2000:]
            raise RuntimeError(f"board {board.arch}: sshd does not answer: {done.stderr}\n{logs}")
        time.sleep(0.5)
