"""Counting mode: markers, the QEMU plugin, counts that repeat exactly on amd64 and arm64, a 0.5%
bigger model seen with no noise, and estimated milliseconds.

The emulated tests need qemu-user and a built plugin (scripts/setup-counting.sh); the arm64 one
also needs the rpi4 device trees (`harness counting prepare --device rpi4`, or
`harness images build`). Missing pieces skip here and fail under CI=true."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import ROOT, unavailable
from harness.backends.base import BackendUnavailable
from harness.backends.qemu import count_instructions, counted_bench
from harness.counting import CountResult
from harness.counting.build import (
    MARKERS,
    SOURCE,
    debian_patches_touching,
    os_codename,
)
from harness.devices import HOST_ARCH, UNAME_MACHINE, load_profile, load_profiles
from harness.errors import ConfigError
from harness.images.apt import deb_src_sources
from harness.worker import markers

DIGITS = ROOT / "examples" / "digits"
MODEL = DIGITS / "models" / "digits.onnx"
DATA = DIGITS / "data" / "digits_test.npz"
SAMPLES, WARMUP = 100, 20


# -- pure ------------------------------------------------------------------------------------
def test_markers_match_the_plugin_source() -> None:
    """Both plugins take their marker handler from markers.h (the timing plugin's test checks it
    includes the same file)."""
    assert '#include "markers.h"' in SOURCE.read_text()
    text = MARKERS.read_text()
    defines = dict(re.findall(r"#define (MARKER_\w+) (?:UINT64_C\()?(0x[0-9a-f]+)", text))
    assert int(defines["MARKER_BEGIN"], 16) == markers.BEGIN
    assert int(defines["MARKER_END"], 16) == markers.END
    assert int(defines["MARKER_FD"], 16) == markers.MARKER_FD & 0xFFFFFFFF
    assert markers.BEGIN < 2**63 and markers.END < 2**63  # an off_t takes them


def test_markers_are_harmless_without_the_emulator() -> None:
    for _ in range(3):
        markers.begin()
        markers.end()


def test_deb_src_twins_only_this_release() -> None:
    files = {
        "debian.sources": (
            "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n"
            "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
            "Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\n"
            "Components: main\n\n"
            "Types: deb\nEnabled: no\nURIs: http://example.org/debian\nSuites: bookworm\n"
            "Components: main\n"
        ),
        "security.list": (
            "deb [signed-by=/k.gpg arch=amd64] http://security.debian.org/debian-security "
            "bookworm-security main # comment\n"
            "deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n"
            "deb-src http://deb.debian.org/debian bookworm main\n"
        ),
    }
    text = deb_src_sources(files, "bookworm")
    stanzas = text.strip().split("\n\n")
    assert len(stanzas) == 2, text
    assert "Types: deb-src" in stanzas[0]
    assert "Suites: bookworm bookworm-updates" in stanzas[0]
    assert "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" in stanzas[0]
    assert "URIs: http://security.debian.org/debian-security" in stanzas[1]
    assert "Signed-By: /k.gpg" in stanzas[1] and "Architectures: amd64" in stanzas[1]
    assert "nodesource" not in text and "cloud.google" not in text and "example.org" not in text
    assert os_codename("ID=debian\nVERSION_CODENAME=bookworm\n") == "bookworm"
    assert os_codename('UBUNTU_CODENAME="noble"\n') == "noble"


def test_patches_touching_the_header_are_found(tmp_path: Path) -> None:
    patches = {
        "series": b"fix-a.patch\n# disabled.patch\nplugin-api.patch -p1\n",
        "fix-a.patch": b"--- a/hw/x.c\n+++ b/hw/x.c\n",
        "plugin-api.patch": b"--- a/include/qemu/qemu-plugin.h\n+++ b/include/qemu/qemu-plugin.h\n",
        "disabled.patch": b"--- a/include/qemu/qemu-plugin.h\n",
    }
    archive = tmp_path / "qemu_1.0-1.debian.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        for name, data in patches.items():
            info = tarfile.TarInfo(f"debian/patches/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert debian_patches_touching(archive) == ["plugin-api.patch"]


def test_profiles_with_the_retired_cpi_estimate_say_what_replaced_it(tmp_path: Path) -> None:
    old = tmp_path / "my-board.toml"
    old.write_text('arch = "arm64"\ncpu = "cortex-a72"\nclock_mhz = 1500\ncpi = 1.1\n')
    with pytest.raises(ConfigError, match="cpi and clock_mhz are no longer read.*timing model"):
        load_profile(old)


def test_counted_bench_needs_a_counting_worker() -> None:
    class Client:
        target = object()
        device = "host"

    with pytest.raises(TypeError, match="QemuBackend"):
        counted_bench(Client(), "m", 10)  # type: ignore[arg-type]


def test_plugin_lines_parse() -> None:
    from harness.backends.qemu import parse_counts

    counts = parse_counts(
        "# insn_count api=1 target=aarch64 mode=callback\n"
        "count insns=1234 pair=1 vcpus=1 mode=callback\n"
        "# unfinished insns=5 pair=2\n"
        "count insns=99 pair=3 vcpus=2 mode=callback\n"
    )
    assert [(c.instructions, c.pair, c.vcpus) for c in counts] == [(1234, 1, 1), (99, 3, 2)]


def test_setup_script_parses() -> None:
    subprocess.run(["bash", "-n", str(ROOT / "scripts" / "setup-counting.sh")], check=True)


# -- the plugin under QEMU (conftest.py builds it: counting_plugin) --------------------------
def _count_loops(plugin: Path, outfile: Path) -> list[int]:
    """Two counted loops (1000 and 3000 iterations) in the host's Python under QEMU."""
    from harness.backends.qemu import parse_counts

    script = (
        "from harness.worker import markers\n"
        "for n in (1000, 3000):\n"
        "    markers.begin()\n"
        "    for i in range(n):\n"
        "        pass\n"
        "    markers.end()\n"
    )
    command = [
        "setarch", "-R", f"qemu-{UNAME_MACHINE[HOST_ARCH]}",
        "-plugin", f"{plugin},outfile={outfile}",
        sys.executable, "-S", "-c", script,
    ]  # fmt: skip
    env = {
        "PYTHONPATH": str(ROOT),
        "PYTHONHASHSEED": "0",
        "PATH": "/usr/bin:/bin",
        # Compile from source every time: whether a .pyc existed changed the counts.
        "PYTHONPYCACHEPREFIX": str(outfile.parent / "no-pycache"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    subprocess.run(command, check=True, env=env, cwd="/", timeout=120)
    return [c.instructions for c in parse_counts(outfile.read_text())]


def test_plugin_counts_between_the_markers_only(counting_plugin: Path, tmp_path: Path) -> None:
    first = _count_loops(counting_plugin, tmp_path / "a.txt")
    again = _count_loops(counting_plugin, tmp_path / "b.txt")
    assert len(first) == 2 and first == again
    short, long = first
    # Per iteration of `for i in range(n): pass`: a few dozen instructions, the same for both.
    per_iteration = (long - short) / 2000
    assert 5 < per_iteration < 500
    assert short < 1000 * per_iteration * 1.5
    header = (tmp_path / "a.txt").read_text().splitlines()[0]
    assert header.startswith("# insn_count api=")


# -- models under QEMU -----------------------------------------------------------------------
def _counts(device: str, models: list[Path]) -> list[CountResult]:
    profile = load_profiles()[device]

    def one(model: Path) -> CountResult:
        return count_instructions(profile, model, DATA, samples=SAMPLES, warmup=WARMUP)

    try:
        with ThreadPoolExecutor(len(models)) as pool:
            return list(pool.map(one, models))
    except BackendUnavailable as exc:
        unavailable(f"counting on {device}: {exc}")
    raise AssertionError("unreachable")


def _check(results: list[CountResult], device: str, arch: str, cpu: str) -> None:
    digits, digits_again, base, base_again, wide = results
    for result in results:
        assert (result.device, result.arch, result.cpu) == (device, arch, cpu)
        assert result.fidelity == "counted" and result.samples == SAMPLES
        assert result.vcpus == 1
    # Deterministic: the same count on every run, to the instruction.
    assert digits.total == digits_again.total
    assert base.total == base_again.total
    # One more hidden unit: ~0.5% more instructions, seen with no noise at all.
    growth = wide.instructions_per_inference / base.instructions_per_inference - 1
    assert 0.001 < growth < 0.02, growth
    print(
        f"{device}: digits.onnx {digits.instructions_per_inference:,.2f} instructions/inference; "
        f"MLP 32 -> 33 hidden: {base.instructions_per_inference:,.2f} -> "
        f"{wide.instructions_per_inference:,.2f} ({growth:+.3%})"
    )


def test_amd64_counts_repeat_and_see_a_wider_layer(
    counting_plugin: Path, digits_mlps: tuple[Path, Path]
) -> None:
    base, wide = digits_mlps
    results = _counts("x86-64", [MODEL, MODEL, base, base, wide])
    _check(results, "x86-64", "amd64", "max")


def test_arm64_counts_repeat_and_see_a_wider_layer(
    counting_plugin: Path, digits_mlps: tuple[Path, Path]
) -> None:
    base, wide = digits_mlps
    results = _counts("rpi4", [MODEL, MODEL, base, base, wide])
    _check(results, "rpi4", "arm64", "cortex-a72")
    assert results[0].interpreter.startswith("rootfs arm64-")
