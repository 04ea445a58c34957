package noderoutes

import (
	"errors"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/vethroute/vethroute/internal/testutil"
	"github.com/vethroute/vethroute/pkg/routing"
)

// pluginProtocol is the protocol of the plugin's hostRoutes.
const pluginProtocol = 86

func TestFromCNI(t *testing.T) {
	_, dst, _ := net.ParseCIDR("10.0.0.0/24")
	_, dst6, _ := net.ParseCIDR("fd00:2::/64")
	got := FromCNI([]*types.Route{
		{Dst: *dst, GW: net.ParseIP("172.16.0.2"), Priority: 5},
		{Dst: *dst6, GW: net.ParseIP("fd00:172:16::2")},
		{Dst: *dst},
	})
	want := []Route{
		{Dst: route("10.0.0.0/24", "172.16.0.2").Dst, Gw: route("10.0.0.0/24", "172.16.0.2").Gw, Priority: 5},
		route("fd00:2::/64", "fd00:172:16::2"),
		{Dst: route("10.0.0.0/24", "172.16.0.2").Dst},
	}
	if len(got) != len(want) {
		t.Fatalf("FromCNI = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("FromCNI[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestEnsure(t *testing.T) {
	node, ip := nodeNS(t)
	tab := tableIn(t, node, pluginProtocol)
	tests := []struct {
		name      string
		routes    []Route
		wantAdded int
		wantErr   string
		wantIs    error
	}{
		{"adds a missing route", []Route{route("10.0.0.0/24", "172.16.0.2")}, 1, "", nil},
		{"keeps an existing one", []Route{route("10.0.0.0/24", "172.16.0.2")}, 0, "", nil},
		{"refuses a conflicting gateway", []Route{route("10.0.0.0/24", "172.16.0.3")}, 0, "conflicts with the node's route", routing.ErrForeign},
		{"reports an unreachable gateway", []Route{route("10.9.0.0/24", "172.16.0.2"), route("10.8.0.0/24", "172.31.0.1")}, 1, "not on a subnet directly connected", ErrUnreachableGateway},
		{"refuses an entry without gateway", []Route{{Dst: route("10.7.0.0/24", "172.16.0.2").Dst}}, 0, "gateway address are required", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			added, err := tab.Ensure(tc.routes)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Ensure = %v, want error %q", err, tc.wantErr)
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("Ensure = %v, want errors.Is %v", err, tc.wantIs)
			}
			if len(added) != tc.wantAdded {
				t.Fatalf("added %d routes, want %d", len(added), tc.wantAdded)
			}
		})
	}
	if r := ip("route", "show", "10.0.0.0/24"); !strings.Contains(r, "via 172.16.0.2") || !strings.Contains(r, "proto 86") {
		t.Fatalf("the added route is not 10.0.0.0/24 via 172.16.0.2 proto 86: %q", r)
	}
	// Finding 7: what a failed Ensure added stays, since a concurrent ADD
	// may already have found it present.
	if r := ip("route", "show", "10.9.0.0/24"); !strings.Contains(r, "via 172.16.0.2") {
		t.Fatalf("a failed Ensure removed the route it had added before the failure: %q", r)
	}
	if err := tab.Verify([]Route{route("10.0.0.0/24", "172.16.0.2")}); err != nil {
		t.Fatal(err)
	}
	if err := tab.Verify([]Route{route("10.6.0.0/24", "172.16.0.2")}); err == nil || !strings.Contains(err.Error(), "10.6.0.0/24 via 172.16.0.2 (hostRoutes) is missing") {
		t.Fatalf("Verify of a missing route = %v", err)
	}
}

// TestHostRoutesRaceEEXIST is finding 7's deterministic half: the kernel's
// EEXIST for a route that the lookup did not see (another ADD added it in
// between; here a more specific route hides it from the FIB lookup, which
// has the same effect every time) is success when the route has the same
// gateway, and stays a conflict, untouched, when it has another.
func TestHostRoutesRaceEEXIST(t *testing.T) {
	testutil.RequireRoot(t)
	tests := []struct {
		name     string
		existing string
		wantErr  string
	}{
		{"same gateway is present", "172.16.0.2", ""},
		{"other gateway is a conflict", "172.16.0.3", "conflicts with the node's route 10.0.0.0/24 via 172.16.0.3"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			node, ip := nodeNS(t)
			tab := tableIn(t, node, pluginProtocol)
			ip("route", "add", "10.0.0.0/24", "via", tc.existing, "proto", "static")
			ip("route", "add", "10.0.0.0/25", "via", "172.16.0.2", "proto", "static")
			added, err := tab.Ensure([]Route{route("10.0.0.0/24", "172.16.0.2")})
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Ensure = %v, want error %q", err, tc.wantErr)
			}
			if len(added) != 0 {
				t.Errorf("Ensure claims to have added %d routes; the route was there", len(added))
			}
			if r := ip("route", "show", "exact", "10.0.0.0/24"); !strings.Contains(r, "via "+tc.existing+" ") || !strings.Contains(r, "proto static") {
				t.Errorf("the existing route changed: %q", r)
			}
			verr := tab.Verify([]Route{route("10.0.0.0/24", "172.16.0.2")})
			if (verr == nil) != (tc.wantErr == "") {
				t.Errorf("Verify = %v with the route via %s", verr, tc.existing)
			}
		})
	}
}

// TestHostRoutesRaceConcurrent is finding 7 as it happens: many first ADDs
// on a fresh node ensure the same two routes at once, each as the plugin
// does, with a netlink socket of its own in the thread's namespace. Every
// one succeeds and both routes are there once.
func TestHostRoutesRaceConcurrent(t *testing.T) {
	testutil.RequireRoot(t)
	node, ip := nodeNS(t)
	routes := []Route{route("10.0.0.0/24", "172.16.0.2"), route("10.1.0.0/24", "172.16.0.2")}
	const n = 32
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = node.Do(func(ns.NetNS) error {
				<-start
				_, err := Ensure(pluginProtocol, routes)
				return err
			})
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Ensure #%d: %v", i, err)
		}
	}
	for _, dst := range []string{"10.0.0.0/24", "10.1.0.0/24"} {
		if r := ip("route", "show", "exact", dst); strings.Count(r, "via 172.16.0.2") != 1 {
			t.Errorf("want one route %s via 172.16.0.2, got %q", dst, r)
		}
	}
}
