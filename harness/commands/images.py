"""`harness images build | list | llama-cpp`: the device container images (harness.images builds
them) and the llama.cpp runtime set GGUF models run with (harness.images.llamacpp)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.devices import DeviceProfile, load_profiles, select

if TYPE_CHECKING:
    from rich.console import Console


def _groups(profiles: Sequence[DeviceProfile]) -> dict[str, list[DeviceProfile]]:
    """Profiles by image tag: devices with the same arch, kind and runtimes share an image."""
    from harness.images import image_tag

    groups: dict[str, list[DeviceProfile]] = {}
    for profile in profiles:
        groups.setdefault(image_tag(profile), []).append(profile)
    return groups


def _is_gpu(profile: DeviceProfile) -> bool:
    from harness.images import KINDS

    return profile.accelerator != "none" or KINDS.get(profile.image, KINDS["debian-bookworm"]).gpu


def _build(args: argparse.Namespace, console: Console) -> int:
    from harness.images import BuildError, build, engine

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


def _list(args: argparse.Namespace, console: Console) -> int:
    import docker.errors
    from rich.table import Table

    from harness.images import BuildError, engine, image_tag

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


def _llama_cpp(args: argparse.Namespace, console: Console) -> int:
    from harness.images import BuildError, llamacpp

    failed = 0
    for arch in args.arch or ["amd64", "arm64"]:
        try:
            folder = llamacpp.fetch(arch)
        except BuildError as exc:
            console.print(f"[red]harness images llama-cpp: {exc}[/]")
            failed += 1
            continue
        console.print(f"llama.cpp {llamacpp.version_name()} for {arch}: {folder}")
    return 1 if failed else 0


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(soft_wrap=True)  # long lines (tags, log paths) stay whole in CI logs
    commands = {"build": _build, "list": _list, "llama-cpp": _llama_cpp}
    return commands[args.images_command](args, console)


def add_parser(commands: Any) -> None:
    image = commands.add_parser("images", help="build or list the device container images")
    image_commands = image.add_subparsers(dest="images_command", required=True)
    build = image_commands.add_parser("build", help="build the images the devices need")
    build.add_argument("--device", action="append", help="device name (repeatable; default all)")
    build.add_argument(
        "--method",
        choices=("auto", "debootstrap", "dockerfile"),
        default="auto",
        help="debootstrap: no registry needed; dockerfile: FROM a public Python image; "
        "auto: dockerfile where a registry answers, else debootstrap",
    )
    build.add_argument("--matrix", help="folder of extra device profiles (TOML)")
    listing = image_commands.add_parser("list", help="list the images and whether they are built")
    listing.add_argument("--matrix", help="folder of extra device profiles (TOML)")
    llama = image_commands.add_parser(
        "llama-cpp",
        help="fetch the llama.cpp runtime set GGUF models run with (Debian sid's packages, "
        "extracted into the cache; mounted into device containers)",
    )
    llama.add_argument(
        "--arch", action="append", choices=("amd64", "arm64"), help="repeatable; default both"
    )
    image.set_defaults(handler=_run)
