#!/usr/bin/env bash
# Prepare a Debian bookworm machine (run as root) for harness's Docker devices:
#   - install docker.io, qemu-user-static, qemu-user, binfmt-support, debootstrap
#   - mount binfmt_misc and register qemu-aarch64 with the F (fix-binary) flag, so that aarch64
#     binaries run transparently inside containers
#   - start dockerd in the background (log: $DOCKERD_LOG) and wait until `docker info` answers
#
# Idempotent: every step checks first and does nothing when it is already done.
# It builds no images: run `harness images build` afterwards.
#
# Environment:
#   DOCKERD_LOG      where dockerd writes its log (default /var/log/harness-dockerd.log)
#   DOCKERD_WAIT_S   how long to wait for the engine (default 60)
set -euo pipefail

DOCKERD_LOG=${DOCKERD_LOG:-/var/log/harness-dockerd.log}
DOCKERD_WAIT_S=${DOCKERD_WAIT_S:-60}
PACKAGES=(docker.io qemu-user-static qemu-user binfmt-support debootstrap ca-certificates)
BINFMT=/proc/sys/fs/binfmt_misc

say() { printf 'setup-docker: %s\n' "$*"; }
die() { printf 'setup-docker: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages, mounts binfmt_misc, starts dockerd)"

# 1. Packages -------------------------------------------------------------------------------
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ensure_packages "${PACKAGES[@]}"

# 2. binfmt_misc and qemu-aarch64 -----------------------------------------------------------
if [ ! -e "$BINFMT/status" ]; then
    say "mounting binfmt_misc on $BINFMT"
    mount -t binfmt_misc binfmt_misc "$BINFMT" || die "cannot mount binfmt_misc (a container without privileges?)"
fi
[ "$(cat "$BINFMT/status")" = enabled ] || echo 1 > "$BINFMT/status"

has_f_flag() {
    [ -e "$BINFMT/qemu-aarch64" ] &&
        grep -q '^enabled' "$BINFMT/qemu-aarch64" &&
        grep -q '^flags:.*F' "$BINFMT/qemu-aarch64"
}

if has_f_flag; then
    say "qemu-aarch64 already registered with the F flag"
else
    if [ -e "$BINFMT/qemu-aarch64" ]; then
        say "qemu-aarch64 is registered without the F flag (or disabled): re-registering"
        echo -1 > "$BINFMT/qemu-aarch64"
    fi
    # binfmt-support's entry for qemu-user-static carries fix_binary yes (the F flag).
    update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
    if ! has_f_flag; then
        say "update-binfmts did not register it with F: writing to $BINFMT/register"
        [ -e "$BINFMT/qemu-aarch64" ] && echo -1 > "$BINFMT/qemu-aarch64"
        interpreter=/usr/libexec/qemu-binfmt/aarch64-binfmt-P
        flags=FP
        if [ ! -x "$interpreter" ]; then
            interpreter=/usr/bin/qemu-aarch64-static
            flags=F
        fi
        magic='\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
        mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
        printf ':qemu-aarch64:M::%s:%s:%s:%s\n' "$magic" "$mask" "$interpreter" "$flags" \
            > "$BINFMT/register"
    fi
    has_f_flag || die "qemu-aarch64 is still not registered with the F flag; see $BINFMT/qemu-aarch64"
    say "qemu-aarch64 registered: $(grep -E '^(interpreter|flags)' "$BINFMT/qemu-aarch64" | tr '\n' ' ')"
fi

# 3. The Docker engine ----------------------------------------------------------------------
if docker info >/dev/null 2>&1; then
    say "a Docker engine already answers"
else
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
        say "starting docker through systemd"
        systemctl start docker || true
    fi
    if ! docker info >/dev/null 2>&1; then
        if pgrep -x dockerd >/dev/null; then
            say "dockerd is running but not answering yet; waiting"
        else
            say "starting dockerd in the background (log: $DOCKERD_LOG)"
            mkdir -p "$(dirname "$DOCKERD_LOG")"
            # setsid + nohup: dockerd outlives this script and the CI step's shell.
            setsid nohup dockerd >>"$DOCKERD_LOG" 2>&1 < /dev/null &
        fi
        waited=0
        until docker info >/dev/null 2>&1; do
            if [ "$waited" -ge "$DOCKERD_WAIT_S" ]; then
                tail -n 30 "$DOCKERD_LOG" >&2 || true
                die "dockerd did not answer within ${DOCKERD_WAIT_S} s; its log: $DOCKERD_LOG"
            fi
            sleep 1
            waited=$((waited + 1))
        done
        say "dockerd answers after ${waited} s"
    fi
fi
docker info --format 'setup-docker: engine {{.ServerVersion}}, storage {{.Driver}}, cgroup v{{.CgroupVersion}}, {{.NCPU}} cpus' \
    2>/dev/null || true

# 4. Check that an aarch64 binary runs (through binfmt, as containers will run it) -----------
if [ -x /usr/bin/qemu-aarch64-static ]; then
    say "qemu-aarch64-static $(/usr/bin/qemu-aarch64-static --version | head -n1 | awk '{print $3}')"
fi
say "ready"
