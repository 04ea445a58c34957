// Package ipam is vethroute's built-in address allocator: host-local's
// configuration schema, run in-process, with a store that survives a
// process killed at any instant and that many concurrent plugin processes
// share safely.
package ipam

import (
	"errors"
	"fmt"
	"math/big"
	"net"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/containernetworking/plugins/pkg/ip"
	"github.com/containernetworking/plugins/plugins/ipam/host-local/backend/allocator"
)

// ErrExhausted reports that a range set has no free address left.
var ErrExhausted = errors.New("pool exhausted")

// ErrConflict reports a requested address that is outside every range or
// already held by another attachment.
var ErrConflict = errors.New("requested address unavailable")

// Lease is one address handed to an attachment, with the gateway of its range.
type Lease struct {
	Address net.IPNet
	Gateway net.IP
}

// Reservation is an attachment and the addresses it holds.
type Reservation struct {
	Owner Owner
	IPs   []net.IP
}

// Pool allocates from one network's range sets (one address per set) and
// records reservations under dataDir. A Pool is cheap: open one per CNI
// invocation and Close it before exiting.
type Pool struct {
	ranges []allocator.RangeSet
	st     *store
}

// Open opens the reservation store of network under dataDir, creating it
// (mode 0700) if needed. ranges must already be canonicalised, as
// allocator.LoadIPAMConfig leaves them.
func Open(dataDir, network string, ranges []allocator.RangeSet) (*Pool, error) {
	if len(ranges) == 0 {
		return nil, errors.New("no range sets configured")
	}
	st, err := openStore(dataDir, network)
	if err != nil {
		return nil, err
	}
	return &Pool{ranges: ranges, st: st}, nil
}

// Close releases the store's file descriptors.
func (p *Pool) Close() error { return p.st.close() }

// Allocate reserves one address per range set for owner and returns the
// leases in range-set order. It is idempotent: an owner that already holds
// a reservation gets the same addresses back (a runtime retrying an ADD that
// was killed half-way). requested addresses, if any, must each fall into a
// distinct range set; the others are chosen by the allocator.
func (p *Pool) Allocate(owner Owner, requested []net.IP) ([]Lease, error) {
	if err := owner.Validate(); err != nil {
		return nil, err
	}
	want, err := p.assignRequested(requested)
	if err != nil {
		return nil, err
	}
	var leases []Lease
	err = p.st.withLock(func() error {
		held, err := p.resume(owner)
		if err != nil {
			return err
		}
		if held != nil {
			for i, w := range want {
				if w != nil && !w.Equal(held[i]) {
					return fmt.Errorf("%w: %s already holds %s, not the requested %s; delete it first", ErrConflict, owner, held[i], w)
				}
			}
			leases, err = p.leasesFor(held)
			return err
		}
		picked := make([]net.IP, len(p.ranges))
		for i := range p.ranges {
			if want[i] != nil {
				if _, taken, err := p.st.readRecord(ipRecord(want[i])); err != nil {
					return err
				} else if taken {
					return fmt.Errorf("%w: %s is already in use", ErrConflict, want[i])
				}
				picked[i] = want[i]
				continue
			}
			if picked[i], err = p.findFree(i); err != nil {
				return err
			}
		}
		// The owner record goes first: if the process dies before the
		// address records exist, a retried ADD or the DEL still finds what
		// this owner was about to hold and finishes or undoes it.
		if err := p.st.createRecord(ownerRecord(owner), joinIPs(picked)); err != nil {
			return fmt.Errorf("record reservation of %s: %w", owner, err)
		}
		for i, a := range picked {
			if err := p.st.createRecord(ipRecord(a), owner.key()); err != nil {
				p.undo(owner, picked[:i])
				return fmt.Errorf("claim %s for %s: %w", a, owner, err)
			}
		}
		for i, a := range picked {
			if want[i] == nil {
				// Only a hint for the next search, so a failure is harmless.
				_ = p.st.replaceRecord(cursorName+strconv.Itoa(i), a.String())
			}
		}
		leases, err = p.leasesFor(picked)
		return err
	})
	return leases, err
}

// undo removes a reservation whose claims did not all succeed.
func (p *Pool) undo(owner Owner, claimed []net.IP) {
	for _, a := range claimed {
		_ = p.st.removeRecord(ipRecord(a))
	}
	_ = p.st.removeRecord(ownerRecord(owner))
}

