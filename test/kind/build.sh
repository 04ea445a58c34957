#!/usr/bin/env bash
# Builds everything the kind e2e needs without an image registry: the kind
# CLI, the Kubernetes binaries, a kind node image and the component images
# kubeadm asks for, each made on this machine from the Go module proxy and
# Debian's packages.
#
# Usage: [NODE_RUNTIME=containerd2|containerd1] test/kind/build.sh
#        (root: debootstrap, chroot and docker)
#
# NODE_RUNTIME picks the node's container runtime: containerd2 (the
# default) is containerd and runc built here from their Go modules at the
# versions test/kind/versions.env pins; containerd1 is Debian's containerd
# 1.6 and runc, for the users who still run that.
#
# stdout: shell assignments for the e2e, e.g.
#   KIND_BIN=/root/.cache/vethroute/kind/bin/kind-v0.30.0
#   KIND_NODE_IMAGE=vethroute-kind/node:v1.34.12-containerd2-0123456789ab
#   KIND_PROBE_ARCHIVE=/root/.cache/vethroute/kind/probe-<key>.tar
# progress goes to stderr.
#
# Why not `kind build node-image`: it starts from kind's base image and pulls
# etcd, coredns, pause and kindnetd from registries, none of which answer
# here. Instead the node is a debootstrap'd Debian with systemd, containerd
# and runc (runc with libseccomp, which the static pods' RuntimeDefault
# profile needs), kind's own base files taken from the kind module zip,
# the Kubernetes binaries, and the component images imported into the
# node's containerd under the exact names and tags `kubeadm config images
# list` prints (any other name makes containerd try a pull and kubeadm init
# time out).
#
# Caches (outside the repo, ${VETHROUTE_CACHE:-$HOME/.cache/vethroute}):
#   kind/bin/kind-<KIND_VERSION>        the CLI
#   kind/rootfs-<hash>/                 the debootstrap'd root, keyed by suite,
#                                       mirror and package list
#   kind/containerd-<version>-<hash>/   containerd, ctr, containerd-shim-runc-v2
#   kind/runc-<version>-<hash>/         runc (static, with libseccomp)
#   kind/coredns-<version>/coredns      CoreDNS, when it builds
#   k8s/<K8S>-etcd<ETCD>/bin/           test/k8s/build.sh's binaries
# and the docker image vethroute-kind/node:<K8S_VERSION>-<NODE_RUNTIME>-<hash
# of every input of the node image>, so a warm run only hashes a few files
# and asks docker.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=versions.env
. "$here/versions.env"
# shellcheck source=../k8s/versions.env
. "$repo/test/k8s/versions.env"

log() { printf 'kind-build: %s\n' "$*" >&2; }
die() {
	log "$*"
	exit 1
}

NODE_RUNTIME="${NODE_RUNTIME:-containerd2}"
case "$NODE_RUNTIME" in
containerd2 | containerd1) ;;
*) die "NODE_RUNTIME=$NODE_RUNTIME: want containerd2 (the default) or containerd1" ;;
esac

[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap, chroot and docker need it)"
docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed): the kind e2e needs one"

cache="${VETHROUTE_CACHE:-$HOME/.cache/vethroute}/kind"
mkdir -p "$cache/bin"
# One build at a time: two e2e runs must not debootstrap or docker-commit
# the same thing concurrently.
exec 8>"$cache/.lock"
flock 8

export GOWORK=off GOFLAGS="-buildvcs=false" CGO_ENABLED=0

# Debian packages this script itself runs on the build machine.
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
# runc links libseccomp statically, and cgo needs a C compiler.
if [[ "$NODE_RUNTIME" == containerd2 ]]; then
	dpkg-query -W -f='${Status}' libseccomp-dev 2>/dev/null | grep -q 'ok installed' || need+=(libseccomp-dev)
	command -v gcc >/dev/null || need+=(gcc libc6-dev)
	command -v pkg-config >/dev/null || need+=(pkg-config)
