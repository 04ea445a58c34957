#!/usr/bin/env bash
# Builds the vethroute image without a registry, a base image or a Dockerfile:
# static binaries of the plugin and the agent, packed by deploy/ociimage into
# one tar that is an OCI image layout and a `docker save` archive at once.
#
# Usage: deploy/build-image.sh [-o OUT.tar] [-n NAME:TAG] [--without-nft] [--no-load]
#   -o            output tar (default: dist/vethroute-image.tar)
#   -n            image name (default: vethroute:dev, as deploy/daemonset.yaml)
#   --without-nft leave out nft, which the image otherwise carries for the
#                 agent's masquerading (on by default): this machine's nft from
#                 Debian's nftables package and the shared libraries it loads
#                 (ldd). Needed for an image of another architecture, whose
#                 agent must then run with --masquerade=false
#   --no-load     do not `docker load` the result even when docker is there
#
# Environment: VERSION (default: git describe, or "dev") is stamped into both
# binaries; GOARCH selects the architecture; SOURCE_DATE_EPOCH dates the
# image entries (default: the last commit's time), so rebuilding the same
# commit gives the same image digest.
#
# The image holds:
#   /vethroute-agent               the agent (entrypoint)
#   /opt/vethroute/bin/vethroute   the plugin, and beside it portmap and
#   /opt/vethroute/bin/portmap     bandwidth from containernetworking/plugins
#   /opt/vethroute/bin/bandwidth   at the version go.mod pins, which the
#                                  conflist chains; `vethroute-agent
#                                  install-cni` copies the directory to the
#                                  node's /opt/cni/bin
#   /usr/sbin/nft and its libraries (unless --without-nft)
# For containerd nodes: ctr -n k8s.io images import OUT.tar
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/dist/vethroute-image.tar"
name="vethroute:dev"
load=1
with_nft=1
while (($#)); do
	case "$1" in
	-o) out="$2"; shift 2 ;;
	-n) name="$2"; shift 2 ;;
	--no-load) load=0; shift ;;
	--without-nft) with_nft=0; shift ;;
	-h | --help) sed -n '2,30p' "$0"; exit 0 ;;
	*) echo "build-image: unknown argument $1" >&2; exit 2 ;;
	esac
done

cd "$root"
version="${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
arch="${GOARCH:-$(go env GOARCH)}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "build-image: building static binaries ($version, linux/$arch)" >&2
# Static (no cgo) so the image needs no libc; -trimpath and the fixed
# version keep the binaries reproducible.
export CGO_ENABLED=0 GOOS=linux GOARCH="$arch"
ldflags="-s -w -X github.com/vethroute/vethroute/internal/buildinfo.Version=$version"
go build -trimpath -ldflags "$ldflags" -o "$work/vethroute" ./plugins/vethroute
go build -trimpath -ldflags "$ldflags" -o "$work/vethroute-agent" ./cmd/vethroute-agent
# The chained plugins come from the module go.mod already requires, so
# their version moves with the libraries the plugin itself uses.
for p in portmap bandwidth; do
	go build -trimpath -ldflags "-s -w" -o "$work/$p" "github.com/containernetworking/plugins/plugins/meta/$p"
done
for b in vethroute vethroute-agent portmap bandwidth; do
	if file "$work/$b" 2>/dev/null | grep -q 'dynamically linked'; then
		echo "build-image: $b is dynamically linked" >&2
		exit 1
	fi
done

files=(-file "$work/vethroute-agent=/vethroute-agent")
for b in vethroute portmap bandwidth; do
	files+=(-file "$work/$b=/opt/vethroute/bin/$b")
done
if ((with_nft)); then
	# knftables runs the nft binary; a static image has none. Copy the
	# build machine's, with every library the dynamic loader resolves for
	# it, each at the path the loader looks for it.
	nft="$(command -v nft || true)"
	if [[ -z "$nft" ]]; then
		echo "build-image: no nft on this machine: apt-get install nftables, or build --without-nft" >&2
		exit 1
	fi
	if [[ "$arch" != "$(go env GOHOSTARCH)" ]]; then
		echo "build-image: the image copies this machine's $(go env GOHOSTARCH) nft, which cannot go into a $arch image: build --without-nft" >&2
		exit 1
	fi
	files+=(-file "$(readlink -f "$nft")=/usr/sbin/nft")
	while read -r lib; do
		files+=(-file "$(readlink -f "$lib")=$lib")
	done < <(ldd "$nft" | grep -o '/[^ ]*' | sort -u)
fi

mkdir -p "$(dirname "$out")"
# The packer runs on the build machine, whatever GOARCH the image is for.
GOOS= GOARCH= go run ./deploy/ociimage -o "$out" -name "$name" -arch "$arch" \
	-entrypoint /vethroute-agent \
	-label "org.opencontainers.image.title=vethroute" \
	-label "org.opencontainers.image.version=$version" \
	"${files[@]}"
echo "build-image: wrote $out ($(du -h "$out" | cut -f1))" >&2

if ((load)) && command -v docker >/dev/null 2>&1; then
	# docker load only reads the archive: nothing is pulled.
	if docker info >/dev/null 2>&1; then
		docker load -i "$out"
	else
		echo "build-image: docker is installed but its daemon is not reachable; not loading" >&2
	fi
fi
echo "$out"