// resume returns the addresses owner already holds, finishing a reservation
// that a killed process left half-written. It returns nil when the owner has
// no usable reservation (and removes a stale one whose address was taken by
// someone else in the meantime, so that the caller allocates afresh).
func (p *Pool) resume(owner Owner) ([]net.IP, error) {
	content, ok, err := p.st.readRecord(ownerRecord(owner))
	if err != nil || !ok {
		return nil, err
	}
	held, err := splitIPs(content)
	if err != nil || len(held) != len(p.ranges) {
		return nil, fmt.Errorf("%w: reservation of %s holds %q, which does not match the %d configured range sets (was the range configuration changed? delete the attachment first)", ErrCorrupt, owner, content, len(p.ranges))
	}
	for i, a := range held {
		if !p.ranges[i].Contains(a) {
			return nil, fmt.Errorf("%w: %s holds %s, outside range set %d (%s); delete the attachment first", ErrConflict, owner, a, i, p.ranges[i].String())
		}
	}
	for _, a := range held {
		cur, exists, err := p.st.readRecord(ipRecord(a))
		if err != nil {
			return nil, err
		}
		switch {
		case !exists:
			if err := p.st.createRecord(ipRecord(a), owner.key()); err != nil {
				return nil, fmt.Errorf("reclaim %s for %s: %w", a, owner, err)
			}
		case cur != owner.key():
			// Our claim never landed and somebody else took the address.
			if err := p.releaseLocked(owner); err != nil {
				return nil, err
			}
			return nil, nil
		}
	}
	return held, nil
}

// Get returns the addresses owner holds, or nil when it holds none.
func (p *Pool) Get(owner Owner) ([]net.IP, error) {
	if err := owner.Validate(); err != nil {
		return nil, err
	}
	content, ok, err := p.st.readRecord(ownerRecord(owner))
	if err != nil || !ok {
		return nil, err
	}
	return splitIPs(content)
}

// Release frees every address owner holds and returns them. Releasing an
// owner that holds nothing is not an error: DEL must be idempotent.
func (p *Pool) Release(owner Owner) ([]net.IP, error) {
	if err := owner.Validate(); err != nil {
		return nil, err
	}
	var ips []net.IP
	err := p.st.withLock(func() error {
		var err error
		if ips, err = p.Get(owner); err != nil {
			return err
		}
		return p.releaseLocked(owner)
	})
	return ips, err
}

// releaseLocked removes the address records first and the owner record last,
// so a process killed in between leaves a record that a retried DEL finishes.
// An address record is removed only if it still names owner.
func (p *Pool) releaseLocked(owner Owner) error {
	content, ok, err := p.st.readRecord(ownerRecord(owner))
	if err != nil || !ok {
		return err
	}
	ips, err := splitIPs(content)
	if err != nil {
		return err
	}
	for _, a := range ips {
		cur, exists, err := p.st.readRecord(ipRecord(a))
		if err != nil {
			return err
		}
		if exists && cur == owner.key() {
			if err := p.st.removeRecord(ipRecord(a)); err != nil {
				return fmt.Errorf("release %s of %s: %w", a, owner, err)
			}
		}
	}
	if err := p.st.removeRecord(ownerRecord(owner)); err != nil {
		return fmt.Errorf("release reservation of %s: %w", owner, err)
	}
	return nil
}

// List returns every reservation, sorted by owner.
func (p *Pool) List() ([]Reservation, error) {
	names, err := p.st.list(ownersDir)
	if err != nil {
		return nil, err
	}
	out := make([]Reservation, 0, len(names))
	for _, n := range names {
		o, err := parseOwner(n)
		if err != nil {
			return nil, err
		}
		content, ok, err := p.st.readRecord(path.Join(ownersDir, n))
		if err != nil {
			return nil, err
		}
		if !ok {
			continue // released concurrently
		}
		ips, err := splitIPs(content)
		if err != nil {
			return nil, err
		}
		out = append(out, Reservation{Owner: o, IPs: ips})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Owner.key() < out[j].Owner.key() })
	return out, nil
}

// GC releases every reservation whose owner keep does not accept, and every
// address record that no owner record accounts for (what a process killed in
// the middle of a claim can leave). It returns the released reservations.
func (p *Pool) GC(keep func(Owner) bool) ([]Reservation, error) {
	var released []Reservation
	err := p.st.withLock(func() error {
		all, err := p.List()
		if err != nil {
			return err
		}
		accounted := map[string]string{}
		for _, r := range all {
			if keep(r.Owner) {
				for _, a := range r.IPs {
					accounted[a.String()] = r.Owner.key()
				}
				continue
			}
			if err := p.releaseLocked(r.Owner); err != nil {
				return err
			}
			released = append(released, r)
		}
		names, err := p.st.list(ipsDir)
		if err != nil {
			return err
		}
		for _, n := range names {
			cur, ok, err := p.st.readRecord(path.Join(ipsDir, n))
			if err != nil || !ok {
				continue
			}
			if accounted[n] != cur {
				if err := p.st.removeRecord(path.Join(ipsDir, n)); err != nil {
					return fmt.Errorf("remove orphaned claim of %s: %w", n, err)
				}
			}
		}
		return nil
	})
	return released, err
}