fi
# The probe image's busybox must be the static one (the image has no libc).
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || need+=(busybox-static)
if ((${#need[@]})); then
	log "installing ${need[*]} from Debian's packages"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2
	apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi

# ---- the kind CLI ---------------------------------------------------------
kind="$cache/bin/kind-$KIND_VERSION"
if [[ ! -x "$kind" ]]; then
	log "building kind $KIND_VERSION"
	tmp="$(mktemp -d "$cache/.kind.XXXXXX")"
	GOBIN="$tmp" go install "sigs.k8s.io/kind@$KIND_VERSION" >&2
	mv -f "$tmp/kind" "$kind"
	rm -rf "$tmp"
fi
kindmod="$(cd /tmp && GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/kind@$KIND_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')"
basefiles="$kindmod/images/base/files"
[[ -d "$basefiles" ]] || die "kind module $KIND_VERSION has no images/base/files (looked in $kindmod)"

# ---- the probe image for the test pods ------------------------------------
# busybox (ping prints the ttl the e2e checks) and a small Go program that
# asks the API server for /version through the service VIP.
probe_key="$(cat /bin/busybox "$here"/probe/*.go "$repo"/deploy/ociimage/*.go "$repo"/internal/ociimage/*.go | sha256sum | cut -c1-12)"
probe="$cache/probe-$probe_key.tar"
if [[ ! -s "$probe" ]]; then
	log "building the probe image"
	tmp="$(mktemp -d "$cache/.probe.XXXXXX")"
	(cd "$repo" && go build -trimpath -ldflags='-s -w' -o "$tmp/probe" ./test/kind/probe)
	(cd "$repo" && go run ./deploy/ociimage -o "$tmp/probe.tar" -name "vethroute-kind/probe:$probe_key" \
		-file "$(readlink -f /bin/busybox)=/bin/busybox" -file "$tmp/probe=/probe")
	mv -f "$tmp/probe.tar" "$probe"
	rm -rf "$tmp"
	# Older probe images of this cache are dead weight.
	find "$cache" -maxdepth 1 -name 'probe-*.tar' ! -name "${probe##*/}" -delete
fi

# ---- is the node image already there? -------------------------------------
# Every file that shapes the node image goes into its tag; versions.env pins
# the rest (kind, Debian suite, Kubernetes, etcd).
node_inputs=(
	test/kind/build.sh test/kind/versions.env
	test/k8s/build.sh test/k8s/versions.env
	test/e2e/containerd/pause/main.go deploy/ociimage/*.go internal/ociimage/*.go
)
# Relative paths, so every clone of the same commit gets the same key; the
# runtime is in it too, so the two variants never share a tag.
node_key="$(cd "$repo" && { echo "$NODE_RUNTIME"; sha256sum "${node_inputs[@]}" $(find test/kind/node test/kind/node-containerd2 -type f | sort); } | sha256sum | cut -c1-12)"
node_image="vethroute-kind/node:${K8S_VERSION}-${NODE_RUNTIME}-${node_key}"

emit() {
	printf 'KIND_BIN=%s\nKIND_NODE_IMAGE=%s\nKIND_PROBE_ARCHIVE=%s\n' "$kind" "$node_image" "$probe"
}

if docker image inspect "$node_image" >/dev/null 2>&1; then
	log "cached: $node_image"
	emit
	exit 0
fi
start=$SECONDS

# ---- Kubernetes binaries ----------------------------------------------------
kbin="$(bash "$repo/test/k8s/build.sh" kubeadm kubelet kube-controller-manager kube-scheduler kube-proxy | tail -n1)"
crictl="$(bash "$repo/test/e2e/containerd/setup.sh" | tail -n1)"

mapfile -t images < <("$kbin/kubeadm" config images list --kubernetes-version "$K8S_VERSION")
((${#images[@]} >= 6)) || die "kubeadm config images list gave ${#images[@]} images: ${images[*]}"
log "kubeadm $K8S_VERSION wants: ${images[*]}"
image_of() { printf '%s\n' "${images[@]}" | grep -E "^registry.k8s.io/(.*/)?$1:" || die "kubeadm lists no $1 image"; }

# etcd runs as a static pod from an image named after kubeadm's etcd tag; the
# binary must be that release, not merely something called so.
etcd_image="$(image_of etcd)"
etcd_tag="${etcd_image##*:}"
[[ "v${etcd_tag%-*}" == "$ETCD_VERSION" ]] ||
	die "kubeadm $K8S_VERSION deploys etcd $etcd_tag but test/k8s/versions.env pins ETCD_VERSION=$ETCD_VERSION: set it to v${etcd_tag%-*}"

# ---- CoreDNS ------------------------------------------------------------------
coredns_image="$(image_of coredns)"
coredns_version="${coredns_image##*:}"
coredns="$cache/coredns-$coredns_version/coredns"
if [[ ! -x "$coredns" ]]; then
	log "building coredns $coredns_version"
	tmp="$(mktemp -d "$cache/.coredns.XXXXXX")"
	if (cd "$tmp" && GOBIN="$tmp" go install -trimpath -ldflags='-s -w' "github.com/coredns/coredns@$coredns_version" >&2); then
		mkdir -p "$(dirname "$coredns")"
		mv -f "$tmp/coredns" "$coredns"
	else
		log "coredns $coredns_version does not build: the cluster will run without it (addon/coredns skipped)"
	fi
	rm -rf "$tmp"
fi

# ---- containerd 2 and runc ----------------------------------------------------------
# Built as their Makefiles build them (containerd: no btrfs/devmapper/zfs
# snapshotters, as kind does; runc: seccomp, without libpathrs, a Rust
# library Debian does not package), from the module proxy, with -trimpath,
# and static so nothing depends on the node's libraries. containerd's
# Makefile sets its version from git, which a module zip lacks, so it is set
# here: the kubelet reports it as the node's containerRuntimeVersion, from
# which the agent picks the conflist's cniVersion. runc embeds its VERSION
# file.
if [[ "$NODE_RUNTIME" == containerd2 ]]; then
	ctrd_pkg=github.com/containerd/containerd/v2
	ctrd_tags="urfave_cli_no_docs no_btrfs no_devmapper no_zfs netgo osusergo static_build"
	ctrd_ldflags="-s -w -X $ctrd_pkg/version.Version=$CONTAINERD_VERSION -X $ctrd_pkg/version.Package=$ctrd_pkg"
	runc_tags="seccomp urfave_cli_no_docs netgo osusergo"
	runc_ldflags="-s -w -linkmode external -extldflags -static-pie"
	ctrd_dir="$cache/containerd-$CONTAINERD_VERSION-$(printf '%s\n' "$ctrd_tags" "$ctrd_ldflags" | sha256sum | cut -c1-12)"
	runc_dir="$cache/runc-$RUNC_VERSION-$(printf '%s\n' "$runc_tags" "$runc_ldflags" | sha256sum | cut -c1-12)"
	if [[ ! -x "$ctrd_dir/containerd-shim-runc-v2" ]]; then
		log "building containerd $CONTAINERD_VERSION (containerd, ctr, containerd-shim-runc-v2)"
		tmp="$(mktemp -d "$cache/.containerd.XXXXXX")"
		(cd /tmp && GOBIN="$tmp" go install -trimpath -tags "$ctrd_tags" -ldflags "$ctrd_ldflags" \
			"$ctrd_pkg/cmd/containerd@$CONTAINERD_VERSION" "$ctrd_pkg/cmd/ctr@$CONTAINERD_VERSION" >&2)
		# The shim is built without gRPC, as containerd's Makefile does.
		(cd /tmp && GOBIN="$tmp" go install -trimpath -tags "$ctrd_tags no_grpc" -ldflags "$ctrd_ldflags" \
			"$ctrd_pkg/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" >&2)
		rm -rf "$ctrd_dir"
		mv "$tmp" "$ctrd_dir"
	fi
	if [[ ! -x "$runc_dir/runc" ]]; then
		log "building runc $RUNC_VERSION"
		tmp="$(mktemp -d "$cache/.runc.XXXXXX")"
		(cd /tmp && CGO_ENABLED=1 GOBIN="$tmp" go install -trimpath -buildmode=pie -tags "$runc_tags" -ldflags "$runc_ldflags" \
			"github.com/opencontainers/runc@$RUNC_VERSION" >&2)
		rm -rf "$runc_dir"
		mv "$tmp" "$runc_dir"
	fi
fi

# ---- the root filesystem --------------------------------------------------------
# What kind's base image installs (minus NFS/iSCSI storage helpers and curl,
# which no test here uses); for containerd1 plus Debian's containerd and
# runc in place of kind's source builds.
packages=(
	systemd systemd-sysv dbus
	conntrack iptables nftables iproute2 ethtool util-linux mount kmod
	libseccomp2 pigz bash ca-certificates procps jq
)
# In this place of the list, so that containerd1's root keeps its cache key.
[[ "$NODE_RUNTIME" == containerd1 ]] && packages+=(containerd runc)
packages+=(iputils-ping socat)
rootfs_key="$(printf '%s\n' "$DEBIAN_SUITE" "$DEBIAN_MIRROR" "${packages[@]}" | sha256sum | cut -c1-12)"
rootfs="$cache/rootfs-$rootfs_key"
if [[ ! -e "$rootfs/.complete" ]]; then
	log "debootstrap $DEBIAN_SUITE into $rootfs (a few minutes)"
	rm -rf "$rootfs" "$rootfs.tmp"
	debootstrap --variant=minbase --include="$(
		IFS=,
		echo "${packages[*]}"
	)" "$DEBIAN_SUITE" "$rootfs.tmp" "$DEBIAN_MIRROR" >&2 ||
		die "debootstrap failed; its log is $rootfs.tmp/debootstrap/debootstrap.log"
	rm -rf "$rootfs.tmp/var/cache/apt/archives/"*.deb "$rootfs.tmp/var/lib/apt/lists/"*
	touch "$rootfs.tmp/.complete"
	mv "$rootfs.tmp" "$rootfs"
fi

work="$(mktemp -d "$cache/.node.XXXXXX")"
builder=""
cleanup() {
	[[ -n "$builder" ]] && docker rm -f "$builder" >/dev/null 2>&1
	docker image rm "vethroute-kind/node-stage:$node_key" "vethroute-kind/node-base:$node_key" >/dev/null 2>&1
	rm -rf "$work"
}
trap cleanup EXIT

# ---- component images ---------------------------------------------------------------
go build -o "$work/ociimage" "$repo/deploy/ociimage"
go build -trimpath -ldflags='-s -w' -o "$work/pause" "$repo/test/e2e/containerd/pause"
mkdir -p "$work/images"
pack() { # pack NAME ENTRYPOINT SRC=DST...
	local name="$1" entry="$2"
	shift 2
	local args=()
	for f in "$@"; do args+=(-file "$f"); done
	"$work/ociimage" -o "$work/images/$(echo "$name" | tr '/:' '__').tar" -name "$name" \
		${entry:+-entrypoint "$entry"} -label "org.opencontainers.image.source=vethroute test/kind" "${args[@]}"
}
for img in "${images[@]}"; do
	base="${img##*/}"
	base="${base%%:*}"
	case "$base" in
	kube-apiserver | kube-controller-manager | kube-scheduler)
		pack "$img" "" "$kbin/$base=/usr/local/bin/$base" ;;
	kube-proxy)
		# nftables mode: knftables runs nft, so the image carries the
		# rootfs's nft and the libraries its loader resolves.
		files=("$kbin/kube-proxy=/usr/local/bin/kube-proxy" "$rootfs/usr/sbin/nft=/usr/sbin/nft")
		while read -r lib; do
			files+=("$rootfs$(chroot "$rootfs" readlink -f "$lib")=$lib")
		done < <(chroot "$rootfs" ldd /usr/sbin/nft | grep -o '/[^ ]*' | sort -u)
		pack "$img" "" "${files[@]}" ;;
	etcd)
		pack "$img" "" "$kbin/etcd=/usr/local/bin/etcd" ;;
	pause)
		pack "$img" /pause "$work/pause=/pause" ;;
	coredns)
		[[ -x "$coredns" ]] && pack "$img" /coredns "$coredns=/coredns" ;;
	*) die "kubeadm lists an image this script does not know how to build: $img" ;;
	esac
