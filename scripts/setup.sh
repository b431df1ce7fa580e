#!/usr/bin/env bash
# Install what berth needs to build, test and benchmark on a Debian machine.
# Idempotent and non-interactive: safe to run again.
set -euo pipefail

packages=(
  # build
  pkg-config libseccomp-dev gcc libc6-dev binutils
  # test peers and tools
  busybox-static skopeo umoci runc crun containerd prometheus python3-prometheus-client podman docker-registry apache2-utils openssl curl util-linux iproute2
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  # Keep the services that packages start from running on this machine: tests start
  # private instances with their own roots and sockets.
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup.sh: cargo not found; install a Rust toolchain (rustup) first" >&2
  exit 1
fi
