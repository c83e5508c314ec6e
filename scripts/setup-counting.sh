#!/usr/bin/env bash
# Prepare a Debian/Ubuntu machine (run as root) for harness's counting mode (docs/counting.md):
#   1. install qemu-user (the dynamic qemu-<arch> binaries: they load TCG plugins; the static ones
#      do not), gcc, libglib2.0-dev, pkg-config, dpkg-dev, debootstrap
#   2. build the instruction-counting plugin for the installed qemu-user: qemu-plugin.h comes from
#      Debian's qemu source package of exactly that version, fetched through a private apt
#      configuration under the cache (the system's apt sources are not changed)
#   3. build the device trees the emulated devices count in (debootstrap rootfs + target-arch
#      wheels, shared with `harness images build`), for the devices in $HARNESS_COUNTING_DEVICES
#
# Idempotent: installed packages, the built plugin and the trees are cached and reused.
#
# Environment:
#   PYTHON                     the interpreter with harness installed (default .venv/bin/python,
#                              else python3)
#   HARNESS_COUNTING_DEVICES   devices whose trees to prepare (default "rpi4"; "" for none)
#   HARNESS_CACHE              cache folder (default ~/.cache/harness)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PACKAGES=(qemu-user gcc libglib2.0-dev pkg-config dpkg-dev debootstrap xz-utils ca-certificates)
DEVICES=${HARNESS_COUNTING_DEVICES-rpi4}

say() { printf 'setup-counting: %s\n' "$*"; }
die() { printf 'setup-counting: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and debootstraps device trees)"
command -v dpkg-query >/dev/null || die "not a Debian/Ubuntu system (no dpkg-query)"

# 1. Packages -------------------------------------------------------------------------------
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ensure_packages "${PACKAGES[@]}"
qemu-aarch64 -h 2>/dev/null | grep -q -- '-plugin' || die "qemu-aarch64 has no -plugin option"

# 2. The plugin -----------------------------------------------------------------------------
PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
"$PYTHON" -c 'import harness' 2>/dev/null \
    || die "$PYTHON cannot import harness: run scripts/bootstrap.sh first (or set PYTHON)"
"$PYTHON" -m harness.cli counting build

# 3. Device trees ---------------------------------------------------------------------------
for device in $DEVICES; do
    "$PYTHON" -m harness.cli counting prepare --device "$device"
done
say "ready"