// Usage reports, per range set, how many addresses are held and how many the
// set can hand out in all (gateway excluded). STATUS uses it to say whether
// an ADD could succeed.
func (p *Pool) Usage() (used, capacity []*big.Int, err error) {
	names, err := p.st.list(ipsDir)
	if err != nil {
		return nil, nil, err
	}
	used = make([]*big.Int, len(p.ranges))
	capacity = make([]*big.Int, len(p.ranges))
	for i, rs := range p.ranges {
		used[i] = new(big.Int)
		capacity[i] = new(big.Int)
		for _, r := range rs {
			n := new(big.Int).Sub(ipToInt(r.RangeEnd), ipToInt(r.RangeStart))
			n.Add(n, big.NewInt(1))
			if r.Contains(r.Gateway) {
				n.Sub(n, big.NewInt(1))
			}
			capacity[i].Add(capacity[i], n)
		}
	}
	for _, n := range names {
		a := net.ParseIP(n)
		if a == nil {
			continue
		}
		for i := range p.ranges {
			if p.ranges[i].Contains(a) {
				used[i].Add(used[i], big.NewInt(1))
			}
		}
	}
	return used, capacity, nil
}

// Exhausted reports whether some range set has no free address, which would
// make every ADD fail.
func (p *Pool) Exhausted() (bool, error) {
	used, capacity, err := p.Usage()
	if err != nil {
		return false, err
	}
	for i := range used {
		if used[i].Cmp(capacity[i]) >= 0 {
			return true, nil
		}
	}
	return false, nil
}

// assignRequested maps each requested address to the range set holding it.
func (p *Pool) assignRequested(requested []net.IP) ([]net.IP, error) {
	want := make([]net.IP, len(p.ranges))
	for _, a := range requested {
		placed := false
		for i := range p.ranges {
			r, err := p.ranges[i].RangeFor(a)
			if err != nil {
				continue
			}
			if want[i] != nil {
				return nil, fmt.Errorf("%w: %s and %s both fall into range set %d; request at most one address per range set", ErrConflict, want[i], a, i)
			}
			if a.Equal(r.Gateway) {
				return nil, fmt.Errorf("%w: %s is the gateway of %s", ErrConflict, a, (*net.IPNet)(&r.Subnet).String())
			}
			want[i] = a
			placed = true
			break
		}
		if !placed {
			return nil, fmt.Errorf("%w: %s is outside every configured range", ErrConflict, a)
		}
	}
	return want, nil
}

// findFree returns a free address of range set i, searching onward from the
// last address handed out. Starting after the cursor keeps allocation O(1)
// as the node fills and delays the reuse of a just-released address, so
// conntrack entries and neighbour caches of the old owner age out first.
func (p *Pool) findFree(i int) (net.IP, error) {
	rs := p.ranges[i]
	start := 0
	var from net.IP
	if c, ok, _ := p.st.readRecord(cursorName + strconv.Itoa(i)); ok {
		if a := net.ParseIP(c); a != nil {
			for ri := range rs {
				if rs[ri].Contains(a) {
					start, from = ri, a
					break
				}
			}
		}
	}
	// Walk every range of the set once, starting in the cursor's range right
	// after the cursor, wrapping around to the cursor itself.
	for step := 0; step <= len(rs); step++ {
		ri := (start + step) % len(rs)
		r := rs[ri]
		first := r.RangeStart
		if step == 0 && from != nil && !from.Equal(r.RangeEnd) {
			first = ip.NextIP(from)
		}
		last := r.RangeEnd
		if step == len(rs) {
			if from == nil {
				break
			}
			first, last = r.RangeStart, from
		}
		for a := first; ip.Cmp(a, last) <= 0; a = ip.NextIP(a) {
			if a.Equal(r.Gateway) {
				continue
			}
			if _, taken, err := p.st.readRecord(ipRecord(a)); err != nil {
				return nil, err
			} else if !taken {
				return a, nil
			}
		}
	}
	return nil, fmt.Errorf("%w: no free address in range set %d (%s); release addresses with DEL or GC, or widen the range", ErrExhausted, i, rs.String())
}

// leasesFor turns held addresses into leases with prefix and gateway.
func (p *Pool) leasesFor(ips []net.IP) ([]Lease, error) {
	out := make([]Lease, len(ips))
	for i, a := range ips {
		r, err := p.ranges[i].RangeFor(a)
		if err != nil {
			return nil, fmt.Errorf("%w: %s is not in range set %d: %v", ErrCorrupt, a, i, err)
		}
		out[i] = Lease{Address: net.IPNet{IP: a, Mask: r.Subnet.Mask}, Gateway: r.Gateway}
	}
	return out, nil
}

func ipRecord(a net.IP) string   { return path.Join(ipsDir, a.String()) }
func ownerRecord(o Owner) string { return path.Join(ownersDir, o.key()) }
func ipToInt(a net.IP) *big.Int  { return new(big.Int).SetBytes(a) }
func joinIPs(ips []net.IP) string {
	s := make([]string, len(ips))
	for i, a := range ips {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}

func splitIPs(s string) ([]net.IP, error) {
	parts := strings.Split(s, ",")
	out := make([]net.IP, len(parts))
	for i, p := range parts {
		a := net.ParseIP(p)
		if a == nil {
			return nil, fmt.Errorf("%w: %q is not an address list", ErrCorrupt, s)
		}
		if v4 := a.To4(); v4 != nil {
			a = v4
		}
		out[i] = a
	}
	return out, nil
}
