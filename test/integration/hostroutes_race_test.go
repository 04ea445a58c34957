package integration

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/libcni"

	"github.com/vethroute/vethroute/internal/testutil"
)

// TestHostRoutesConcurrentFirstAdds is issue 14's finding 7 through the
// plugin: 32 first ADDs on a fresh node, each ensuring the same two
// hostRoutes at once, all succeed, and both routes stay, also after some of
// the containers are deleted (hostRoutes are node configuration).
func TestHostRoutesConcurrentFirstAdds(t *testing.T) {
	testutil.RequireRoot(t)
	node := testutil.NewNode(t)
	uplink(t, node)
	l := node.ConfList(t, conflist("1.1.0", v4Ranges, v4Routes,
		`, "hostRoutes": [{"dst": "10.0.0.0/24", "gw": "172.16.0.2"}, {"dst": "10.1.0.0/24", "gw": "172.16.0.2"}]`))
	const n = 32
	rts := make([]*libcni.RuntimeConf, n)
	for i := range rts {
		rts[i] = testutil.RuntimeConf(fmt.Sprintf("race%02d", i), testutil.NewNS(t).Path(), "eth0")
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = node.Add(l, rts[i])
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("ADD %s: %v", rts[i].ContainerID, err)
		}
	}
	routesPresent := func(when string) {
		t.Helper()
		r := node.Routes(t, "-4")
		for _, dst := range []string{"10.0.0.0/24 via 172.16.0.2", "10.1.0.0/24 via 172.16.0.2"} {
			if strings.Count(r, dst) != 1 {
				t.Errorf("%s: want one route %s, got:\n%s", when, dst, r)
			}
		}
	}
	routesPresent("after the concurrent ADDs")
	for i := range n {
		if errs[i] != nil || i%8 != 0 {
			continue
		}
		if err := node.Del(l, rts[i]); err != nil {
			t.Errorf("DEL %s: %v", rts[i].ContainerID, err)
		}
	}
	routesPresent("after some DELs")
	for i := range n {
		if err := node.Del(l, rts[i]); err != nil {
			t.Errorf("DEL %s: %v", rts[i].ContainerID, err)
		}
	}
	node.RequireClean(t, network)
	routesPresent("after every DEL")
}
