"""Device container images, built without a container registry (or from a Dockerfile where one
answers), tagged by a hash of their recipe. The command: `harness images build | list`
(harness.commands.images).

Strategies, one per file: debootstrap.py (no registry: debootstrap rootfs + host-downloaded wheels
-> docker import -> architecture fix) and dockerfile.py (FROM a public Python image). recipe.py
says what goes in an image and computes its tag; common.py holds the cache, logs and progress;
apt.py reads the system's apt sources (the Debian mirror debootstrap uses).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from harness.devices import DeviceProfile
from harness.images.common import BuildError, Progress, cache_root, locked
from harness.images.recipe import KINDS, Recipe, image_tag, recipe_for

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "KINDS",
    "METHODS",
    "BuildError",
    "Recipe",
    "build",
    "cache_root",
    "image_exists",
    "engine",
    "image_tag",
    "recipe_for",
]

METHODS = ("auto", "debootstrap", "dockerfile")
BUILD_TIMEOUT_S = 1800  # docker API calls while importing/loading a ~500 MB layer


def engine(timeout: int = BUILD_TIMEOUT_S) -> Any:
    """A docker SDK client that answers, or BuildError saying how to get one."""
    import docker

    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except Exception as exc:  # DockerException, requests/socket errors
        raise BuildError(
            f"no Docker engine answers ({exc}); start dockerd or run scripts/setup-docker.sh"
        ) from exc
    return client


def image_exists(client: Any, profile: DeviceProfile) -> bool:
    import docker.errors

    try:
        client.images.get(image_tag(profile))
    except docker.errors.ImageNotFound:
        return False
    return True


def labels_for(recipe: Recipe, method: str) -> dict[str, str]:
    """Image labels (no spaces or quotes: `docker import --change LABEL` splits on them)."""
    return {
        "harness.image": "1",
        "harness.recipe": recipe.digest(),
        "harness.recipe-version": str(recipe.version),
        "harness.arch": recipe.arch,
        "harness.kind": recipe.kind,
        "harness.suite": recipe.suite,
        "harness.wheels": ",".join(recipe.wheels).replace("[", "(").replace("]", ")"),
        "harness.method": method,
    }


def build(
    profile: DeviceProfile,
    method: str = "auto",
    console: Console | None = None,
    *,
    client: Any = None,
    force: bool = False,
) -> str:
    """Build `profile`'s image unless an image with its tag exists; returns the tag."""
    if method not in METHODS:
        raise ValueError(f"method {method!r} is not one of {', '.join(METHODS)}")
    if profile.backend != "docker":
        raise BuildError(f"device {profile.name} runs natively ({profile.backend}): no image")
    recipe = recipe_for(profile)
    progress = Progress(console)
    client = client if client is not None else engine()
    with locked(recipe.tag):
        if not force and image_exists(client, profile):
            progress.print(f"{recipe.tag} ({profile.name}): up to date")
            return recipe.tag
        chosen = method
        if method == "auto":
            from harness.images.dockerfile import registry_answers

            chosen = "dockerfile" if registry_answers() else "debootstrap"
        progress.print(
            f"building {recipe.tag} for {profile.name} ({recipe.arch}, {recipe.kind}) "
            f"with {chosen}; cache: {cache_root()}"
        )
        started = time.monotonic()
        labels = labels_for(recipe, chosen)
        if chosen == "dockerfile":
            from harness.images import dockerfile

            dockerfile.build(recipe, client, progress, labels)
        else:
            from harness.images import debootstrap

            debootstrap.build(recipe, client, progress, labels)
        progress.print(f"built {recipe.tag} in {time.monotonic() - started:.0f} s")
    return recipe.tag
