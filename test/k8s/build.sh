#!/usr/bin/env bash
# Builds a real Kubernetes control plane (kube-apiserver, kubectl, etcd) for
# tests, from the Go module proxy, at the versions pinned in versions.env.
#
# Usage: test/k8s/build.sh [extra-component...]
#   extra components: any k8s.io/kubernetes/cmd/<name> (kubeadm, kubelet,
#   kube-controller-manager, kube-scheduler, kube-proxy, ...), etcdctl/etcdutl,
#   e2e.test (the upstream e2e suite, k8s.io/kubernetes/test/e2e, compiled with
#   `go test -c`), agnhost (k8s.io/kubernetes/test/images/agnhost, the e2e
#   suite's test server; test/conformance/build.sh packs it as an image) or
#   ginkgo (the CLI that runs e2e.test in parallel processes, at the version
#   k8s.io/kubernetes requires).
#
# Binaries are cached outside the repo in
#   ${VETHROUTE_CACHE:-$HOME/.cache/vethroute}/k8s/<K8S_VERSION>-etcd<ETCD_VERSION>/bin/
# and only missing ones are built. The last line of stdout is that bin dir;
# progress goes to stderr so callers can do BIN=$(test/k8s/build.sh | tail -n1).
#
# Why from the module proxy: it is the only source of Kubernetes reachable from
# our machines and CI (no release downloads), and `go build` of a pinned module
# version is reproducible enough for a test fixture.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=versions.env
. "$here/versions.env"
: "${K8S_VERSION:?versions.env must set K8S_VERSION}"
: "${ETCD_VERSION:?versions.env must set ETCD_VERSION}"

log() { printf 'k8s-build: %s\n' "$*" >&2; }

key="${K8S_VERSION}-etcd${ETCD_VERSION}"
root="${VETHROUTE_CACHE:-$HOME/.cache/vethroute}/k8s"
dest="$root/$key"
bindir="$dest/bin"

want=(kube-apiserver kubectl etcd "$@")

# Drop duplicates, keeping order, so "build.sh kubectl" is harmless.
declare -A seen=()
components=()
for c in "${want[@]}"; do
	[[ -n "${seen[$c]:-}" ]] && continue
	seen[$c]=1
	components+=("$c")
done

missing() {
	local c
	for c in "${components[@]}"; do
		[[ -x "$bindir/$c" ]] || printf '%s\n' "$c"
	done
}

mkdir -p "$root"
# Serialise builds of the same key (two test runs, or make -j) so they never
# race on the final rename; a build of another key proceeds in parallel.
exec 9>"$root/.$key.lock"
flock 9

mapfile -t todo < <(missing)
if ((${#todo[@]} == 0)); then
	log "cached: ${components[*]}"
	printf '%s\n' "$bindir"
	exit 0
fi

# Everything below works in a temp dir on the same filesystem as the cache, so
# the final step is a rename: a killed build leaves only a .build-* dir
# (removed by the trap, or, after a SIGKILL, by the next build of the key,
# which holds the lock so no live build owns one), never a partial bin/.
rm -rf "$root/.build-$key".*
tmp="$(mktemp -d "$root/.build-$key.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
out="$tmp/out"
mkdir -p "$out/bin"
# Run the go commands outside any caller module (e.g. this repo's go.mod).
cd "$tmp"

# A user's GOFLAGS (-mod=vendor, ...) or go.work must not leak into the
# throw-away wrapper modules; -mod=mod lets `go build` record the checksums it
# verifies in the wrapper's go.sum.
export GOWORK=off GOFLAGS="-buildvcs=false -mod=mod" CGO_ENABLED=0

# gomod_field prints one field of a module version's `go list -m` record.
gomod_field() { go list -m -f "$2" "$1"; }

k8s_pkgs=()
k8s_tests=()
etcd_builds=()
for c in "${todo[@]}"; do
	case "$c" in
	e2e.test)
		k8s_tests+=("k8s.io/kubernetes/test/e2e")
		continue
		;;
	agnhost)
		k8s_pkgs+=("k8s.io/kubernetes/test/images/agnhost")
		continue
		;;
	ginkgo)
		k8s_pkgs+=("github.com/onsi/ginkgo/v2/ginkgo")
		continue
		;;
	esac
	# Names become package paths and file names: no "..", "/" or options.
	if [[ ! "$c" =~ ^[a-z0-9][a-z0-9-]*$ ]]; then
		log "bad component name: $c"
		exit 2
	fi
	case "$c" in
	etcd) etcd_builds+=("etcd=go.etcd.io/etcd/server/v3") ;;
	etcdctl) etcd_builds+=("etcdctl=go.etcd.io/etcd/etcdctl/v3") ;;
	etcdutl) etcd_builds+=("etcdutl=go.etcd.io/etcd/etcdutl/v3") ;;
	*) k8s_pkgs+=("k8s.io/kubernetes/cmd/$c") ;;
	esac
done

start=$SECONDS

