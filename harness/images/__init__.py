"""Device container images, built without a container registry (or from a Dockerfile where one
answers), tagged by a hash of their recipe: `harness images build` / `harness images list`.

Strategies, one per file: debootstrap.py (no registry: debootstrap rootfs + host-downloaded wheels
-> docker import -> architecture fix) and dockerfile.py (FROM a public Python image). recipe.py
says what goes in an image and computes its tag; common.py holds the cache, logs and progress.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.devices import DeviceProfile, load_profiles, select
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
    "image_tag",
    "main",
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


def _groups(profiles: Sequence[DeviceProfile]) -> dict[str, list[DeviceProfile]]:
    """Profiles by image tag: devices with the same arch, kind and runtimes share an image."""
    groups: dict[str, list[DeviceProfile]] = {}
    for profile in profiles:
        groups.setdefault(image_tag(profile), []).append(profile)
    return groups


def _is_gpu(profile: DeviceProfile) -> bool:
    return profile.accelerator != "none" or KINDS.get(profile.image, KINDS["debian-bookworm"]).gpu


def _build_command(args: argparse.Namespace, console: Console) -> int:
    profiles = load_profiles(Path(args.matrix) if args.matrix else None)
    if args.device:
        chosen = select(profiles, args.device, "--device")
        for profile in chosen:
            if profile.backend != "docker":
                console.print(f"{profile.name}: runs natively ({profile.backend}), needs no image")
        chosen = [p for p in chosen if p.backend == "docker"]
    else:
        docker_profiles = [p for p in profiles.values() if p.backend == "docker"]
        chosen = [p for p in docker_profiles if not _is_gpu(p)]
        gpu = [p.name for p in docker_profiles if _is_gpu(p)]
        if gpu:
            console.print(
                f"GPU images ({', '.join(gpu)}) are built only on request: "
                f"harness images build --device {gpu[0]}"
            )
    if not chosen:
        return 0
    try:
        client = engine()
    except BuildError as exc:
        console.print(f"[red]harness images: {exc}[/]")
        return 1
    failed = 0
    for tag, group in _groups(chosen).items():
        console.print(f"[bold]{', '.join(p.name for p in group)}[/] -> {tag}")
        try:
            build(group[0], args.method, console, client=client)
        except BuildError as exc:
            console.print(f"[red]harness images: {exc}[/]")
            failed += 1
    return 1 if failed else 0


def _list_command(args: argparse.Namespace, console: Console) -> int:
    import docker.errors
    from rich.table import Table

    profiles = load_profiles(Path(args.matrix) if args.matrix else None)
    try:
        client: Any = engine(timeout=30)
    except BuildError as exc:
        client = None
        console.print(f"[yellow]{exc}[/]")
    rows: list[tuple[str, ...]] = []
    for profile in profiles.values():
        if profile.backend != "docker":
            rows.append((profile.name, profile.target_arch, "(runs natively: no image)", "-"))
            continue
        tag = image_tag(profile)
        built = "?"
        if client is not None:
            try:
                image = client.images.get(tag)
                built = f"yes, {image.attrs.get('Size', 0) / 2**20:.0f} MB"
            except docker.errors.ImageNotFound:
                built = "no (GPU)" if _is_gpu(profile) else "no"
        rows.append((profile.name, profile.target_arch, tag, built))
    table = Table(box=None, pad_edge=False, header_style="bold")
    for index, header in enumerate(("device", "arch", "tag", "built")):
        table.add_column(header, no_wrap=True, min_width=max(len(row[index]) for row in rows))
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if any(row[3] == "no (GPU)" for row in rows):
        console.print("GPU images are built only on request: harness images build --device NAME")
    return 0


def main(args: argparse.Namespace) -> int:
    """`harness images build|list` (parsed by harness.cli)."""
    from rich.console import Console

    console = Console(soft_wrap=True)  # long lines (tags, log paths) stay whole in CI logs
    if args.images_command == "build":
        return _build_command(args, console)
    if args.images_command == "list":
        return _list_command(args, console)
    raise ValueError(f"unknown images command {args.images_command!r}")
