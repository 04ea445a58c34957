// Package kindchaos_test runs vethroute on a three-node kind cluster (one
// control plane, two workers, dual-stack) under a seeded churn of pod
// creates and deletes while, one at a time, the failures operators meet
// happen: an agent killed, a worker rebooted, containerd restarted, the API
// server down for a minute, the agent DaemonSet deleted and re-applied.
// After each fault it measures how long the agent's routes and pod-to-pod
// traffic take to come back and checks the cluster's invariants (no address
// held twice, reservations and veths equal to the running pods, routes equal
// to the other nodes' pod CIDRs); at the end it prints the recovery times.
//
// It runs under `make e2e-kind-chaos`, which builds the images and sets
// KIND_BIN, KIND_NODE_IMAGE, KIND_PROBE_ARCHIVE and VETHROUTE_IMAGE; the
// cluster's lifecycle is internal/kindcluster's, as for `make kind-up`.
// The seed is printed; -seed=N (or CHAOS_SEED=N) replays the fault order,
// the workers chosen and the churn's choices (the timing is the machine's).
package kindchaos_test

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vethroute/vethroute/internal/kindcluster"
	"github.com/vethroute/vethroute/internal/testutil"
)

var (
	seedFlag   = flag.Int64("seed", 0, "seed of the fault plan and the churn (default: CHAOS_SEED, else the clock)")
	roundsFlag = flag.Int("rounds", 2, "rounds; each injects every fault once, in a seeded order")
	minOps     = flag.Int("min-ops", 200, "pod creates and deletes the churn makes at least over the run")
	nameFlag   = flag.String("name", "vr-chaos", "kind cluster name (also its Docker network's)")
)

const (
	// routeBound is how soon after the agent runs again its routes must
	// equal the other nodes' pod CIDRs.
	routeBound = 10 * time.Second
	// probeBound is how soon after a fault ends pods on different nodes
	// must reach each other again.
	probeBound = 30 * time.Second
	// recoveryLimit bounds the wait for either; past it the cluster is
	// declared broken and the run stops.
	recoveryLimit = 4 * time.Minute
)

func TestChaos(t *testing.T) {
	testutil.RequireRoot(t)
	kindBin, nodeImage := os.Getenv("KIND_BIN"), os.Getenv("KIND_NODE_IMAGE")
	probeArchive, pluginImage := os.Getenv("KIND_PROBE_ARCHIVE"), os.Getenv("VETHROUTE_IMAGE")
	if kindBin == "" || nodeImage == "" || probeArchive == "" || pluginImage == "" {
		t.Skip("kind chaos: run it with `make e2e-kind-chaos`, which builds the node image and sets KIND_BIN, KIND_NODE_IMAGE, KIND_PROBE_ARCHIVE and VETHROUTE_IMAGE")
	}
	seed := chooseSeed(t)
	plan := rand.New(rand.NewPCG(uint64(seed), 1))
	churnRand := rand.New(rand.NewPCG(uint64(seed), 2))

	e := newEnv(t, kindBin, nodeImage, probeArchive, pluginImage)
	e.startAnchors()
	e.settleAndCheck("start")

	ch := newChurn(e, churnRand)
	start := time.Now()
	for round := 1; round <= *roundsFlag; round++ {
		order := plan.Perm(len(faults))
		for _, i := range order {
			f := faults[i]
			target := e.workers[plan.IntN(len(e.workers))]
			pre := time.Duration(5+plan.IntN(10)) * time.Second
			post := time.Duration(5+plan.IntN(10)) * time.Second
			e.inject(ch, f, target, round, pre, post)
		}
	}
	// The churn makes at least -min-ops creates and deletes, then every
	// churn pod goes and the nodes must be back to the system pods alone.
	ch.topUp(*minOps, 5*time.Minute)
	ch.deleteAll()
	e.settleAndCheck("end (every churn pod deleted)")
	e.report(ch, seed, time.Since(start))
}

// chooseSeed takes -seed, else CHAOS_SEED, else a random one, and logs how
// to replay it.
func chooseSeed(t *testing.T) int64 {
	seed := *seedFlag
	if seed == 0 {
		if s := os.Getenv("CHAOS_SEED"); s != "" {
			v, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				t.Fatalf("CHAOS_SEED=%q: %v", s, err)
			}
			seed = v
		}
	}
	if seed == 0 {
		seed = rand.Int64N(1<<62) + 1
	}
	t.Logf("seed %d (replay: make e2e-kind-chaos CHAOS_SEED=%d)", seed, seed)
	return seed
}

// env is the cluster under test and what the checks need of it.
type env struct {
	t *testing.T
	*kindcluster.Cluster
	cs      *kubernetes.Clientset
	workers []string
	nodes   []string // every node, control plane first
	results []result

	notesMu sync.Mutex
	notes   []string
}

// note records something a fault's goroutine saw, for the fault's log line.
func (e *env) note(s string) {
	e.notesMu.Lock()
	defer e.notesMu.Unlock()
	e.notes = append(e.notes, s)
}

// takeNotes returns the notes so far and forgets them.
func (e *env) takeNotes() []string {
	e.notesMu.Lock()
	defer e.notesMu.Unlock()
	n := e.notes
	e.notes = nil
	return n
}

// newEnv creates the dual-stack cluster, deploys vethroute, and registers
// its removal (after a log export when the test failed).
func newEnv(t *testing.T, kindBin, nodeImage, probeArchive, pluginImage string) *env {
	dir := t.TempDir()
	kc, err := kindcluster.New(kindcluster.Options{
		Name: *nameFlag, Workers: 2, Family: kindcluster.Dual, MTU: 1400,
		Kind: kindBin, NodeImage: nodeImage, ProbeArchive: probeArchive, PluginImage: pluginImage,
		RepoRoot:   testutil.RepoRoot(t),
		Kubeconfig: filepath.Join(dir, "kind-kubeconfig"),
		Logf:       t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, Cluster: kc}
	// A cluster left by a killed earlier run would make create fail.
	if err := e.Delete(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			logs := filepath.Join(os.TempDir(), fmt.Sprintf("vethroute-kind-logs-%s-%d", e.Name, time.Now().Unix()))
			t.Logf("kind export logs (%v): node logs are in %s", e.ExportLogs(logs), logs)
		}
		if err := e.Delete(); err != nil {
			t.Error(err)
		}
	})
	if err := e.Up(); err != nil {
		// On a loaded machine kubeadm's wait for the control plane can
		// time out; one fresh try, said in the log, before giving up.
		t.Logf("cluster creation failed, deleting it and trying once more: %v", kindcluster.LastLines(err.Error(), 5))
		if derr := e.Delete(); derr != nil {
			t.Fatal(derr)
		}
		if err := e.Up(); err != nil {
			t.Fatal(err)
		}
	}
	// The client talks to the port Docker publishes on the loopback for
	// the API server, never to a node's address.
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := e.WriteKubeconfig(kubeconfig); err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatalf("kubeconfig: %v", err)
	}
	cfg.Timeout = 15 * time.Second
	cfg.QPS, cfg.Burst = 50, 100
	if e.cs, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatalf("kubernetes client: %v", err)
	}
	e.nodes = []string{e.ControlPlane(), e.Name + "-worker", e.Name + "-worker2"}
	e.workers = e.nodes[1:]
	return e
}

// ctx is a bounded context for one API call.
func ctx(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

func TestMain(m *testing.M) { testutil.Main(m) }
