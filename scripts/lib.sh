# shellcheck shell=bash
# Shared by the setup scripts (sourced, not run).

# ensure_packages PACKAGE...: apt-get install those not installed yet (root, Debian/Ubuntu).
ensure_packages() {
    local missing=() package
    for package in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$package")
        fi
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
    else
        echo "packages already installed: $*"
    fi
}
