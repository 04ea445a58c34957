# vethroute: see README.md. Every target that needs root says so.

GO        ?= go
BIN       := bin
PREFIX    ?= /opt/cni/bin
CONFDIR   ?= /etc/cni/net.d
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# One version stamp for every binary (internal/buildinfo).
LDFLAGS   := -s -w -X github.com/vethroute/vethroute/internal/buildinfo.Version=$(VERSION)
GOBUILD   := CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)'
# Integration tests share one binary, built once by this Makefile.
TESTENV   := VETHROUTE_BIN_DIR=$(CURDIR)/$(BIN)
# Fuzz budgets are execution counts, sized for about 15 s each here: with a
# duration, Go before 1.27 can fail a clean run with "context deadline
# exceeded" when the time is up under load (golang/go#75804). FUZZTIME, when
# set (a count like 50000x or a duration like 1m), replaces all of them.
FUZZTIME  ?=
FUZZ_BUDGETS := FuzzLoadConf=100000x FuzzOwnerKey=15000x FuzzPoolOps=3000x FuzzStoreRecords=10000x

.PHONY: all build deps test unit race fuzz demo lint install clean bench e2e e2e-containerd k8s-bins reliability agent-test image bench-quick bench-go e2e-kind kind-up kind-down e2e-images e2e-conformance e2e-conformance-ci bench-density bench-scale e2e-kind-chaos e2e-netpol

all: build

## build: the static plugin binary bin/vethroute and the node agent bin/vethroute-agent
build:
	$(GOBUILD) -o $(BIN)/vethroute ./plugins/vethroute
	$(GOBUILD) -o $(BIN)/vethroute-agent ./cmd/vethroute-agent

## deps: Debian packages and Go tools the demo and tests need (only what is missing)
deps:
	bash hack/ensure-deps.sh

## demo: the article's two-router topology, wired by the plugin (root)
demo: deps build
	$(GO) run ./test/demo -bin $(BIN)

## lint: gofmt, go vet, and go.mod/go.sum tidy
lint:
	@bad=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$bad" ]; then echo "gofmt needed:"; echo "$$bad"; exit 1; fi
	$(GO) vet ./...
	@$(GO) mod tidy -diff || { echo "go.mod/go.sum are not tidy: run go mod tidy"; exit 1; }

## unit: tests that need no root
unit:
	$(GO) test -count=1 ./pkg/... ./plugins/...

## race: the unit tests and the agent's integration test under the race detector (the agent's informer, workqueue and health server share state)
# The agent under test is a process of its own: it is built with -race too,
# into bin-race/ beside a copy of the plugin, so the race detector watches
# the informer, workqueue and HTTP servers, not only the test's side.
race: build
	$(GO) test -race -count=1 ./pkg/... ./plugins/... ./internal/... ./deploy/...
	mkdir -p bin-race && cp $(BIN)/vethroute bin-race/vethroute
	CGO_ENABLED=1 $(GO) build -race -o bin-race/vethroute-agent ./cmd/vethroute-agent
	VETHROUTE_BIN_DIR=$(CURDIR)/bin-race $(GO) test -race -count=1 ./test/agent/

## k8s-bins: kube-apiserver, etcd and kubectl for the agent's tests (cached outside the repo)
k8s-bins:
	bash test/k8s/build.sh

## test: everything, as root: lint, unit, integration, end-to-end, fuzz smoke
# go test's events go through hack/testreport: the counts line, the skip
# list, and a failure on any skip as root outside its allow-list. test/kind
# and test/kindchaos need the images make e2e-kind builds, so they run
# there and under e2e-kind-chaos, not here.
test: deps build k8s-bins lint
	bash test/e2e/containerd/setup.sh >/dev/null
	bash -euo pipefail -c 'm=$$($(GO) list -m); pkgs=$$($(GO) list ./... | grep -vx -e "$$m/test/kind" -e "$$m/test/kindchaos"); \
	  $(TESTENV) $(GO) test -json -count=1 -p 1 -timeout 60m $$pkgs | $(GO) run ./hack/testreport'
	$(MAKE) race
	$(MAKE) fuzz

## e2e-containerd: vethroute under a private containerd (CRI, crictl) and chained with the reference meta plugins (root)
e2e-containerd: deps build
	bash test/e2e/containerd/setup.sh >/dev/null
	$(TESTENV) $(GO) test -count=1 -v -timeout 20m ./test/e2e/containerd/ ./test/chain/

