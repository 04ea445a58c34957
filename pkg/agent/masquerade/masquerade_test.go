package masquerade

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"
)

func TestCollapse(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want []string
	}{
		{name: "empty"},
		{name: "disjoint sorted", in: []string{"192.168.0.0/24", "10.0.0.0/24"}, want: []string{"10.0.0.0/24", "192.168.0.0/24"}},
		{name: "node CIDRs inside the cluster CIDR", in: []string{"10.244.1.0/24", "10.244.0.0/16", "10.244.2.0/24"}, want: []string{"10.244.0.0/16"}},
		{name: "duplicates and host bits", in: []string{"10.0.0.9/24", "10.0.0.0/24"}, want: []string{"10.0.0.0/24"}},
		{name: "families kept apart", in: []string{"fd00::/64", "10.0.0.0/8", "fd00::/48"}, want: []string{"10.0.0.0/8", "fd00::/48"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, p := range Collapse(prefixes(tc.in...)) {
				got = append(got, p.String())
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("Collapse(%v) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func TestMasqueraderSync(t *testing.T) {
	ctx := context.Background()
	fake := knftables.NewFake(knftables.InetFamily, Table)
	m := New(fake, prefixes("172.18.0.0/16", "172.18.5.0/24", "fd00:18::/64"))

	if err := m.Sync(ctx, prefixes("10.244.1.0/24", "10.244.0.0/16", "fd00:10:244:1::/64", "192.168.0.0/24")); err != nil {
		t.Fatal(err)
	}
	dump := fake.Dump()
	for _, want := range []string{
		"add chain inet vethroute-agent postrouting { type nat hook postrouting priority 100 ; }",
		"add rule inet vethroute-agent postrouting ip saddr @pod-cidrs-v4 ip daddr != @pod-cidrs-v4 ip daddr != @no-masquerade-v4 masquerade",
		"add rule inet vethroute-agent postrouting ip6 saddr @pod-cidrs-v6 ip6 daddr != @pod-cidrs-v6 ip6 daddr != @no-masquerade-v6 masquerade",
		"add element inet vethroute-agent no-masquerade-v4 { 172.18.0.0/16 }",
		"add element inet vethroute-agent no-masquerade-v6 { fd00:18::/64 }",
		"add element inet vethroute-agent pod-cidrs-v4 { 10.244.0.0/16 }",
		"add element inet vethroute-agent pod-cidrs-v4 { 192.168.0.0/24 }",
		"add element inet vethroute-agent pod-cidrs-v6 { fd00:10:244:1::/64 }",
	} {
		if !strings.Contains(dump, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, dump)
		}
	}
	if strings.Contains(dump, "10.244.1.0/24") {
		t.Errorf("a contained prefix was added (nft rejects overlapping intervals):\n%s", dump)
	}

	// A second sync replaces the elements and rules instead of adding.
	if err := m.Sync(ctx, prefixes("10.0.0.0/24")); err != nil {
		t.Fatal(err)
	}
	dump = fake.Dump()
	if strings.Count(dump, " masquerade\n") != 2 || strings.Contains(dump, "192.168.0.0/24") || !strings.Contains(dump, "pod-cidrs-v4 { 10.0.0.0/24 }") {
		t.Errorf("resync did not replace the state:\n%s", dump)
	}

	if err := m.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if d := fake.Dump(); strings.TrimSpace(d) != "" {
		t.Errorf("table left after Delete:\n%s", d)
	}
	// Deleting what is not there is not an error: masquerading was never on.
	if err := m.Delete(ctx); err != nil {
		t.Errorf("second Delete: %v", err)
	}
}

func prefixes(ss ...string) (out []netip.Prefix) {
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}
