"""Image recipes: what goes into a device image, and the tag that names it (pure, no Docker).

A recipe is fixed by the device's target arch, its image kind (profile `image`), the Debian suite
and packages, the pinned runtime wheels (the versions installed on this host) and RECIPE_VERSION.
The tag is a hash of all of that, so `harness images build` rebuilds exactly when one of them
changes, and devices that share arch + kind + runtimes share one image.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from dataclasses import dataclass
from typing import Any

from harness.devices import UNAME_MACHINE, DeviceProfile
from harness.errors import ConfigError

# Bump when the way images are assembled changes (layout, env, entry point): every tag changes.
RECIPE_VERSION = 1
REPOSITORY = "harness-device"
PYTHON_VERSION = "3.11"  # Debian bookworm's python3, and the Dockerfile base image's
DEBIAN_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")
SITE_DIR = "/opt/site"  # where the runtime wheels are installed inside the image
WORKER_COMMAND = ("python3", "-m", "harness.worker")
# glibc of Debian bookworm is 2.36: every manylinux tag up to it runs there. pip matches the
# listed tags exactly (without 2_27 it silently picks ai-edge-litert 1.4 for aarch64), so list all.
GLIBC = (2, 36)
PLATFORM_VARIANT = {"arm64": "v8"}


@dataclass(frozen=True)
class ImageKind:
    """What a profile's `image = "..."` means."""

    suite: str
    gpu: bool
    description: str


KINDS = {
    "debian-bookworm": ImageKind("bookworm", False, "Debian bookworm, python3, CPU runtimes"),
    "cuda": ImageKind(
        "bookworm", True, "Debian bookworm, python3, onnxruntime-gpu with CUDA/cuDNN wheels"
    ),
}

# Extras that make onnxruntime-gpu pull the CUDA and cuDNN libraries as wheels (nvidia-*-cu12),
# so the image needs no CUDA base image; the NVIDIA driver comes from the host at run time.
GPU_EXTRAS = {"onnxruntime-gpu": "cuda,cudnn"}


def manylinux_platforms(arch: str) -> tuple[str, ...]:
    """Every manylinux platform tag a wheel for `arch` may carry that bookworm's glibc runs."""
    machine = UNAME_MACHINE[arch]
    legacy = {
        "x86_64": ("manylinux1", "manylinux2010", "manylinux2014"),
        "aarch64": ("manylinux2014",),
    }
    first_minor = 5 if machine == "x86_64" else 17
    tags = [f"{name}_{machine}" for name in legacy[machine]]
    tags += [f"manylinux_2_{minor}_{machine}" for minor in range(first_minor, GLIBC[1] + 1)]
    return tuple(tags)


# Versions for runtimes the host usually lacks. onnxruntime-gpu releases trail onnxruntime's (1.32.0
# has no -gpu release yet), so it cannot follow the host's onnxruntime. Override per profile with
# runtimes = ["onnxruntime-gpu==X.Y.Z"], or by installing onnxruntime-gpu on the host.
DEFAULT_PINS = {"onnxruntime-gpu": "1.31.1", "onnxruntime-genai": "0.18.0"}
# Language models (task = "generate") run with ONNX Runtime GenAI beside onnxruntime: its wheels
# exist for x86-64 and aarch64 (manylinux_2_28), so CPU images that carry onnxruntime carry it too.
COMPANIONS = {"onnxruntime": ("onnxruntime-genai",)}


def host_version(package: str) -> str:
    """The version of `package` installed here (or its DEFAULT_PINS entry)."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        if package in DEFAULT_PINS:
            return DEFAULT_PINS[package]
    raise ConfigError(
        f"runtime {package!r} is not installed on this host, so its image cannot be pinned to "
        f"the host's version: pip install {package}, or pin it in the device profile "
        f'(runtimes = ["{package}==VERSION"])'
    )


@dataclass(frozen=True)
class Recipe:
    arch: str  # amd64 | arm64
    kind: str  # a key of KINDS
    suite: str
    packages: tuple[str, ...]
    wheels: tuple[str, ...]  # pip requirements, pinned: "numpy==2.4.6", "onnxruntime-gpu[cuda]==.."
    python: str = PYTHON_VERSION
    version: int = RECIPE_VERSION

    @property
    def gpu(self) -> bool:
        return KINDS[self.kind].gpu

    @property
    def platform(self) -> str:
        return f"linux/{self.arch}"

    @property
    def platforms(self) -> tuple[str, ...]:
        return manylinux_platforms(self.arch)

    def as_json(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "kind": self.kind,
            "suite": self.suite,
            "packages": list(self.packages),
            "wheels": list(self.wheels),
            "python": self.python,
            "platforms": list(self.platforms),
            "version": self.version,
        }

    def digest(self) -> str:
        text = json.dumps(self.as_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def tag(self) -> str:
        label = self.arch if self.kind == "debian-bookworm" else f"{self.arch}-{self.kind}"
        return f"{REPOSITORY}:{label}-{self.digest()}"

    def rootfs_key(self) -> str:
        """Names the cached debootstrap tree: changes only with what debootstrap is given."""
        text = json.dumps([self.arch, self.suite, sorted(self.packages), self.version])
        return f"{self.arch}-{self.suite}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"

    def site_key(self) -> str:
        """Names the cached /opt/site tree: changes only with the wheels and their platform."""
        text = json.dumps([self.arch, self.python, list(self.wheels), list(self.platforms)])
        return f"{self.arch}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def requirement(runtime: str) -> str:
    """A profile's runtime entry ("onnxruntime", or pinned "onnxruntime-gpu==1.31.1") as an
    exact pip requirement, with the extras the image needs."""
    name, _, version = (part.strip() for part in runtime.partition("=="))
    extras = GPU_EXTRAS.get(name)
    return f"{name}{f'[{extras}]' if extras else ''}=={version or host_version(name)}"


def recipe_for(profile: DeviceProfile) -> Recipe:
    """The recipe of the image that realises `profile` (a docker-backend device)."""
    where = str(profile.source or profile.name)
    if profile.image not in KINDS:
        raise ConfigError(
            f"{where}: image {profile.image!r} is not a known image recipe; known: "
            f"{', '.join(sorted(KINDS))}"
        )
    arch = profile.target_arch
    if arch not in UNAME_MACHINE:
        raise ConfigError(f"{where}: no image recipe for arch {arch!r} (amd64 and arm64 only)")
    kind = KINDS[profile.image]
    named = {entry.partition("==")[0].strip() for entry in profile.runtimes}
    companions = {c for name in named for c in COMPANIONS.get(name, ()) if c not in named}
    packages = sorted({*profile.runtimes, *companions, *(() if "numpy" in named else ("numpy",))})
    return Recipe(
        arch=arch,
        kind=profile.image,
        suite=kind.suite,
        packages=DEBIAN_PACKAGES,
        wheels=tuple(requirement(package) for package in packages),
        version=RECIPE_VERSION,  # read at call time, so a bump (or a test's patch) takes effect
    )


def image_tag(profile: DeviceProfile) -> str:
    """The tag of `profile`'s image, e.g. harness-device:arm64-0123456789ab."""
    return recipe_for(profile).tag
