"""Build a device image with no container registry.

1. debootstrap a minimal Debian rootfs of the target arch (foreign arches run their second stage
   through QEMU's binfmt_misc handler); cached per (arch, suite, packages).
2. Download the runtime wheels for the target platform ON THE HOST (`pip download --platform ...`)
   and install them into a separate tree that becomes /opt/site; cached per wheel set.
3. `docker import` the two trees as one layer (docker SDK).
4. Fix the architecture: Docker 20.10 records the host's arch for every import, whatever
   `--platform` says, and then refuses to run the image for the right platform. Save the image,
   rewrite its config's architecture/variant, load it back under the final tag.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from harness.images import apt
from harness.images.common import BuildError, Progress, cache_root, run_logged
from harness.images.recipe import (
    PLATFORM_VARIANT,
    SITE_DIR,
    WORKER_COMMAND,
    Recipe,
)


def debian_mirror(suite: str) -> str:
    """The Debian mirror apt is configured with ($HARNESS_DEBIAN_MIRROR overrides)."""
    override = os.environ.get("HARNESS_DEBIAN_MIRROR")
    if override:
        return override
    mirrors = apt.mirrors_from_sources(apt.read_sources(), suite)
    if not mirrors:
        raise BuildError(
            f"no Debian mirror serving {suite} main found in {apt.APT_SOURCES}/sources.list*; "
            "set HARNESS_DEBIAN_MIRROR=http://<your mirror>/debian"
        )
    return mirrors[0]


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or below `path` (deepest first), from /proc/self/mounts."""
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    root = path.resolve()
    found = []
    for line in lines:
        fields = line.split()
        if len(fields) < 2:
            continue
        point = Path(fields[1].replace("\\040", " "))
        if point == root or root in point.parents:
            found.append(point)
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def remove_tree(path: Path) -> None:
    """rmtree, but first unmount what an interrupted debootstrap left mounted inside (its /proc,
    /sys, or a bind of the host's /dev, which rmtree must never walk into)."""
    for point in mounts_under(path):
        subprocess.run(["umount", "-l", str(point)], check=False, capture_output=True)
    left = mounts_under(path)
    if left:
        raise BuildError(
            f"{path}: still has mounts inside ({', '.join(map(str, left))}); unmount them and "
            "remove the folder by hand"
        )
    shutil.rmtree(path, ignore_errors=True)


def ensure_rootfs(recipe: Recipe, progress: Progress) -> Path:
    """The debootstrapped tree for `recipe` (built once, then reused from the cache)."""
    root = cache_root() / "rootfs"
    final = root / recipe.rootfs_key()
    if (final / "usr" / "bin" / "python3").exists():
        progress.print(f"  rootfs {final.name}: cached")
        return final
    if os.geteuid() != 0:
        raise BuildError(
            "debootstrap needs root (it creates device nodes and chroots): run `harness images "
            "build` as root, or use --method dockerfile where a container registry answers"
        )
    if shutil.which("debootstrap") is None:
        raise BuildError("debootstrap is not installed: run scripts/setup-docker.sh")
    partial = root / (final.name + ".partial")
    remove_tree(partial)
    partial.mkdir(parents=True)
    log = cache_root() / "logs" / f"debootstrap-{final.name}.log"
    log.unlink(missing_ok=True)
    mirror = debian_mirror(recipe.suite)
    command = [
        "debootstrap",
        f"--arch={recipe.arch}",
        "--variant=minbase",
        f"--include={','.join(recipe.packages)}",
        recipe.suite,
        str(partial),
        mirror,
    ]
    with progress.step(f"debootstrap {recipe.arch} {recipe.suite} from {mirror}") as step:
        try:
            run_logged(command, log, f"debootstrap {recipe.arch}", on_line=step.note)
        finally:
            for point in mounts_under(partial):  # a failed second stage can leave /proc mounted
                subprocess.run(["umount", "-l", str(point)], check=False, capture_output=True)
        apt_archives = partial / "var" / "cache" / "apt" / "archives"
        for deb in apt_archives.glob("*.deb"):
            deb.unlink()
    partial.rename(final)
    return final


def pip_platform_args(recipe: Recipe) -> list[str]:
    args = ["--only-binary=:all:", "--python-version", recipe.python, "--implementation", "cp"]
    for platform in recipe.platforms:
        args += ["--platform", platform]
    return args


