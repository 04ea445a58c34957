#!/usr/bin/env bash
# Installs what vethroute's build, demo and tests need on a Debian machine,
# only when it is missing. Safe to run again: it does nothing the second time.
set -euo pipefail

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-deps: must run as root (tests create network namespaces)" >&2
    exit 1
  fi
}

# command -> Debian package that provides it
declare -A pkgs=(
  [ip]=iproute2
  [ping]=iputils-ping
  [nsenter]=util-linux
  [iptables]=iptables
  [nft]=nftables
  [containerd]=containerd
  [runc]=runc
  [iperf3]=iperf3
  [strace]=strace
)

missing=()
for cmd in "${!pkgs[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${pkgs[$cmd]}")
done

if [ "${#missing[@]}" -gt 0 ]; then
  need_root
  echo "ensure-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v go >/dev/null 2>&1; then
  echo "ensure-deps: Go is not installed (expected at /usr/local/go/bin)" >&2
  exit 1
fi
