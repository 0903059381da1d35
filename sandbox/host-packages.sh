#!/usr/bin/env bash
# What this machine needs for the local test servers and the deploy itself (Debian, as root):
# a container engine (Podman with runc, unless a Docker Engine answers), debootstrap for the base
# image, git, ssh, make and Python's venv. Installs only what is missing; `make demo` and CI's
# .ci/run both call it.
set -euo pipefail

packages=(debootstrap git openssh-client ca-certificates curl zstd make python3-venv)
if ! { command -v docker >/dev/null && docker info >/dev/null 2>&1; }; then
    packages+=(podman runc)
fi

missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${missing[*]}; run this as root (sudo) to install them" >&2
    exit 1
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
