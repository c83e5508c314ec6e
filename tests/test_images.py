"""Device images: recipes and tags (pure), the Dockerfile text, apt mirror discovery, the
architecture fix on a synthetic `docker save` archive, and real builds on a real engine (a cache
hit after `harness images build`, which .ci/run does first)."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import io
import json
import os
import re
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import harness.images.recipe as recipe_module
from harness.cli import main
from harness.devices import load_profiles
from harness.errors import ConfigError
from harness.images import BuildError, build, image_exists, image_tag, recipe_for
from harness.images.apt import mirrors_from_sources
from harness.images.debootstrap import patch_config, rewrite_saved_image
from harness.images.dockerfile import dockerfile_text
from harness.images.recipe import manylinux_platforms

PROFILES = load_profiles()


# -- recipes and tags --------------------------------------------------------------------------
def test_tags_name_arch_and_recipe_hash() -> None:
    assert re.fullmatch(r"harness-device:arm64-[0-9a-f]{12}", image_tag(PROFILES["rpi4"]))
    assert re.fullmatch(r"harness-device:amd64-[0-9a-f]{12}", image_tag(PROFILES["x86-64"]))
    assert re.fullmatch(r"harness-device:amd64-cuda-[0-9a-f]{12}", image_tag(PROFILES["cuda-gpu"]))
    assert image_tag(PROFILES["rpi4"]) == image_tag(PROFILES["rpi4"])  # stable


def test_boards_of_one_arch_share_an_image() -> None:
    assert image_tag(PROFILES["rpi4"]) == image_tag(PROFILES["rpi-zero-2w"])
    assert image_tag(PROFILES["rpi4"]) != image_tag(PROFILES["x86-64"])
    assert image_tag(PROFILES["jetson-orin-nano"]) != image_tag(PROFILES["rpi4"])


def test_wheels_are_pinned_to_the_host_versions() -> None:
    wheels = recipe_for(PROFILES["rpi4"]).wheels
    for package in ("numpy", "onnxruntime", "ai-edge-litert", "onnxruntime-genai"):
        assert f"{package}=={importlib.metadata.version(package)}" in wheels
    gpu = recipe_for(PROFILES["cuda-gpu"]).wheels
    try:
        version = importlib.metadata.version("onnxruntime-gpu")
    except importlib.metadata.PackageNotFoundError:
        version = recipe_module.DEFAULT_PINS["onnxruntime-gpu"]
    assert f"onnxruntime-gpu[cuda,cudnn]=={version}" in gpu
    pinned = dataclasses.replace(
        PROFILES["rpi4"], runtimes=("onnxruntime==1.20.0", "numpy==1.26.4")
    )
    genai = importlib.metadata.version("onnxruntime-genai")  # onnxruntime's companion
    assert recipe_for(pinned).wheels == (
        "numpy==1.26.4",
        f"onnxruntime-genai=={genai}",
        "onnxruntime==1.20.0",
    )


def test_a_changed_recipe_input_changes_the_tag(monkeypatch: pytest.MonkeyPatch) -> None:
    rpi4 = PROFILES["rpi4"]
    before = image_tag(rpi4)
    assert image_tag(dataclasses.replace(rpi4, runtimes=("onnxruntime",))) != before
    monkeypatch.setattr(recipe_module, "RECIPE_VERSION", recipe_module.RECIPE_VERSION + 1)
    assert image_tag(rpi4) != before
    monkeypatch.undo()
    real = importlib.metadata.version

    def bumped(name: str) -> str:
        return "99.0" if name == "numpy" else real(name)

    monkeypatch.setattr(recipe_module.importlib.metadata, "version", bumped)
    assert image_tag(rpi4) != before
    assert "numpy==99.0" in recipe_for(rpi4).wheels


def test_cache_keys_separate_rootfs_from_wheels(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wheel version bump reuses the cached debootstrap tree."""
    rpi4 = recipe_for(PROFILES["rpi4"])
    other = dataclasses.replace(rpi4, wheels=("numpy==1.0",))
    assert other.rootfs_key() == rpi4.rootfs_key()
    assert other.site_key() != rpi4.site_key()
    assert other.tag != rpi4.tag


def test_gpu_library_path_is_found_in_the_installed_wheels(tmp_path: Path) -> None:
    from harness.images.debootstrap import library_path

    for part in ("cublas/lib", "cu13/lib", "cudnn/lib"):
        folder = tmp_path / "opt/site/nvidia" / part
        folder.mkdir(parents=True)
        (folder / "libx.so.13").write_bytes(b"")
    (tmp_path / "opt/site/nvidia/include").mkdir()
    assert library_path(tmp_path) == [
        "/opt/site/nvidia/cu13/lib",
        "/opt/site/nvidia/cublas/lib",
        "/opt/site/nvidia/cudnn/lib",
    ]


