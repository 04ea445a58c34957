#!/usr/bin/env bash
# Makes sure the tools the containerd end-to-end test drives are present,
# installing only what is missing:
#   - containerd, ctr and runc from Debian's packages (apt-get, needs root);
#   - crictl, built from the Go module proxy at CRICTL_VERSION into
#     ${VETHROUTE_CACHE:-$HOME/.cache/vethroute}/crictl-<version>/ (outside
#     the repo, so it survives `git clean` and is shared by every checkout).
#
# Why crictl v1.34: it still speaks CRI v1, which Debian's containerd 1.6
# serves; building it with `go install` is the only way to get it here, as no
# release download is reachable.
#
# The last line of stdout is the absolute path of crictl; progress goes to
# stderr so callers can do CRICTL=$(test/e2e/containerd/setup.sh | tail -n1).
set -euo pipefail

CRICTL_VERSION="${CRICTL_VERSION:-v1.34.0}"

log() { printf 'containerd-setup: %s\n' "$*" >&2; }

missing=()
for bin in containerd ctr containerd-shim-runc-v2; do
	command -v "$bin" >/dev/null 2>&1 || missing+=(containerd)
done
command -v runc >/dev/null 2>&1 || missing+=(runc)
if ((${#missing[@]} > 0)); then
	# Deduplicate: several binaries come from the containerd package.
	mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
	if [[ $(id -u) -ne 0 ]]; then
		log "missing ${pkgs[*]} and not root: install them with apt-get install ${pkgs[*]}"
		exit 1
	fi
	log "installing ${pkgs[*]} from Debian's packages"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2
	apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >&2
fi

cache="${VETHROUTE_CACHE:-$HOME/.cache/vethroute}/crictl-${CRICTL_VERSION}"
crictl="$cache/crictl"
if [[ ! -x "$crictl" ]]; then
	log "building crictl ${CRICTL_VERSION} into $cache"
	mkdir -p "$cache"
	# A private build dir keeps a half-written binary from ever being taken
	# for a finished one: it only lands in the cache once complete.
	tmp="$(mktemp -d "$cache/.build.XXXXXX")"
	trap 'rm -rf "$tmp"' EXIT
	GOBIN="$tmp" CGO_ENABLED=0 go install "sigs.k8s.io/cri-tools/cmd/crictl@${CRICTL_VERSION}" >&2
	mv -f "$tmp/crictl" "$crictl"
fi
printf '%s\n' "$crictl"
