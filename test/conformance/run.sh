#!/usr/bin/env bash
# Runs the upstream e2e suite's sig-network tests against a running
# `make kind-up` cluster: loads the test images test/conformance/build.sh
# made into every node, then runs e2e.test under the ginkgo CLI.
#
# Usage: test/conformance/run.sh     (root, Docker; the Makefile's
#        e2e-conformance target creates and removes the cluster around it)
#
# Environment: KIND_CLUSTER_NAME (vethroute), KIND_WORKERS (2), IP_FAMILY
# (dual), E2E_REPORT_DIR (dist/conformance: JUnit, the ginkgo log, and on
# failure the nodes' logs), E2E_PROCS (2: one per core here), KUBECONFIG
# (kindctl's default, ~/.kube/vethroute-<name>.yaml), E2E_FOCUS (a ginkgo
# focus regexp replacing the full selection; CI's subset sets it), E2E_SKIP
# (a ginkgo skip regexp replacing the default, SCTP).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=../kind/versions.env
. "$repo/test/kind/versions.env"

log() { printf 'conformance: %s\n' "$*" >&2; }
die() {
	log "$*"
	exit 1
}

name="${KIND_CLUSTER_NAME:-vethroute}"
workers="${KIND_WORKERS:-2}"
family="${IP_FAMILY:-dual}"
report="${E2E_REPORT_DIR:-$repo/dist/conformance}"
procs="${E2E_PROCS:-2}"
kubeconfig="${KUBECONFIG:-$HOME/.kube/vethroute-$name.yaml}"
kind="${VETHROUTE_CACHE:-$HOME/.cache/vethroute}/kind/bin/kind-$KIND_VERSION"

[[ -x "$kind" ]] || die "no kind CLI at $kind: run make kind-up first"
[[ -s "$kubeconfig" ]] || die "no kubeconfig at $kubeconfig: run make kind-up first"
"$kind" get clusters 2>/dev/null | grep -qx "$name" || die "no kind cluster $name: run make kind-up first"

vars="$(bash "$here/build.sh")"
eval "$vars"
kbin="$(bash "$repo/test/k8s/build.sh" ginkgo | tail -n1)"

# Every node gets every test image: the scheduler puts test pods anywhere.
# pause is not loaded: the node image already holds it as the sandbox image.
# The import is kind's own (`kind load image-archive` runs the same ctr
# command), without its `docker exec --privileged`, which an engine that
# withholds a capability refuses (see test/kind/shim/docker).
mapfile -t nodes < <("$kind" get nodes --name "$name")
((${#nodes[@]} > 0)) || die "kind cluster $name has no nodes"
for a in $E2E_IMAGE_ARCHIVES; do
	[[ "$a" == *registry.k8s.io_pause_* ]] && continue
	for n in "${nodes[@]}"; do
		log "loading ${a##*/} into $n"
		docker exec -i "$n" ctr --namespace=k8s.io images import --all-platforms --digests - <"$a" >/dev/null
	done
done

focus="${E2E_FOCUS:-\[sig-network\].*(\[Conformance\]|\[Feature:IPv6DualStack\]|Networking Granular Checks)}"
# This kernel has no SCTP module, so the SCTP tests cannot pass whatever
# the CNI does. A caller whose selection has tests that only name SCTP
# (policies with SCTP ports over TCP traffic) skips less.
skip="${E2E_SKIP:-SCTP}"
[[ "$family" == dual ]] || skip+='|\[Feature:IPv6DualStack\]'

rm -rf "$report"
mkdir -p "$report"
# As kind's own CI (hack/ci/e2e-k8s.sh in the kind module): no provider
# setup, and the runtime the RuntimeClass helpers ask about.
export KUBERNETES_CONFORMANCE_TEST=y KUBE_CONTAINER_RUNTIME=remote \
	KUBE_CONTAINER_RUNTIME_ENDPOINT=unix:///run/containerd/containerd.sock KUBE_CONTAINER_RUNTIME_NAME=containerd
rc=0
start=$SECONDS
"$kbin/ginkgo" --procs="$procs" --timeout=3h --no-color --focus="$focus" --skip="$skip" "$E2E_TEST" -- \
	--kubeconfig="$kubeconfig" --provider=skeleton --num-nodes="$workers" \
	--kubectl-path="$kbin/kubectl" --report-dir="$report" --disable-log-dump=true \
	2>&1 | tee "$report/e2e.log" || rc=$?
log "e2e.test took $((SECONDS - start))s, exit $rc; JUnit in $report"
if ((rc != 0)); then
	"$kind" export logs --name "$name" "$report/kind-logs" >&2 || log "kind export logs failed"
fi
exit "$rc"