def test_unknown_image_kind_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="known: cuda, debian-bookworm"):
        image_tag(dataclasses.replace(PROFILES["rpi4"], image="alpine"))


def test_platform_tags_cover_every_manylinux_tag_bookworm_runs() -> None:
    arm = manylinux_platforms("arm64")
    # FACTS.md's tags, and glibc 2.36's
    for tag in ["2014", "_2_17", "_2_27", "_2_28", "_2_34", "_2_36"]:
        assert f"manylinux{tag}_aarch64" in arm
    assert "manylinux_2_37_aarch64" not in arm  # bookworm's glibc is 2.36
    x86 = manylinux_platforms("amd64")
    for tag in ["1", "2010", "2014", "_2_5", "_2_17", "_2_28", "_2_34", "_2_36"]:
        assert f"manylinux{tag}_x86_64" in x86
    assert not any("aarch64" in tag for tag in x86)


# -- the Dockerfile method ---------------------------------------------------------------------
def test_dockerfile_installs_the_pinned_runtimes_on_the_target_platform() -> None:
    recipe = recipe_for(PROFILES["rpi4"])
    text = dockerfile_text(recipe, {"harness.recipe": recipe.digest()})
    lines = text.splitlines()
    assert "FROM --platform=linux/arm64 python:3.11-slim-bookworm" in lines
    run = next(line for line in lines if line.startswith("RUN "))
    assert "--target /opt/site" in run and "--only-binary=:all:" in run
    for wheel in recipe.wheels:
        assert f"'{wheel}'" in run
    assert any(line.startswith("ENV PYTHONPATH=/opt/site") for line in lines)
    assert f'LABEL harness.recipe="{recipe.digest()}"' in lines
    assert lines[-1] == 'CMD ["python3", "-m", "harness.worker"]'
    assert recipe.tag in lines[0]


def test_gpu_dockerfile_puts_the_cuda_wheels_on_the_library_path() -> None:
    recipe = recipe_for(PROFILES["cuda-gpu"])
    text = dockerfile_text(recipe, {})
    assert "FROM --platform=linux/amd64 python:3.11-slim-bookworm" in text
    assert "'onnxruntime-gpu[cuda,cudnn]==" in text
    assert "> /etc/ld.so.conf.d/harness-nvidia.conf && ldconfig" in text
    assert "FROM --platform=linux/arm64" in dockerfile_text(
        recipe_for(PROFILES["jetson-orin-nano"]), {}
    )


# -- the debootstrap method's pure parts -------------------------------------------------------
DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main