if ((${#k8s_pkgs[@]} + ${#k8s_tests[@]} > 0)); then
	go mod download "k8s.io/kubernetes@$K8S_VERSION"
	kdir="$(gomod_field "k8s.io/kubernetes@$K8S_VERSION" '{{.Dir}}')"
	kgomod="$(gomod_field "k8s.io/kubernetes@$K8S_VERSION" '{{.GoMod}}')"
	for p in "${k8s_pkgs[@]}"; do
		[[ "$p" == k8s.io/kubernetes/* ]] || continue
		if ! compgen -G "$kdir/${p#k8s.io/kubernetes/}/*.go" >/dev/null; then
			log "unknown component ${p##*/}: not in k8s.io/kubernetes/cmd nor etcd/etcdctl/etcdutl"
			exit 2
		fi
	done
	log "building ${k8s_pkgs[*]##*/} ${k8s_tests[*]:+e2e.test} $K8S_VERSION"
	kmod="$tmp/k8s"
	mkdir -p "$kmod"

	# k8s.io/kubernetes replaces its k8s.io/* staging modules with ./staging
	# paths that are not in the module zip, and replace directives of a
	# dependency are ignored anyway, so build from a wrapper main module that
	# points each staging module at its published v0.<minor>.<patch>.
	staging_ver="v0.${K8S_VERSION#v1.}"
	mapfile -t staging < <(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "$kgomod")
	if ((${#staging[@]} == 0)); then
		log "no ./staging replacements found in $kgomod: has the layout changed?"
		exit 1
	fi
	(
		cd "$kmod"
		go mod init vethroute.local/k8s-build >/dev/null 2>&1
		# Same language version and GODEBUG defaults as the upstream main
		# module, so runtime behaviour matches an official build.
		go mod edit -go="$(gomod_field "k8s.io/kubernetes@$K8S_VERSION" '{{.GoVersion}}')"
		awk '
			$1 == "godebug" && $2 == "(" { inblock = 1; next }
			inblock && $1 == ")" { inblock = 0; next }
			inblock && NF { print $1 }
			$1 == "godebug" && $2 != "(" { print $2 }
		' "$kgomod" | while read -r gd; do go mod edit -godebug="$gd"; done
		go mod edit -require="k8s.io/kubernetes@$K8S_VERSION"
		for m in "${staging[@]}"; do
			go mod edit -replace="$m=$m@$staging_ver"
		done
	)

	# The version variables hack/lib/version.sh sets; without them the server
	# reports v0.0.0-master and clients warn about version skew. The module
	# zip carries no git commit, so gitCommit stays empty rather than made up;
	# buildDate is the release's module time, which keeps builds reproducible.
	minor="${K8S_VERSION#v1.}"
	minor="${minor%%.*}"
	build_date="$(gomod_field "k8s.io/kubernetes@$K8S_VERSION" '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}')"
	ldflags="-s -w"
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ldflags+=" -X $pkg.gitVersion=$K8S_VERSION"
		ldflags+=" -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
		ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
	done
	if ((${#k8s_pkgs[@]} > 0)); then
		(cd "$kmod" && go build -trimpath -ldflags="$ldflags" -o "$out/bin/" "${k8s_pkgs[@]}")
	fi
	# The e2e suite is a test binary: `go test -c` of one package, named
	# e2e.test like the upstream release's. It needs the test-only
	# dependencies too, which -mod=mod adds to the wrapper's go.sum; vet
	# is off because upstream's code is not ours to lint and it costs
	# minutes here.
	for p in "${k8s_tests[@]}"; do
		(cd "$kmod" && go test -c -vet=off -trimpath -ldflags="$ldflags" -o "$out/bin/e2e.test" "$p")
	done
fi

if ((${#etcd_builds[@]} > 0)); then
	log "building ${etcd_builds[*]%%=*} $ETCD_VERSION"
	emod="$tmp/etcd"
	mkdir -p "$emod"
	# etcd's own modules replace their siblings with ../ paths too, so
	# `go install ...@version` refuses them; a wrapper module again. It is kept
	# separate from the Kubernetes one so etcd gets the dependency versions
	# its own go.mod asks for, not ones raised by Kubernetes' requirements.
	(
		cd "$emod"
		go mod init vethroute.local/etcd-build >/dev/null 2>&1
		go mod edit -go="$(gomod_field "go.etcd.io/etcd/server/v3@$ETCD_VERSION" '{{.GoVersion}}')"
		for b in "${etcd_builds[@]}"; do
			go mod edit -require="${b#*=}@$ETCD_VERSION"
		done
		for b in "${etcd_builds[@]}"; do
			go build -trimpath -ldflags="-s -w" -o "$out/bin/${b%%=*}" "${b#*=}"
		done
	)
fi

for c in "${todo[@]}"; do
	[[ -x "$out/bin/$c" ]] || {
		log "build produced no $c"
		exit 1
	}
done

if [[ -d "$dest" ]]; then
	# Adding components to an existing key: rename each binary into place
	# (atomic per file), leaving the ones already there untouched.
	mkdir -p "$bindir"
	for c in "${todo[@]}"; do
		mv -f "$out/bin/$c" "$bindir/$c"
	done
else
	mv "$out" "$dest"
fi

log "built ${todo[*]} in $((SECONDS - start))s"
printf '%s\n' "$bindir"