e2e: e2e-containerd

# kind clusters (docs/kind.md): the e2e and kind-up build the same images
# (test/kind/build.sh caches them) and share internal/kindcluster.
KIND_CLUSTER_NAME ?= vethroute
KIND_WORKERS      ?= 2
IP_FAMILY         ?= dual
# The node's container runtime: containerd2 (built from source) or
# containerd1 (Debian's 1.6); test/kind/build.sh.
NODE_RUNTIME      ?= containerd2
# e2e-kind's own cluster (and Docker network) name, apart from kind-up's.
E2E_KIND_CLUSTER  ?= vethroute-e2e
KIND_IMAGE        := vethroute:kind-$(KIND_CLUSTER_NAME)
# Sets KIND_BIN, KIND_NODE_IMAGE, KIND_PROBE_ARCHIVE and builds KIND_IMAGE
# into the local Docker; the first line of a recipe's shell.
KIND_IMAGES = vars=$$(NODE_RUNTIME='$(NODE_RUNTIME)' bash test/kind/build.sh); eval "$$vars"; \
	docker image rm $(KIND_IMAGE) >/dev/null 2>&1 || true; \
	VERSION=$(VERSION) bash deploy/build-image.sh -n $(KIND_IMAGE) -o $(CURDIR)/dist/vethroute-kind.tar >/dev/null

## e2e-kind: a three-node kind cluster with vethroute as its only CNI, every image built here (root, Docker; NODE_RUNTIME=containerd2|containerd1, IP_FAMILY=dual|ipv6|ipv4, E2E_KIND_CLUSTER; see docs/kind.md)
e2e-kind: deps build
	@set -e; $(KIND_IMAGES); \
	KIND_BIN="$$KIND_BIN" KIND_NODE_IMAGE="$$KIND_NODE_IMAGE" KIND_PROBE_ARCHIVE="$$KIND_PROBE_ARCHIVE" \
	KIND_E2E_CLUSTER='$(E2E_KIND_CLUSTER)' KIND_E2E_FAMILY='$(IP_FAMILY)' NODE_RUNTIME='$(NODE_RUNTIME)' \
	VETHROUTE_IMAGE=$(KIND_IMAGE) $(TESTENV) $(GO) test -count=1 -v -timeout 40m ./test/kind/

## e2e-kind-chaos: a three-node kind cluster under seeded pod churn while agents, workers, containerd, the API server and the DaemonSet fail one at a time; prints recovery times (root, Docker; CHAOS_SEED, CHAOS_ROUNDS; docs/reliability.md)
CHAOS_SEED   ?= 0
CHAOS_ROUNDS ?= 2
# Its own image tag: a kind-up beside it rebuilds vethroute:kind.
e2e-kind-chaos: KIND_IMAGE := vethroute:chaos
e2e-kind-chaos: deps build
	@set -e; $(KIND_IMAGES); \
	KIND_BIN="$$KIND_BIN" KIND_NODE_IMAGE="$$KIND_NODE_IMAGE" KIND_PROBE_ARCHIVE="$$KIND_PROBE_ARCHIVE" \
	VETHROUTE_IMAGE=$(KIND_IMAGE) $(TESTENV) $(GO) test -count=1 -v -timeout 60m ./test/kindchaos/ \
	  -args -seed='$(CHAOS_SEED)' -rounds='$(CHAOS_ROUNDS)'

## kind-up: a kind cluster to kubectl into, vethroute its only CNI (root, Docker; KIND_CLUSTER_NAME, KIND_WORKERS, IP_FAMILY=ipv4|ipv6|dual, NODE_RUNTIME=containerd2|containerd1)
kind-up: deps
	@set -e; $(KIND_IMAGES); \
	kbin=$$(bash test/k8s/build.sh | tail -n1); \
	$(GO) run ./test/kind/cmd/kindctl up -name '$(KIND_CLUSTER_NAME)' -workers '$(KIND_WORKERS)' -family '$(IP_FAMILY)' \
	  -kind "$$KIND_BIN" -node-image "$$KIND_NODE_IMAGE" -probe-archive "$$KIND_PROBE_ARCHIVE" -image $(KIND_IMAGE) \
	  -kubectl "$$kbin/kubectl"