done

# ---- the node's files ------------------------------------------------------------------
log "assembling the node root"
root="$work/root"
cp -a "$rootfs" "$root"
rm -f "$root/.complete"

# kind's base files, laid out as kind's base Dockerfile copies them.
install -d "$root/kind/bin" "$root/etc/systemd/system/kubelet.service.d" "$root/etc/containerd" "$root/etc/default" "$root/etc/sysctl.d"
install -m 0755 "$basefiles"/usr/local/bin/* "$root/usr/local/bin/"
install -m 0644 "$basefiles"/kind/README.txt "$root/kind/"
install -m 0755 "$basefiles"/kind/bin/* "$root/kind/bin/"
install -m 0644 "$basefiles"/etc/crictl.yaml "$root/etc/"
install -m 0644 "$basefiles"/etc/containerd/* "$root/etc/containerd/"
install -m 0644 "$basefiles"/etc/default/* "$root/etc/default/"
install -m 0644 "$basefiles"/etc/sysctl.d/* "$root/etc/sysctl.d/"
find "$basefiles/etc/systemd/system" -maxdepth 1 -type f -exec install -m 0644 {} "$root/etc/systemd/system/" \;
install -m 0644 "$basefiles"/etc/systemd/system/kubelet.service.d/* "$root/etc/systemd/system/kubelet.service.d/"
# Our own adjustments (see each file's comment).
cp -a "$here"/node/. "$root/"

# The static pods run the sandbox image kubeadm names, so containerd must
# use the same one; and this machine forbids a negative oom_score_adj, which
# containerd would otherwise pass to runc for critical pods.
pause_image="$(image_of pause)"
if [[ "$NODE_RUNTIME" == containerd2 ]]; then
	# Where kind's base image puts its source builds.
	install -m 0755 "$ctrd_dir/containerd" "$ctrd_dir/ctr" "$ctrd_dir/containerd-shim-runc-v2" "$root/usr/local/bin/"
	install -d "$root/usr/local/sbin"
	install -m 0755 "$runc_dir/runc" "$root/usr/local/sbin/runc"
	# Our version 3 config in place of kind's version 2 one.
	cp -a "$here"/node-containerd2/. "$root/"
	sed -i -e "s|^\([[:space:]]*sandbox = \).*|\1\"$pause_image\"|" "$root/etc/containerd/config.toml"
	grep -q "sandbox = \"$pause_image\"" "$root/etc/containerd/config.toml" || die "could not set the sandbox image in the containerd 2 config"
	chroot "$root" /usr/local/bin/containerd --version >&2
	chroot "$root" /usr/local/sbin/runc --version >&2
else
	# kind's unit runs /usr/local/bin/containerd; Debian installs /usr/bin.
	ln -sf /usr/bin/containerd "$root/usr/local/bin/containerd"
	sed -i -e "s|sandbox_image = \".*\"|sandbox_image = \"$pause_image\"|" \
		-e 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' "$root/etc/containerd/config.toml"
	grep -q "sandbox_image = \"$pause_image\"" "$root/etc/containerd/config.toml" || die "could not set sandbox_image in kind's containerd config"
fi

install -m 0755 "$kbin/kubeadm" "$kbin/kubelet" "$kbin/kubectl" "$root/usr/bin/"
install -m 0755 "$crictl" "$root/usr/local/bin/crictl"
install -d "$root/opt/cni/bin" "$root/etc/kubernetes/manifests" "$root/kind/images"
# containerd's CRI brings up each pod's lo through the loopback plugin.
(cd "$repo" && go build -trimpath -ldflags='-s -w' -o "$root/opt/cni/bin/loopback" github.com/containernetworking/plugins/plugins/main/loopback)
echo "$K8S_VERSION" >"$root/kind/version"

chroot "$root" /bin/sh -euc '
	ctr oci spec |
		jq ".hooks.createContainer[.hooks.createContainer | length] |= . + {\"path\": \"/kind/bin/mount-product-files.sh\"}" |
		jq "del(.process.rlimits)" >/etc/containerd/cri-base.json
	find /lib/systemd/system/sysinit.target.wants/ -name systemd-tmpfiles-setup.service -delete
	rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* \
		/lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/sockets.target.wants/*udev* \
		/lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/*
	echo ReadKMsg=no >>/etc/systemd/journald.conf
	systemctl enable kubelet.service containerd.service undo-mount-hacks.service >/dev/null 2>&1
	systemctl mask systemd-binfmt.service >/dev/null 2>&1
	: >/etc/machine-id
'
[[ -s "$root/etc/containerd/cri-base.json" ]] || die "ctr oci spec gave no cri-base.json"

log "docker import of the node root"
tar -C "$root" --numeric-owner -c . | docker import \
	--change 'ENV container=docker' \
	- "vethroute-kind/node-base:$node_key" >/dev/null
rm -rf "$root"

# ---- component images into the node's containerd ------------------------------------------------
# kind's node image carries them in containerd's store (namespace k8s.io) so
# no node ever pulls. A throw-away container of the image runs containerd
# just long enough to import them; they are not unpacked here (the node
# unpacks with whatever snapshotter it ends up using) but labelled pinned
# so image garbage collection keeps them.
log "importing ${images[*]##*/} into the node's containerd"
builder="vethroute-kind-build-$node_key"
docker rm -f "$builder" >/dev/null 2>&1 || true
# Unprivileged is enough: an import without unpacking only writes
# containerd's content store and metadata database.
docker run -d --name "$builder" --tmpfs /run --tmpfs /tmp \
	-v "$work/images:/kind/import:ro" --entrypoint /bin/sh \
	"vethroute-kind/node-base:$node_key" -c '
		printf "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n" >/tmp/containerd.toml
		exec containerd --config /tmp/containerd.toml' >/dev/null
