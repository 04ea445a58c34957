#!/usr/bin/env bash
# Builds the upstream Kubernetes e2e suite and the images its sig-network
# tests run, without a registry: e2e.test and agnhost from the Go module
# proxy (test/k8s/build.sh), the other images from Debian's packages, each
# packed by deploy/ociimage under the exact name `e2e.test --list-images`
# prints, as an archive `kind load image-archive` takes.
#
# Usage: test/conformance/build.sh     (root: debootstrap and chroot)
#
# stdout: shell assignments, e.g.
#   E2E_TEST=/root/.cache/vethroute/k8s/v1.34.12-etcdv3.6.5/bin/e2e.test
#   E2E_IMAGE_LIST=/root/.cache/vethroute/conformance/v1.34.12/images.txt
#   E2E_IMAGE_ARCHIVES='/root/.cache/.../images/<key>/registry.k8s.io_e2e-test-images_agnhost_2.56.tar ...'
# progress, and the listed images this script does not build, go to stderr.
#
# Caches (outside the repo, ${VETHROUTE_CACHE:-$HOME/.cache/vethroute}):
#   k8s/<K8S>-etcd<ETCD>/bin/{e2e.test,agnhost}   test/k8s/build.sh
#   conformance/rootfs-<hash>/                    the Debian root the images'
#                                                 tools come from, keyed by
#                                                 suite, mirror and packages
#   conformance/<K8S>/images.txt                  e2e.test --list-images
#   conformance/<K8S>/images/<hash>/*.tar         the archives, keyed by every
#                                                 input of the images
#
# The images are equivalents, not copies: each carries what the selected
# tests run in it (docs/conformance.md lists which test needs what), taken
# from Debian bookworm where the upstream image has Alpine or an older
# Debian, so the versions in the tags are the suite's names, not what is
# inside.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=../k8s/versions.env
. "$repo/test/k8s/versions.env"
# shellcheck source=../kind/versions.env
. "$repo/test/kind/versions.env"

log() { printf 'conformance-build: %s\n' "$*" >&2; }
die() {
	log "$*"
	exit 1
}

[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap and chroot need it)"

cache="${VETHROUTE_CACHE:-$HOME/.cache/vethroute}/conformance"
mkdir -p "$cache"
exec 8>"$cache/.lock"
flock 8

export GOWORK=off GOFLAGS="-buildvcs=false" CGO_ENABLED=0

command -v debootstrap >/dev/null || {
	log "installing debootstrap from Debian's packages"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >&2
}

# ---- e2e.test and agnhost -----------------------------------------------------
kbin="$(bash "$repo/test/k8s/build.sh" e2e.test agnhost | tail -n1)"
e2e="$kbin/e2e.test"

# ---- the images the suite asks for ---------------------------------------------
# --list-images prints every image any test of the binary may use, one a
# line in map order (sorted here, so the file keys the archives), and exits
# before it needs a cluster or a kubeconfig.
kdir="$cache/$K8S_VERSION"
mkdir -p "$kdir"
if [[ ! -s "$kdir/images.txt" || "$kdir/images.txt" -ot "$e2e" ]]; then
	"$e2e" --list-images | sort >"$kdir/images.txt.tmp"
	mv -f "$kdir/images.txt.tmp" "$kdir/images.txt"
