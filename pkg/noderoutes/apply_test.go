package noderoutes

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vethroute/vethroute/pkg/routing"
)

// TestApply is the incremental path: only the destinations given change,
// foreign routes are reported and never touched.
func TestApply(t *testing.T) {
	tab, ip := openTable(t)
	ip("route", "add", "10.7.0.0/24", "via", "172.16.0.7", "proto", "dhcp")
	ip("route", "add", "10.9.0.0/24", "via", "172.16.0.9", "proto", "static")
	steps := []struct {
		name    string
		set     []Route
		remove  []string
		want    []string // `ip route show proto 87`, both families
		added   int
		replace int
		removed int
		// conflicts are the routes reported as blocked by a foreign one.
		conflicts []string
		wantErr   error
	}{
		{
			name:  "add both families",
			set:   []Route{route("10.0.0.0/24", "172.16.0.2"), route("fd00:2::/64", "fd00:172:16::2")},
			want:  []string{"10.0.0.0/24 via 172.16.0.2 dev uplink", "fd00:2::/64 via fd00:172:16::2 dev uplink metric 1024 pref medium"},
			added: 2,
		},
		{
			name: "unchanged route is left alone",
			set:  []Route{route("10.0.0.0/24", "172.16.0.2")},
			want: []string{"10.0.0.0/24 via 172.16.0.2 dev uplink", "fd00:2::/64 via fd00:172:16::2 dev uplink metric 1024 pref medium"},
		},
		{
			name:    "gateway moves",
			set:     []Route{route("10.0.0.0/24", "172.16.0.3")},
			want:    []string{"10.0.0.0/24 via 172.16.0.3 dev uplink", "fd00:2::/64 via fd00:172:16::2 dev uplink metric 1024 pref medium"},
			replace: 1,
		},
		{
			name:      "foreign route holds the destination",
			set:       []Route{route("10.7.0.0/24", "172.16.0.2")},
			want:      []string{"10.0.0.0/24 via 172.16.0.3 dev uplink", "fd00:2::/64 via fd00:172:16::2 dev uplink metric 1024 pref medium"},
			conflicts: []string{"10.7.0.0/24 via 172.16.0.2"},
		},
		{
			name:    "remove deletes only own routes",
			remove:  []string{"fd00:2::/64", "10.7.0.0/24", "10.9.0.0/24", "10.99.0.0/24"},
			want:    []string{"10.0.0.0/24 via 172.16.0.3 dev uplink"},
			removed: 1,
		},
		{
			name:    "unreachable gateway fails alone",
			set:     []Route{route("10.1.0.0/24", "198.51.100.1"), route("10.2.0.0/24", "172.16.0.4")},
			want:    []string{"10.0.0.0/24 via 172.16.0.3 dev uplink", "10.2.0.0/24 via 172.16.0.4 dev uplink"},
			added:   1,
			wantErr: ErrUnreachableGateway,
		},
	}
	for _, s := range steps {
		var remove []netip.Prefix
		for _, r := range s.remove {
			remove = append(remove, netip.MustParsePrefix(r))
		}
		res, err := tab.Apply(s.set, remove)
		if s.wantErr == nil && err != nil || s.wantErr != nil && !errors.Is(err, s.wantErr) {
			t.Fatalf("%s: err = %v, want %v", s.name, err, s.wantErr)
		}
		var got []string
		for _, fam := range []string{"-4", "-6"} {
			for _, l := range strings.Split(strings.TrimSpace(ip(fam, "route", "show", "proto", "87")), "\n") {
				if l = strings.TrimSpace(l); l != "" {
					got = append(got, l)
				}
			}
		}
		if !slices.Equal(got, s.want) {
			t.Errorf("%s: proto 87 routes = %q, want %q", s.name, got, s.want)
		}
		if res.Added != s.added || res.Replaced != s.replace || res.Removed != s.removed {
			t.Errorf("%s: result %+v, want added %d replaced %d removed %d", s.name, res, s.added, s.replace, s.removed)
		}
		var conflicts []string
		for _, c := range res.Conflicts {
			conflicts = append(conflicts, c.Want.String())
			if !strings.Contains(c.Existing, "proto dhcp") || !errors.Is(c, routing.ErrForeign) {
				t.Errorf("%s: conflict %v does not describe the foreign route", s.name, c)
			}
		}
		if !slices.Equal(conflicts, s.conflicts) {
			t.Errorf("%s: conflicts = %v, want %v", s.name, conflicts, s.conflicts)
		}
	}
	all := ip("-4", "route", "show")
	for _, want := range []string{"10.7.0.0/24 via 172.16.0.7 dev uplink proto dhcp", "10.9.0.0/24 via 172.16.0.9 dev uplink proto static"} {
		if !strings.Contains(all, want) {
			t.Errorf("foreign route %q disappeared:\n%s", want, all)
		}
	}
}

// TestApplyBehindMoreSpecificRoute: a more specific route hides the agent's
// own route from the FIB lookup; Apply still finds and corrects it.
func TestApplyBehindMoreSpecificRoute(t *testing.T) {
	tab, ip := openTable(t)
	if _, err := tab.Apply([]Route{route("10.0.0.0/24", "172.16.0.2")}, nil); err != nil {
		t.Fatal(err)
	}
	ip("route", "add", "10.0.0.0/25", "via", "172.16.0.9", "proto", "static")
	res, err := tab.Apply([]Route{route("10.0.0.0/24", "172.16.0.3")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Replaced != 1 || len(res.Conflicts) != 0 {
		t.Errorf("result %+v, want one replaced route", res)
	}
	if got := strings.TrimSpace(ip("route", "show", "proto", "87")); got != "10.0.0.0/24 via 172.16.0.3 dev uplink" {
		t.Errorf("proto 87 routes = %q", got)
	}
}
