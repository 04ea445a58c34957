package reliability

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vethroute/vethroute/internal/testutil"
	"github.com/vethroute/vethroute/pkg/ipam"
)

const (
	stormPods   = 64
	stormRounds = 10
	// stormCapacity addresses for stormPods pods: the pool is only slightly
	// larger than the pods, so concurrent ADDs contend for the last ones.
	stormCapacity = 70
	stormRanges   = `[[{"subnet": "10.88.0.0/24", "rangeStart": "10.88.0.1", "rangeEnd": "10.88.0.70", "gateway": "10.88.0.254"}]]`
	// stormFillers reservations are taken outside the plugin in every third
	// round, leaving fewer addresses than pods: there the pool really runs
	// out, and only there may an ADD say so.
	stormFillers = 10
)

// stormStep is one plugin invocation of a storm round and how it ended.
type stormStep struct {
	command string
	out     testutil.Outcome
	err     error
}

// TestStorm runs rounds in which all 64 pods act at once, each its own
// plugin process: a detached pod ADDs; an attached one DELs, or DELs and
// ADDs again (a pod replaced). The pool has 70 addresses; in every third
// round 10 are taken by another writer of the store first and every pod
// wants an address, so the pool runs out for real. After
// each round: every DEL succeeded, every failed ADD failed with "pool
// exhausted" (code 11) and only when the pool really was full, no address
// is held twice, and nothing leaked.
func TestStorm(t *testing.T) {
	testutil.RequireRoot(t)
	r := newRand(t)
	f := newFixture(t, stormRanges, "")
	pods := make([]ns.NetNS, stormPods)
	for i := range pods {
		pods[i] = testutil.NewNS(t)
	}
	live := map[string]*attachment{}
	var totalCalls, totalExhausted int
	for round := range stormRounds {
		// In the filler rounds every pod wants an address at the end, more
		// than are left: some ADDs must find the pool exhausted.
		fillers, allWant := 0, round%3 == 2
		if allWant {
			fillers = f.fill(stormFillers)
		}
		plans := make([][]stormStep, len(pods))
		attachedBefore := make([]bool, len(pods))
		for i := range pods {
			_, attachedBefore[i] = live[podID(i)]
			switch {
			case !attachedBefore[i]:
				plans[i] = []stormStep{{command: "ADD"}}
			case !allWant && r.IntN(2) == 0:
				plans[i] = []stormStep{{command: "DEL"}}
			default:
				plans[i] = []stormStep{{command: "DEL"}, {command: "ADD"}}
			}
		}
		start := time.Now()
		f.storm(pods, plans)
		elapsed := time.Since(start)

		calls, adds, addOK, exhausted, holders := 0, 0, 0, 0, 0
		var failedAdds []int
		for i, plan := range plans {
			cid := podID(i)
			gotAddress := false
			for _, st := range plan {
				calls++
				if st.err != nil {
					t.Fatalf("round %d: %s %s: %v", round, st.command, cid, st.err)
				}
				if st.command == "DEL" {
					if st.out.ExitCode != 0 {
						t.Errorf("round %d: DEL %s failed: %s", round, cid, st.out)
					}
					delete(live, cid)
					continue
				}
				adds++
				if st.out.ExitCode == 0 {
					ips, err := resultIPs(st.out.Stdout)
					if err != nil {
						t.Fatalf("round %d: ADD %s: %v", round, cid, err)
					}
					live[cid] = &attachment{cid: cid, ns: pods[i], ips: ips}
					addOK++
					gotAddress = true
					continue
				}
				failedAdds = append(failedAdds, i)
				e, err := st.out.CNIError()
				switch {
				case err != nil:
					t.Errorf("round %d: ADD %s: %v", round, cid, err)
				case e.Code != types.ErrTryAgainLater || !strings.Contains(e.Msg, "pool exhausted"):
					t.Errorf("round %d: ADD %s failed with something other than exhaustion: code %d %q %q", round, cid, e.Code, e.Msg, e.Details)
				default:
					exhausted++
				}
			}
			if attachedBefore[i] || gotAddress {
				holders++
			}
		}
		// A pod holds at most one address at a time, and only if it was
		// attached before the round or one of its ADDs succeeded (a failed
		// ADD holds nothing afterwards). So the pool never held more than
		// fillers+holders addresses during the round; below the capacity,
		// "exhausted" was a lie.
		if peak := fillers + holders; exhausted > 0 && peak < stormCapacity {
			t.Errorf("round %d: %d ADDs reported an exhausted pool, but at most %d of %d addresses were ever held", round, exhausted, peak, stormCapacity)
		}
		// The runtime owes a DEL to every failed ADD.
		for _, i := range failedAdds {
			f.mustDel(podID(i), pods[i].Path())
		}
		f.release(fillers)
		if n := f.requireConsistent(live, pods, []string{"10.88.0.254/32"}); n > 0 {
			t.Fatalf("round %d: %d violations", round, n)
		}
		t.Logf("round %2d: %2d pods at once, %2d invocations: %2d ADD (%2d ok, %2d exhausted), %2d DEL; %2d filler reservations; %2d live after; %s",
			round, len(pods), calls, adds, addOK, exhausted, calls-adds, fillers, len(live), elapsed.Round(time.Millisecond))
		totalCalls += calls
		totalExhausted += exhausted
	}
	if totalExhausted == 0 {
		t.Errorf("no round exhausted the pool: the filler rounds should have")
	}
	for _, cid := range sortedKeys(live) {
		f.mustDel(cid, live[cid].ns.Path())
		delete(live, cid)
	}
	f.requireUnlocked()
	f.requireConsistent(live, pods, nil)
	t.Logf("%d rounds, %d plugin invocations, %d legitimate exhaustions", stormRounds, totalCalls, totalExhausted)
}

func podID(i int) string { return fmt.Sprintf("pod%02d", i) }

// storm runs every pod's plan at once, the steps of one plan in order, each
// step its own plugin process, and waits for all of them.
func (f *fixture) storm(pods []ns.NetNS, plans [][]stormStep) {
	var wg sync.WaitGroup
	for i := range plans {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range plans[i] {
				st := &plans[i][j]
				p, err := f.node.StartPlugin(f.bin, f.inv(st.command, podID(i), pods[i].Path()))
				if err != nil {
					st.err = err
					return
				}
				st.out = p.Wait()
				st.err = st.out.Err
			}
		}()
	}
	wg.Wait()
}

// fill reserves up to n addresses outside the plugin (as another writer of
// the store would) and returns how many it got.
func (f *fixture) fill(n int) int {
	f.t.Helper()
	p, err := ipam.Open(f.node.DataDir, network, f.ranges)
	if err != nil {
		f.t.Fatalf("open store: %v", err)
	}
	defer p.Close()
	for i := range n {
		if _, err := p.Allocate(fillerOwner(i), nil); err != nil {
			return i
		}
	}
	return n
}

// release frees the first n filler reservations.
func (f *fixture) release(n int) {
	f.t.Helper()
	p, err := ipam.Open(f.node.DataDir, network, f.ranges)
	if err != nil {
		f.t.Fatalf("open store: %v", err)
	}
	defer p.Close()
	for i := range n {
		if _, err := p.Release(fillerOwner(i)); err != nil {
			f.t.Fatalf("release filler %d: %v", i, err)
		}
	}
}

func fillerOwner(i int) ipam.Owner {
	return ipam.Owner{ContainerID: fmt.Sprintf("filler%02d", i), IfName: "eth0"}
}
