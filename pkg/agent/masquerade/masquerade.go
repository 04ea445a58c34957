package masquerade

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	"sigs.k8s.io/knftables"
)

// Table is the nftables table (family inet) the agent owns for
// masquerading; nothing else in the ruleset is touched.
const Table = "vethroute-agent"

const (
	masqSet4  = "pod-cidrs-v4"
	masqSet6  = "pod-cidrs-v6"
	exempt4   = "no-masquerade-v4"
	exempt6   = "no-masquerade-v6"
	masqChain = "postrouting"
)

// Masquerader rewrites the source of pod traffic that leaves the cluster's
// pod CIDRs to the node's address, with one nftables table of its own.
type Masquerader struct {
	nft    knftables.Interface
	exempt []netip.Prefix
}

// New returns a Masquerader working through nft, which must be
// bound to family inet and table Table (knftables.New or NewFake). Traffic
// toward exempt destinations keeps the pod's address, as traffic toward the
// pod CIDRs does (ip-masq-agent's nonMasqueradeCIDRs).
func New(nft knftables.Interface, exempt []netip.Prefix) *Masquerader {
	return &Masquerader{nft: nft, exempt: Collapse(exempt)}
}

// Sync makes the table masquerade every packet whose source is in podCIDRs
// and whose destination is neither in podCIDRs nor exempt: pod-to-pod traffic keeps its addresses,
// traffic leaving the cluster's pod networks takes the node's. The whole
// table is rewritten in one nft transaction, so packets never see a half
// state.
func (m *Masquerader) Sync(ctx context.Context, podCIDRs []netip.Prefix) error {
	tx := m.nft.NewTransaction()
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("vethroute-agent: masquerade of pod traffic leaving the pod CIDRs")})
	for _, s := range []string{masqSet4, masqSet6, exempt4, exempt6} {
		typ := "ipv4_addr"
		if s == masqSet6 || s == exempt6 {
			typ = "ipv6_addr"
		}
		tx.Add(&knftables.Set{Name: s, Type: typ, Flags: []knftables.SetFlag{knftables.IntervalFlag}})
		tx.Flush(&knftables.Set{Name: s})
	}
	for _, p := range Collapse(podCIDRs) {
		set := masqSet4
		if p.Addr().Is6() {
			set = masqSet6
		}
		tx.Add(&knftables.Element{Set: set, Key: []string{p.String()}})
	}
	for _, p := range m.exempt {
		set := exempt4
		if p.Addr().Is6() {
			set = exempt6
		}
		tx.Add(&knftables.Element{Set: set, Key: []string{p.String()}})
	}
	tx.Add(&knftables.Chain{
		Name:     masqChain,
		Type:     knftables.PtrTo(knftables.NATType),
		Hook:     knftables.PtrTo(knftables.PostroutingHook),
		Priority: knftables.PtrTo(knftables.SNATPriority),
	})
	tx.Flush(&knftables.Chain{Name: masqChain})
	tx.Add(&knftables.Rule{Chain: masqChain, Rule: knftables.Concat("ip saddr", "@"+masqSet4, "ip daddr !=", "@"+masqSet4, "ip daddr !=", "@"+exempt4, "masquerade")})
	tx.Add(&knftables.Rule{Chain: masqChain, Rule: knftables.Concat("ip6 saddr", "@"+masqSet6, "ip6 daddr !=", "@"+masqSet6, "ip6 daddr !=", "@"+exempt6, "masquerade")})
	if err := m.nft.Run(ctx, tx); err != nil {
		return fmt.Errorf("program masquerade table inet %s: %w", Table, err)
	}
	return nil
}

// Delete removes the table, if it is there: masquerading was turned off.
func (m *Masquerader) Delete(ctx context.Context) error {
	tx := m.nft.NewTransaction()
	tx.Delete(&knftables.Table{})
	if err := m.nft.Run(ctx, tx); err != nil && !knftables.IsNotFound(err) {
		return fmt.Errorf("delete table inet %s: %w", Table, err)
	}
	return nil
}

// Collapse returns prefixes masked, sorted and without any prefix that
// another one contains: nftables rejects overlapping interval elements.
func Collapse(prefixes []netip.Prefix) []netip.Prefix {
	ps := make([]netip.Prefix, 0, len(prefixes))
	for _, p := range prefixes {
		if p.IsValid() {
			ps = append(ps, p.Masked())
		}
	}
	// Shorter prefixes first, so each one is compared with every prefix
	// that could contain it.
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		if a.Bits() != b.Bits() {
			return a.Bits() - b.Bits()
		}
		return a.Addr().Compare(b.Addr())
	})
	var out []netip.Prefix
	for _, p := range ps {
		covered := false
		for _, q := range out {
			if q.Overlaps(p) {
				covered = true
				break
			}
		}
		if !covered {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return out
}