Types: deb
Enabled: no
URIs: http://disabled.example/debian
Suites: bookworm
Components: main
"""


def test_mirror_comes_from_the_apt_sources() -> None:
    files = {
        "debian.sources": DEB822,
        "cloud.list": "deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n",
        "local.list": "# deb http://commented.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian/ bookworm main contrib\n"
        "deb-src http://src.example/debian bookworm main\n",
    }
    assert mirrors_from_sources(files, "bookworm") == [
        "http://deb.debian.org/debian",
        "http://mirror.example/debian",
    ]
    assert mirrors_from_sources({"debian.sources": DEB822}, "trixie") == []


def test_patch_config_sets_the_target_arch_and_labels() -> None:
    config = {"architecture": "amd64", "os": "linux", "config": {"Env": ["A=1"]}, "rootfs": {}}
    arm = patch_config(config, "arm64", {"harness.image": "1"})
    assert (arm["architecture"], arm["variant"]) == ("arm64", "v8")
    assert arm["config"] == {"Env": ["A=1"], "Labels": {"harness.image": "1"}}
    assert config["architecture"] == "amd64"  # the input is left alone
    back = patch_config(arm, "amd64", {})
    assert back["architecture"] == "amd64" and "variant" not in back


def _saved_archive(config: dict[str, Any]) -> bytes:
    """A minimal `docker save` archive: one layer, its config, manifest.json, repositories."""
    buffer = io.BytesIO()
    config_bytes = json.dumps(config).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    members = {
        "abc/VERSION": b"1.0",
        "abc/layer.tar": b"\0" * 4096,
        config_name: config_bytes,
        "manifest.json": json.dumps(
            [{"Config": config_name, "RepoTags": ["staging:x"], "Layers": ["abc/layer.tar"]}]
        ).encode(),
        "repositories": b'{"staging": {"x": "abc"}}',
    }
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        directory = tarfile.TarInfo("abc")
        directory.type = tarfile.DIRTYPE
        archive.addfile(directory)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_rewrite_saved_image_fixes_the_architecture() -> None:
    config = {"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"diff_ids": []}}
    out = io.BytesIO()
    image_id = rewrite_saved_image(
        io.BytesIO(_saved_archive(config)), out, "arm64", "harness-device:arm64-x", {"k": "v"}
    )
    out.seek(0)
    with tarfile.open(fileobj=out) as archive:
        names = archive.getnames()
        manifest = json.loads(archive.extractfile("manifest.json").read())  # type: ignore[union-attr]
        new_config = archive.extractfile(manifest[0]["Config"]).read()  # type: ignore[union-attr]
        layer = archive.extractfile("abc/layer.tar").read()  # type: ignore[union-attr]
    assert image_id == "sha256:" + hashlib.sha256(new_config).hexdigest()
    assert manifest[0]["Config"] == image_id[7:] + ".json"
    assert manifest[0]["RepoTags"] == ["harness-device:arm64-x"]
    assert manifest[0]["Layers"] == ["abc/layer.tar"]
    patched = json.loads(new_config)
    assert (patched["architecture"], patched["variant"]) == ("arm64", "v8")
    assert patched["config"]["Labels"] == {"k": "v"}
    assert layer == b"\0" * 4096
    assert "abc/VERSION" in names and "repositories" not in names


# -- the command -------------------------------------------------------------------------------
def test_host_needs_no_image(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["images", "build", "--device", "host"]) == 0
    assert "host: runs natively (local), needs no image" in capsys.readouterr().out
    with pytest.raises(BuildError, match="no image"):
        build(PROFILES["host"])


# -- real builds ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def built(docker_client: Any, arm64_binfmt: None) -> dict[str, str]:
    """x86-64 and arm64 images, built once (a cache hit where `harness images build` ran).
    Cannot build (not root, no debootstrap): skip here, fail under CI."""
    try:
        return {name: build(PROFILES[name], client=docker_client) for name in ("x86-64", "rpi4")}
    except BuildError as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"cannot build the device images: {exc}", pytrace=False)
        pytest.skip(f"cannot build the device images here: {exc}")


def test_second_build_is_a_fast_no_op(docker_client: Any, built: dict[str, str]) -> None:
    output = io.StringIO()
    started = time.monotonic()
    tag = build(PROFILES["rpi-zero-2w"], console=Console(file=output), client=docker_client)
    elapsed = time.monotonic() - started
    assert tag == built["rpi4"]  # rpi-zero-2w shares rpi4's image
    assert "up to date" in output.getvalue()
    assert elapsed < 5, f"a cache hit took {elapsed:.1f} s"


def test_images_carry_the_target_arch_and_config(docker_client: Any, built: dict[str, str]) -> None:
    for name, arch in (("rpi4", "arm64"), ("x86-64", "amd64")):
        image = docker_client.images.get(built[name])
        assert image.attrs["Architecture"] == arch
        if arch == "arm64":
            assert image.attrs.get("Variant") == "v8"
        config = image.attrs["Config"]
        assert "PYTHONPATH=/opt/site" in config["Env"]
        assert config["Cmd"] == ["python3", "-m", "harness.worker"]
        recipe = recipe_for(PROFILES[name])
        assert config["Labels"]["harness.recipe"] == recipe.digest()
        assert config["Labels"]["harness.arch"] == arch
        assert image_exists(docker_client, PROFILES[name])


def test_a_changed_recipe_is_a_cache_miss(
    docker_client: Any, built: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recipe_module, "RECIPE_VERSION", 10**6)
    assert image_tag(PROFILES["rpi4"]) != built["rpi4"]
    assert not image_exists(docker_client, PROFILES["rpi4"])


def test_build_command_skips_gpu_images_and_lists_them(
    docker_client: Any, built: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["images", "build"]) == 0
    out = capsys.readouterr().out
    assert "GPU images (cuda-gpu, jetson-orin-nano) are built only on request" in out
    assert "up to date" in out
    assert main(["images", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("rpi4", "rpi-zero-2w", "x86-64", "cuda-gpu"):
        assert name in out
    assert built["rpi4"].split(":")[1] in out.replace("\n", "")


def test_no_mounts_under_a_plain_folder(tmp_path: Path) -> None:
    from harness.images.debootstrap import mounts_under

    assert mounts_under(tmp_path) == []
    assert Path("/proc") in mounts_under(Path("/proc"))
