"""Ways of realising a device: one file per backend, behind harness.backends.base.Backend."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.backends.base import Backend
    from harness.devices import DeviceProfile

BACKENDS = ("local", "docker", "ssh")


def backend_for(profile: DeviceProfile) -> Backend:
    """The backend that realises `profile` (imported lazily: docker, ssh only when used)."""
    if profile.backend == "local":
        from harness.backends.local import LocalBackend

        return LocalBackend()
    if profile.backend == "docker":
        from harness.backends.docker import DockerBackend

        return DockerBackend()
    if profile.backend == "ssh":
        from harness.backends.ssh import SshBackend

        return SshBackend()
    raise ValueError(f"device {profile.name!r}: unknown backend {profile.backend!r}")