## kind-down: remove kind-up's cluster, its Docker network and kubeconfig (the cached images stay)
kind-down:
	@set -e; . test/kind/versions.env; \
	$(GO) run ./test/kind/cmd/kindctl down -name '$(KIND_CLUSTER_NAME)' \
	  -kind "$${VETHROUTE_CACHE:-$$HOME/.cache/vethroute}/kind/bin/kind-$$KIND_VERSION"

DENSITY_CLUSTER_NAME ?= vr-density
DENSITY_PODS         ?= 110
DENSITY_ROUNDS       ?= 2
## bench-density: 110 pods at once on one kind worker, vethroute against ptp + host-local under the same containerd; rewrites its section of docs/benchmarks.md (root, Docker; DENSITY_CLUSTER_NAME, DENSITY_PODS, DENSITY_ROUNDS)
# An image name of its own: other kind runs on the machine rebuild vethroute:kind.
bench-density: KIND_IMAGE := vethroute:density
bench-density: deps
	@set -e; $(KIND_IMAGES); \
	$(GO) run ./test/kind/cmd/density -name '$(DENSITY_CLUSTER_NAME)' -pods '$(DENSITY_PODS)' -rounds '$(DENSITY_ROUNDS)' \
	  -kind "$$KIND_BIN" -node-image "$$KIND_NODE_IMAGE" -probe-archive "$$KIND_PROBE_ARCHIVE" -image $(KIND_IMAGE) \
	  -out docs/benchmarks.md

## e2e-images: the upstream e2e suite (e2e.test, ginkgo) and the images its sig-network tests run, built offline and cached (root; docs/conformance.md)
e2e-images:
	bash test/conformance/build.sh

## e2e-conformance: the upstream sig-network Conformance, dual-stack and granular tests on a kind-up cluster, removed at the end (root, Docker; docs/conformance.md)
E2E_REPORT_DIR ?= $(CURDIR)/dist/conformance
e2e-conformance: deps
	@$(MAKE) --no-print-directory kind-up || { $(MAKE) --no-print-directory kind-down; exit 1; }; \
	rc=0; KIND_CLUSTER_NAME='$(KIND_CLUSTER_NAME)' KIND_WORKERS='$(KIND_WORKERS)' IP_FAMILY='$(IP_FAMILY)' \
	  E2E_REPORT_DIR='$(E2E_REPORT_DIR)' bash test/conformance/run.sh || rc=$$?; \
	$(MAKE) --no-print-directory kind-down; exit $$rc

## e2e-conformance-ci: CI's subset of e2e-conformance (pod to pod and node to pod over HTTP and UDP in both families, DNS, HostPort, two Services tests) on its own kind-up cluster, removed at the end (root, Docker)
# The names are the suite's; docs/conformance.md lists them.
E2E_CI_FOCUS := \[sig-network\] (Networking Granular Checks: Pods should function for (intra|node)-pod communication|\[Feature:IPv6DualStack\] (should be able to reach pod on ipv4 and ipv6 ip|should create pod, add ipv6 and ipv4 ip to pod ips|Granular Checks: Services Secondary IP Family \[LinuxOnly\] should function for pod-Service: (http|udp))|DNS should provide DNS for the cluster \[Conformance\]|HostPort validates that there is no conflict|Services should (serve a basic endpoint from pods|be able to create a functioning NodePort service) \[Conformance\])
e2e-conformance-ci: deps
	@$(MAKE) --no-print-directory kind-up || { $(MAKE) --no-print-directory kind-down; exit 1; }; \
	rc=0; KIND_CLUSTER_NAME='$(KIND_CLUSTER_NAME)' KIND_WORKERS='$(KIND_WORKERS)' IP_FAMILY='$(IP_FAMILY)' \
	  E2E_REPORT_DIR='$(CURDIR)/dist/conformance-ci' E2E_FOCUS='$(E2E_CI_FOCUS)' bash test/conformance/run.sh || rc=$$?; \
	$(MAKE) --no-print-directory kind-down; exit $$rc

