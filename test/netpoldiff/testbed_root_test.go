package netpoldiff

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/vethroute/vethroute/internal/testutil"
)

const (
	// probeTimeout bounds a probe; a blocked one costs all of it, so it is
	// short, and an allowed probe it cuts off on a loaded machine is
	// probed again with recheckTimeout before it counts as blocked.
	probeTimeout   = 300 * time.Millisecond
	recheckTimeout = 3 * time.Second
	probeWorkers   = 16
)

// probeCase is one packet of a run and the verdicts on it.
type probeCase struct {
	src   *endpoint
	dst   *endpoint
	v6    bool
	proto corev1.Protocol
	port  int32
	want  bool // the evaluator's
	got   bool // the kernel's
	why   string
}

func (c *probeCase) dstAddr() netip.Addr { return c.dst.addr(c.v6) }

func (c *probeCase) String() string {
	verdict := func(b bool) string {
		if b {
			return "allowed"
		}
		return "blocked"
	}
	s := fmt.Sprintf("%s %s (%s) -> %s (%s) port %d: kernel %s, evaluator %s", c.proto, c.src.addr(c.v6), c.src.name,
		c.dstAddr(), c.dst.name, c.port, verdict(c.got), verdict(c.want))
	if c.why != "" {
		s += " (" + c.why + ")"
	}
	return s
}

// probeAll probes every case probeWorkers at a time and records the
// kernel's verdict; then the cases the kernel blocked against the
// evaluator's word are probed again, one at a time with a long timeout,
// so that only a real drop counts as blocked.
func (tb *testbed) probeAll(t *testing.T, cases []*probeCase) {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var fatal []string
	next := make(chan *probeCase)
	for range probeWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range next {
				var err error
				c.got, c.why, err = tb.probe(c.src, c.dstAddr(), c.proto, c.port, probeTimeout)
				if err != nil {
					mu.Lock()
					fatal = append(fatal, err.Error())
					mu.Unlock()
				}
			}
		}()
	}
	for _, c := range cases {
		next <- c
	}
	close(next)
	wg.Wait()
	if len(fatal) > 0 {
		t.Fatalf("probes failed:\n%s", strings.Join(fatal, "\n"))
	}
	for _, c := range cases {
		if c.want && !c.got {
			var err error
			if c.got, c.why, err = tb.probe(c.src, c.dstAddr(), c.proto, c.port, recheckTimeout); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// allPairs is one case for every source and destination the node sees
// traffic between (at least one end local, the node a source only), both
// families, TCP and UDP, ports taken in turn.
func (tb *testbed) allPairs() []*probeCase {
	var out []*probeCase
	for _, src := range tb.endpoints {
		for _, dst := range tb.destinations(src) {
			for _, v6 := range []bool{false, true} {
				for _, proto := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP} {
					out = append(out, &probeCase{src: src, dst: dst, v6: v6, proto: proto, port: servicePorts[len(out)%len(servicePorts)]})
				}
			}
		}
	}
	return out
}

// TestTestbed checks the harness before it judges an engine: with no
// filter every endpoint reaches every other over both families and
// protocols, and a drop of new connections toward one pod's host veth is
// seen as blocked for exactly the traffic forwarded toward that pod.
func TestTestbed(t *testing.T) {
	tb := newTestbed(t)
	victim := tb.endpoints[0]
	for _, filtered := range []bool{false, true} {
		if filtered {
			for _, c := range []string{
				"add table inet netpoldiff-test",
				"add chain inet netpoldiff-test drop-victim { type filter hook forward priority 0 ; }",
				"add rule inet netpoldiff-test drop-victim oifname " + victim.hostVeth + " ct state new drop",
			} {
				testutil.MustRunIn(t, tb.node, "nft", strings.Fields(c)...)
			}
		}
		cases := tb.allPairs()
		for _, c := range cases {
			c.want = !filtered || c.dst != victim || c.src.node
		}
		tb.probeAll(t, cases)
		blocked := 0
		for _, c := range cases {
			if !c.got {
				blocked++
			}
			if c.got != c.want {
				t.Errorf("filtered=%v: %s", filtered, c)
			}
		}
		t.Logf("filtered=%v: %d probes, %d blocked", filtered, len(cases), blocked)
	}
}