def ensure_site(recipe: Recipe, progress: Progress) -> Path:
    """A tree holding opt/site/<the runtime wheels, installed for the target platform>."""
    root = cache_root() / "site"
    final = root / recipe.site_key()
    if (final / SITE_DIR.strip("/") / ".harness-complete").exists():
        progress.print(f"  wheels {final.name}: cached ({', '.join(recipe.wheels)})")
        return final
    wheels = cache_root() / "wheels" / recipe.arch
    wheels.mkdir(parents=True, exist_ok=True)
    log = cache_root() / "logs" / f"wheels-{final.name}.log"
    log.unlink(missing_ok=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    with progress.step(f"wheels for {recipe.arch}: {', '.join(recipe.wheels)}") as step:
        run_logged(
            [*pip, "download", "--dest", str(wheels), *pip_platform_args(recipe), *recipe.wheels],
            log,
            f"pip download for {recipe.arch}",
            on_line=step.note,
        )
        partial = root / (final.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        target = partial / SITE_DIR.strip("/")
        target.mkdir(parents=True)
        run_logged(
            [
                *pip,
                "install",
                "--no-index",
                "--find-links",
                str(wheels),
                "--target",
                str(target),
                "--no-warn-script-location",
                *pip_platform_args(recipe),
                *recipe.wheels,
            ],
            log,
            f"pip install --target for {recipe.arch}",
            on_line=step.note,
        )
        (target / ".harness-complete").write_text("\n".join(recipe.wheels) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    return final


def library_path(site_tree: Path) -> list[str]:
    """Folders of the CUDA/cuDNN libraries that nvidia-* wheels put under /opt/site/nvidia
    (their layout differs between CUDA versions, so look)."""
    site = site_tree / SITE_DIR.strip("/")
    folders = {p.parent for p in (site / "nvidia").rglob("lib*.so*")}
    return sorted(f"{SITE_DIR}/{folder.relative_to(site)}" for folder in folders)


def image_changes(recipe: Recipe, labels: dict[str, str], site_tree: Path) -> list[str]:
    """Dockerfile instructions `docker import` applies to the image config."""
    changes = [
        f"ENV PYTHONPATH={SITE_DIR}",
        "ENV LANG=C.UTF-8",
        "ENV PYTHONDONTWRITEBYTECODE=1",
        "WORKDIR /",
        "CMD " + json.dumps(list(WORKER_COMMAND)),
    ]
    libraries = library_path(site_tree)
    if libraries:
        changes.append(f"ENV LD_LIBRARY_PATH={':'.join(libraries)}")
    for key, value in labels.items():
        if re.search(r"[\s\"'\\]", value):
            raise ValueError(f"label {key}={value!r}: no spaces or quotes in import labels")
        changes.append(f"LABEL {key}={value}")
    return changes


def write_layer(rootfs: Path, site_tree: Path, out: Path, log: Path) -> None:
    """One tar of the rootfs plus opt/site (GNU tar: device nodes, hard links, xattrs, owners)."""
    command = [
        "tar",
        "--numeric-owner",
        "--xattrs",
        "--exclude=./dev/*",
        "--exclude=./proc/*",
        "--exclude=./sys/*",
        "--exclude=./run/*",
        "--exclude=./tmp/*",
        "-C",
        str(rootfs),
        "-cf",
        str(out),
        ".",
        "-C",
        str(site_tree),
        "." + SITE_DIR,
    ]
    run_logged(command, log, "tar of the rootfs")


class _ChunkReader(io.RawIOBase):
    """A file object over a generator of byte chunks (the docker SDK's image.save() stream)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def patch_config(config: dict[str, Any], arch: str, labels: dict[str, str]) -> dict[str, Any]:
    """The image config with the target's architecture (and variant) and our labels."""
    patched: dict[str, Any] = json.loads(json.dumps(config))
    patched["architecture"] = arch
    patched["os"] = "linux"
    if arch in PLATFORM_VARIANT:
        patched["variant"] = PLATFORM_VARIANT[arch]
    else:
        patched.pop("variant", None)
    inner = patched.setdefault("config", {}) or {}
    patched["config"] = inner
    inner["Labels"] = {**(inner.get("Labels") or {}), **labels}
    return patched


def rewrite_saved_image(
    saved: IO[bytes], out: IO[bytes], arch: str, tag: str, labels: dict[str, str]
) -> str:
    """Copy a `docker save` archive, rewriting its image config's architecture; returns the new
    image id (sha256 of the new config). Layers stream through untouched."""
    small: dict[str, bytes] = {}
    with (
        tarfile.open(fileobj=saved, mode="r|") as source,
        tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as target,
    ):
        for member in source:
            top_level = "/" not in member.name.strip("/")
            if member.isfile() and top_level and member.name.endswith((".json", "repositories")):
                handle = source.extractfile(member)
                assert handle is not None
                small[member.name] = handle.read()
                continue
            target.addfile(member, source.extractfile(member) if member.isfile() else None)
        if "manifest.json" not in small:
            raise BuildError("docker save gave no manifest.json; cannot fix the architecture")
        manifest = json.loads(small["manifest.json"])
        if len(manifest) != 1:
            raise BuildError(f"docker save gave {len(manifest)} images; expected 1")
        config = json.loads(small[manifest[0]["Config"]])
        data = json.dumps(patch_config(config, arch, labels), separators=(",", ":")).encode()
        digest = hashlib.sha256(data).hexdigest()
        manifest[0]["Config"] = f"{digest}.json"
        manifest[0]["RepoTags"] = [tag]
        for name, payload in (
            (f"{digest}.json", data),
            ("manifest.json", json.dumps(manifest).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            info.mode = 0o644
            target.addfile(info, io.BytesIO(payload))
    return f"sha256:{digest}"


def build(recipe: Recipe, client: Any, progress: Progress, labels: dict[str, str]) -> str:
    rootfs = ensure_rootfs(recipe, progress)
    site_tree = ensure_site(recipe, progress)
    work = cache_root() / "tmp"
    work.mkdir(parents=True, exist_ok=True)
    layer = work / f"{recipe.digest()}-layer.tar"
    saved = work / f"{recipe.digest()}-fixed.tar"
    log = cache_root() / "logs" / f"import-{recipe.digest()}.log"
    log.unlink(missing_ok=True)
    staging_repo, staging_tag = "harness-device-build", recipe.digest()
    staging = f"{staging_repo}:{staging_tag}"
    import docker.errors

    try:
        with progress.step(f"docker import ({recipe.arch})"):
            write_layer(rootfs, site_tree, layer, log)
            progress.note(f"{layer.stat().st_size / 2**20:.0f} MB layer")
            client.api.import_image(
                src=str(layer),
                repository=staging_repo,
                tag=staging_tag,
                changes=image_changes(recipe, labels, site_tree),
            )
            layer.unlink()
        imported = client.images.get(staging)
        if imported.attrs.get("Architecture") == recipe.arch:
            imported.tag(recipe.tag)
        else:
            with progress.step(
                f"fix architecture {imported.attrs.get('Architecture')} -> {recipe.arch}"
            ):
                with open(saved, "wb") as out:
                    reader = io.BufferedReader(_ChunkReader(client.api.get_image(staging)), 1 << 20)
                    rewrite_saved_image(reader, out, recipe.arch, recipe.tag, labels)
                with open(saved, "rb") as archive:
                    client.images.load(archive)
        fixed = client.images.get(recipe.tag)
        if fixed.attrs.get("Architecture") != recipe.arch:
            raise BuildError(
                f"{recipe.tag}: architecture is still {fixed.attrs.get('Architecture')} after "
                f"the fix, expected {recipe.arch}"
            )
    except docker.errors.DockerException as exc:
        raise BuildError(f"docker import/load of {recipe.tag} failed: {exc}") from exc
    finally:
        layer.unlink(missing_ok=True)
        saved.unlink(missing_ok=True)
        with contextlib.suppress(docker.errors.DockerException):
            client.images.remove(staging, noprune=False)
    return recipe.tag


def trees_from_image(recipe: Recipe, client: Any, progress: Progress) -> bool:
    """The rootfs and /opt/site trees (what `ensure_rootfs` and `ensure_site` build) taken out of
    the device image where it exists and they do not: the image is those two trees as one layer
    (`build`), so a runner that restored the image from a cache counts in it without a
    debootstrap. False when the image is not there (build the trees instead)."""
    import docker.errors

    rootfs = cache_root() / "rootfs" / recipe.rootfs_key()
    site = cache_root() / "site" / recipe.site_key()
    if rootfs.is_dir() and (site / SITE_DIR.strip("/") / ".harness-complete").exists():
        return True
    try:
        client.images.get(recipe.tag)
    except docker.errors.ImageNotFound:
        return False
    partial = rootfs.with_name(rootfs.name + ".partial")
    site_partial = site.with_name(site.name + ".partial")
    for folder in (partial, site_partial):
        remove_tree(folder)
        folder.mkdir(parents=True)
    with progress.step(f"trees of {recipe.tag} (docker export)"):
        container = client.containers.create(recipe.tag, command=["true"])
        try:
            with subprocess.Popen(
                ["tar", "-x", "-C", str(partial), "--numeric-owner"], stdin=subprocess.PIPE
            ) as untar:
                assert untar.stdin is not None
                for chunk in container.export(chunk_size=1 << 20):
                    untar.stdin.write(chunk)
                untar.stdin.close()
                if untar.wait():
                    raise BuildError(f"tar could not unpack the export of {recipe.tag}")
        finally:
            container.remove(force=True)
    inside = partial / SITE_DIR.strip("/")
    if not (inside / ".harness-complete").exists():
        remove_tree(partial)
        remove_tree(site_partial)
        return False
    (site_partial / SITE_DIR.strip("/")).parent.mkdir(parents=True, exist_ok=True)
    inside.rename(site_partial / SITE_DIR.strip("/"))
    (partial / ".dockerenv").unlink(missing_ok=True)
    for final, done in ((rootfs, partial), (site, site_partial)):
        remove_tree(final)
        done.rename(final)
    return True