for _ in $(seq 1 60); do
	docker exec "$builder" ctr version >/dev/null 2>&1 && break
	sleep 0.5
done
docker exec "$builder" ctr version >/dev/null 2>&1 || {
	docker logs "$builder" >&2
	die "containerd did not start in the build container"
}
for tar in "$work"/images/*.tar; do
	docker exec "$builder" ctr -n k8s.io images import --no-unpack --all-platforms "/kind/import/${tar##*/}" >/dev/null
done
docker exec "$builder" sh -c 'for i in $(ctr -n k8s.io images ls -q); do ctr -n k8s.io images label "$i" io.cri-containerd.pinned=pinned >/dev/null; done'
got="$(docker exec "$builder" ctr -n k8s.io images ls -q | sort)"
for img in "${images[@]}"; do
	if [[ "$img" == *coredns* && ! -x "$coredns" ]]; then continue; fi
	grep -qxF "$img" <<<"$got" || die "image $img missing from the node's containerd after import (have: $got)"
done
docker stop -t 10 "$builder" >/dev/null
docker commit "$builder" "vethroute-kind/node-stage:$node_key" >/dev/null

# docker import and commit cannot set STOPSIGNAL (systemd as PID 1 wants
# SIGRTMIN+3 to shut down); a Dockerfile of metadata only can, with the
# classic builder, which uses the local base image and fetches nothing.
cat >"$work/Dockerfile" <<DOCKERFILE
FROM vethroute-kind/node-stage:$node_key
ENV container=docker
STOPSIGNAL SIGRTMIN+3
LABEL org.opencontainers.image.source="vethroute test/kind" vethroute.kind.coredns="$([[ -x "$coredns" ]] && echo yes || echo no)"
ENTRYPOINT ["/usr/local/bin/vethroute-entrypoint", "/sbin/init"]
CMD []
DOCKERFILE
mkdir -p "$work/ctx"
DOCKER_BUILDKIT=0 docker build -q -f "$work/Dockerfile" -t "$node_image" "$work/ctx" >/dev/null 2>"$work/build.err" || {
	cat "$work/build.err" >&2
	die "docker build of the node image's metadata failed"
}

# Older node images of this runtime are now dead weight; the other
# variant's stay.
docker image ls --format '{{.Repository}}:{{.Tag}}' vethroute-kind/node | grep -F -- "-$NODE_RUNTIME-" | grep -vxF "$node_image" |
	xargs -r docker image rm >/dev/null 2>&1 || true
log "built $node_image in $((SECONDS - start))s"
emit
