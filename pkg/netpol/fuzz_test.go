package netpol

import (
	"context"
	"encoding/json"
	"net/netip"
	"regexp"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/knftables"
)

var setRef = regexp.MustCompile(`@([A-Za-z0-9_.-]+)`)

// FuzzCompile feeds hostile NetworkPolicies (as the API would deliver
// JSON) through the compiler and the engine: no panic, every set a rule
// names exists with elements of its type, and the fake accepts the table.
func FuzzCompile(f *testing.F) {
	for _, seed := range []string{
		`{"metadata":{"namespace":"a","name":"p"},"spec":{"podSelector":{}}}`,
		`{"metadata":{"namespace":"a","name":"p"},"spec":{"podSelector":{"matchLabels":{"app":"web"}},"ingress":[{"from":[{"ipBlock":{"cidr":"10.0.0.0/8","except":["10.1.0.0/16"]}},{"namespaceSelector":{},"podSelector":{"matchExpressions":[{"key":"app","operator":"In","values":["db"]}]}}],"ports":[{"port":"http"},{"protocol":"UDP","port":53,"endPort":60}]}]}}`,
		`{"metadata":{"namespace":"a","name":"p"},"spec":{"podSelector":{},"policyTypes":["Egress"],"egress":[{"to":[{"ipBlock":{"cidr":"fd00::/8","except":["fd00::/9"]}}],"ports":[{"port":"http"},{"protocol":"SCTP"}]}]}}`,
		`{"metadata":{"namespace":"a","name":"p"},"spec":{"podSelector":{"matchLabels":{"a b":"c"}},"ingress":[{"from":[{}],"ports":[{"port":70000},{"port":5,"endPort":1}]}]}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var pol networkingv1.NetworkPolicy
		if json.Unmarshal(data, &pol) != nil {
			return
		}
		s := testState(&pol)
		d, _ := compile(s)
		for chain, rules := range d.chains {
			for _, r := range rules {
				for _, m := range setRef.FindAllStringSubmatch(r, -1) {
					if m[1] == ingressMap || m[1] == egressMap {
						continue
					}
					if d.sets[m[1]] == nil {
						t.Fatalf("chain %s rule %q names a missing set", chain, r)
					}
				}
			}
		}
		for name, set := range d.sets {
			parts := len(strings.Split(set.typ, " . "))
			for k := range set.elems {
				fields := strings.Split(k, " . ")
				if len(fields) != parts {
					t.Fatalf("set %s (%s) element %q", name, set.typ, k)
				}
				for _, a := range strings.Split(fields[0], "-") {
					ip, err := netip.ParseAddr(a)
					if err != nil || ip.Is4() != strings.HasPrefix(set.typ, "ipv4") {
						t.Fatalf("set %s (%s) element %q: %v", name, set.typ, k, err)
					}
				}
			}
		}
		if _, err := New(knftables.NewFake(knftables.InetFamily, Table)).Sync(context.Background(), s); err != nil {
			t.Fatalf("fake refused the table: %v", err)
		}
	})
}