## e2e-netpol: the upstream [sig-network] Netpol suite (NetworkPolicy) on its own kind-up cluster, removed at the end; only the SCTP-traffic specs are skipped (root, Docker; docs/network-policy.md)
# [Feature:SCTPConnectivity] sends SCTP, which this kernel lacks; the two
# specs that only put SCTP in a policy and send TCP run.
E2E_NETPOL_PROCS ?= 3
e2e-netpol: deps
	@$(MAKE) --no-print-directory kind-up || { $(MAKE) --no-print-directory kind-down; exit 1; }; \
	rc=0; KIND_CLUSTER_NAME='$(KIND_CLUSTER_NAME)' KIND_WORKERS='$(KIND_WORKERS)' IP_FAMILY='$(IP_FAMILY)' \
	  E2E_REPORT_DIR='$(CURDIR)/dist/netpol' E2E_FOCUS='\[sig-network\] Netpol' E2E_SKIP='\[Feature:SCTPConnectivity\]' \
	  E2E_PROCS='$(E2E_NETPOL_PROCS)' bash test/conformance/run.sh || rc=$$?; \
	$(MAKE) --no-print-directory kind-down; exit $$rc

## agent-test: agent unit, route, integration and manifest tests (root; real API server)
agent-test: deps build k8s-bins
	$(TESTENV) $(GO) test -count=1 ./pkg/agent/... ./pkg/noderoutes/ ./test/agent/ ./deploy/...

## image: plugin + agent image built without a registry (docker load'ed when docker runs); IMAGE_FLAGS=--with-nft for --masquerade
image:
	VERSION=$(VERSION) bash deploy/build-image.sh $(IMAGE_FLAGS)

## bench: vethroute vs ptp+host-local in one alternating run (root, ~10-15 min); rewrites docs/benchmarks.md and docs/benchmarks-density.png
bench: deps
	$(GO) run ./test/bench -out docs/benchmarks.md

## bench-scale: vethroute-agent against 100, 1000 and 5000 simulated Nodes on a real API server: start-up, memory, CPU, API bytes, churn delays (root, ~10 min); writes its section of docs/benchmarks.md and docs/benchmarks-scale.png
# The before figures are the agent before issue 20's changes, kept for comparison.
BENCH_SCALE_FLAGS ?=
bench-scale: deps k8s-bins
	$(GO) run ./test/benchscale -out docs/benchmarks.md -before test/benchscale/testdata/before-a88064a.json $(BENCH_SCALE_FLAGS)

## bench-quick: smoke run of every benchmark section (~1 min)
bench-quick: deps
	$(GO) run ./test/bench -quick -out /tmp/vethroute-bench/benchmarks.md

## bench-go: Go benchmarks of the routing and IPAM hot paths
bench-go:
	$(GO) test -run '^$$' -bench . ./pkg/routing/ ./pkg/ipam/

## reliability: kills, storms, hostile input, foreign state, store safety (root, a few minutes)
reliability: deps build
	$(TESTENV) $(GO) test -count=1 -v ./test/reliability/

## fuzz: each fuzz target for a bounded number of executions (FUZZ_BUDGETS, or FUZZTIME for all)
fuzz:
	@for t in $$(grep -rhoE '^func Fuzz[A-Za-z0-9_]+' --include='*_test.go' pkg plugins | sed 's/func //' | sort -u); do \
	  pkg=$$(grep -rlE "^func $$t\(" --include='*_test.go' pkg plugins | head -1 | xargs dirname); \
	  budget="$(FUZZTIME)"; \
	  for b in $(FUZZ_BUDGETS); do [ -n "$$budget" ] || [ "$${b%%=*}" != "$$t" ] || budget="$${b#*=}"; done; \
	  budget="$${budget:-10000x}"; \
	  echo "fuzz $$t in ./$$pkg for $$budget"; \
	  $(GO) test -run='^$$' -fuzz="^$$t$$" -fuzztime=$$budget ./$$pkg || exit 1; \
	done

## install: copy the plugin to $(PREFIX) (and the example conflist to $(CONFDIR) if absent)
install: build
	install -d $(DESTDIR)$(PREFIX)
	install -m 0755 $(BIN)/vethroute $(DESTDIR)$(PREFIX)/vethroute
	install -d $(DESTDIR)$(CONFDIR)
	[ -e $(DESTDIR)$(CONFDIR)/10-vethroute.conflist ] || install -m 0644 conf/10-vethroute.conflist $(DESTDIR)$(CONFDIR)/10-vethroute.conflist

## clean: remove build output
clean:
	rm -rf $(BIN) bin-race
	$(GO) clean -testcache