fi
mapfile -t listed <"$kdir/images.txt"
((${#listed[@]} > 10)) || die "e2e.test --list-images printed ${#listed[@]} images: $(cat "$kdir/images.txt")"

# ---- the Debian root the tools come from ----------------------------------------
# Never installed on this machine: debootstrap configures them in a chroot
# with a policy-rc.d that forbids starting services, so nginx does not
# listen anywhere while we build.
packages=(
	busybox-static bash bind9-dnsutils curl netcat-openbsd iproute2 iperf
	nginx-light
)
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
	# Older roots of this cache are dead weight.
	find "$cache" -maxdepth 1 -name 'rootfs-*' ! -name "${rootfs##*/}" -exec rm -rf {} +
fi

# ---- staging helpers -------------------------------------------------------------
# Every image root has bookworm's merged-/usr layout (/bin, /sbin, /lib and
# /lib64 link into /usr), so the paths ldd prints in the Debian root are
# valid in the image too.
stage_base() { # stage_base DIR
	local d="$1"
	install -d "$d/usr/bin" "$d/usr/sbin" "$d/usr/lib" "$d/usr/lib64" "$d/etc" "$d/root" "$d/var" "$d/run" "$d/proc" "$d/sys" "$d/dev"
	install -d -m 1777 "$d/tmp" "$d/var/tmp"
	ln -s usr/bin "$d/bin"
	ln -s usr/sbin "$d/sbin"
	ln -s usr/lib "$d/lib"
	ln -s usr/lib64 "$d/lib64"
	printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin' \
		'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin' >"$d/etc/passwd"
	printf '%s\n' 'root:x:0:' 'www-data:x:33:' 'nogroup:x:65534:' >"$d/etc/group"
	# getent and the resolver of the glibc tools read it; files first, as
	# the kubelet's /etc/hosts holds the pod's own names.
	printf '%s\n' 'passwd: files' 'group: files' 'hosts: files dns' >"$d/etc/nsswitch.conf"
}

# add_busybox DIR: busybox with a link per applet, as the Alpine and busybox
# images have; real tools copied later replace their applet's link.
add_busybox() {
	local d="$1" a
	install -m 0755 "$rootfs/usr/bin/busybox" "$d/usr/bin/busybox"
	while read -r a; do
		a="${a#usr/}"
		case "$a" in
		bin/* | sbin/*) ;;
		*) continue ;;
		esac
		[[ -e "$d/usr/$a" || -L "$d/usr/$a" ]] || ln -s /usr/bin/busybox "$d/usr/$a"
	done < <(chroot "$rootfs" /usr/bin/busybox --list-full)
	[[ -L "$d/usr/bin/sh" ]] || die "busybox has no sh applet"
}

# add_bins DIR PATH...: Debian root binaries (through alternatives links)
# and every library their loader resolves, as regular files at the same
# paths.
add_bins() {
	local d="$1" p src lib a
	shift
	for p in "$@"; do
		src="$(chroot "$rootfs" readlink -f "$p")" || die "no $p in the Debian root"
		[[ -f "$rootfs$src" ]] || die "no $p in the Debian root"
		rm -f "$d$p"
		install -D -m 0755 "$rootfs$src" "$d$p"
		# A busybox applet of the same name elsewhere in PATH (ip is
		# sbin/ip in busybox, bin/ip in iproute2) would win or confuse.
		for a in "$d/usr/bin/${p##*/}" "$d/usr/sbin/${p##*/}"; do
			[[ "$a" != "$d$p" && "$(readlink "$a" 2>/dev/null)" == /usr/bin/busybox ]] && rm -f "$a"
		done
	done
	while read -r lib; do
		[[ -e "$d$lib" ]] && continue
		src="$(chroot "$rootfs" readlink -f "$lib")"
		install -D -m 0755 "$rootfs$src" "$d$lib"
	done < <(chroot "$rootfs" ldd "$@" 2>/dev/null | grep -o '/[^ :]*' | grep -E '\.so' | sort -u)
}

# The tools the network and DNS tests run inside agnhost and jessie-dnsutils
# pods: the coreutils (busybox), bash, curl, nc, ip and ss, dig and
# nslookup, getent (hosts lookups through nsswitch) and iperf. /bin/sh is
# dash, not busybox: Debian's busybox shell runs its own applets before
# PATH, so `sh -c "nc -u ..."` would get busybox's nc, which has no -u.
stage_tools() { # stage_tools DIR
	stage_base "$1"
	add_busybox "$1"
	add_bins "$1" /usr/bin/dash /usr/bin/bash /usr/bin/curl /usr/bin/nc /usr/bin/ip /usr/bin/ss \
		/usr/bin/dig /usr/bin/nslookup /usr/bin/getent /usr/bin/iperf
	ln -sf dash "$1/usr/bin/sh"
	install -d "$1/etc/ssl/certs"
}

ociimage="$cache/.ociimage"
pause_bin="$cache/.pause"
(cd "$repo" && go build -o "$ociimage" ./deploy/ociimage && go build -trimpath -ldflags='-s -w' -o "$pause_bin" ./test/e2e/containerd/pause)
kmoddir="$(cd /tmp && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')"
[[ -d "$kmoddir/test/images/agnhost/porter" ]] || die "k8s.io/kubernetes $K8S_VERSION has no test/images/agnhost/porter (looked in $kmoddir)"
# agnhost's dns tests start /coredns from the image; the kind build's
# CoreDNS serves, when it built.
# Without a kind build yet (make e2e-images first on a fresh machine) there
# is no kind cache at all, and find's failure must not end the build.
coredns="$({ find "${VETHROUTE_CACHE:-$HOME/.cache/vethroute}/kind" -maxdepth 2 -path '*/coredns-*/coredns' -type f 2>/dev/null || true; } | sort | tail -n1)"
[[ -n "$coredns" ]] || log "no CoreDNS from the kind build (test/kind/build.sh): agnhost and jessie-dnsutils get no /coredns"

# Every input of every image goes into the key of the archive directory.
images_key="$(cat "${BASH_SOURCE[0]}" "$kbin/agnhost" "$pause_bin" "$ociimage" "$kdir/images.txt" \
	${coredns:+"$coredns"} <(echo "$rootfs_key") | sha256sum | cut -c1-12)"
out="$kdir/images/$images_key"

pack() { # pack NAME STAGE [ociimage flags...]
	local name="$1" stage="$2"
	shift 2
	SOURCE_DATE_EPOCH=0 "$ociimage" -o "$work/out/$(echo "$name" | tr '/:' '__').tar" -name "$name" -root "$stage" \
		-label "org.opencontainers.image.source=vethroute test/conformance" "$@"
}

if [[ ! -e "$out/.complete" ]]; then
	log "building the test images into $out"
	work="$(mktemp -d "$cache/.images.XXXXXX")"
	trap 'rm -rf "$work"' EXIT
	mkdir -p "$work/out"
	declare -A built=()
	for img in "${listed[@]}"; do
		repo_name="${img%:*}"
		stage="$work/stage/$(echo "$img" | tr '/:' '__')"
		case "$repo_name" in
		registry.k8s.io/e2e-test-images/agnhost)
			stage_tools "$stage"
			install -m 0755 "$kbin/agnhost" "$stage/agnhost"
			# entrypoint-tester tests run the image under this second name.
			ln -s agnhost "$stage/agnhost-2"
			install -m 0644 "$kmoddir/test/images/agnhost/porter/localhost.crt" "$kmoddir/test/images/agnhost/porter/localhost.key" "$stage/"
			install -d "$stage/uploads"
			[[ -n "$coredns" ]] && install -m 0755 "$coredns" "$stage/coredns"
			# The supplemental-groups test expects this user and group.
			echo 'user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh' >>"$stage/etc/passwd"
			printf '%s\n' 'user-defined-in-image:x:1000:' 'group-defined-in-image:x:50000:user-defined-in-image' >>"$stage/etc/group"
			pack "$img" "$stage" -entrypoint /agnhost -cmd pause
			;;
		registry.k8s.io/e2e-test-images/jessie-dnsutils)
			stage_tools "$stage"
			[[ -n "$coredns" ]] && install -m 0755 "$coredns" "$stage/coredns"
			pack "$img" "$stage" -cmd bash
			;;
		registry.k8s.io/e2e-test-images/busybox)
			stage_base "$stage"
			add_busybox "$stage"
			pack "$img" "$stage" -cmd sh
			;;
		registry.k8s.io/e2e-test-images/nginx)
			# Debian's nginx-light with Debian's configuration (port 80,
			# /var/www/html), logging to the container's output as the
			# upstream image does.
			stage_base "$stage"
			add_busybox "$stage"
			add_bins "$stage" /usr/sbin/nginx $(cd "$rootfs" && find usr/lib/nginx/modules -name '*.so' -printf '/%p ' 2>/dev/null)
			install -d "$stage/usr/share"
			cp -a "$rootfs/etc/nginx" "$stage/etc/"
			cp -a "$rootfs/usr/share/nginx" "$stage/usr/share/"
			[[ -d "$rootfs/usr/lib/nginx" ]] && cp -a "$rootfs/usr/lib/nginx" "$stage/usr/lib/"
			install -d "$stage/var/www" "$stage/var/lib/nginx" "$stage/var/log/nginx"
			cp -a "$rootfs/var/www/html" "$stage/var/www/"
			ln -s /dev/stdout "$stage/var/log/nginx/access.log"
			ln -s /dev/stderr "$stage/var/log/nginx/error.log"
			pack "$img" "$stage" -cmd nginx -cmd -g -cmd 'daemon off;'
			;;
		registry.k8s.io/pause)
			stage_base "$stage"
			install -m 0755 "$pause_bin" "$stage/pause"
			pack "$img" "$stage" -entrypoint /pause
			;;
		*) continue ;;
		esac
		built[$img]=1
	done
	printf '%s\n' "${!built[@]}" | sort >"$work/out/built.txt"
	touch "$work/out/.complete"
	rm -rf "$out"
	mkdir -p "$kdir/images"
	mv "$work/out" "$out"
	# Archives of older inputs are dead weight.
	find "$kdir/images" -mindepth 1 -maxdepth 1 ! -name "$images_key" -exec rm -rf {} +
fi

mapfile -t archives < <(find "$out" -maxdepth 1 -name '*.tar' | sort)
mapfile -t skipped < <(grep -vxF -f "$out/built.txt" "$kdir/images.txt" || true)
log "built ${#archives[@]} of ${#listed[@]} listed images; not built (no selected sig-network test runs them): ${skipped[*]}"
printf 'E2E_TEST=%s\nE2E_IMAGE_LIST=%s\nE2E_IMAGE_ARCHIVES=%q\n' "$e2e" "$kdir/images.txt" "${archives[*]}"
