package uplink

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Uplink is an interface that carries a node address.
type Uplink struct {
	// Addr is the node address the interface carries.
	Addr netip.Addr
	// Name and Index identify the interface.
	Name  string
	Index int
	// MTU is the interface's MTU when it was found.
	MTU int
}

// Finder looks up interfaces by address in the network namespace of its
// netlink handle. The handle decides the namespace, so no goroutine ever
// has to switch namespaces.
type Finder struct {
	h netlinksafe.Handle
}

// Open returns a Finder on the network namespace of the calling thread.
func Open() (*Finder, error) {
	h, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	return New(h), nil
}

// New returns a Finder that uses h (which it then owns).
func New(h netlinksafe.Handle) *Finder { return &Finder{h: h} }

// Close releases the netlink handle.
func (f *Finder) Close() { f.h.Close() }

// dumpAttempts bounds the retries of an address dump that a concurrent
// change interrupted.
const dumpAttempts = 5

// Find returns the interface that carries each of addrs, in the order of
// addrs; an address no interface carries is left out, and an address on
// several interfaces gets the first the kernel lists. It costs one address
// dump and one link lookup per address found, so it can run on every
// reconcile and see an MTU changed since the last one.
func (f *Finder) Find(addrs ...netip.Addr) ([]Uplink, error) {
	want := map[netip.Addr]bool{}
	for _, a := range addrs {
		if a.IsValid() {
			want[a.Unmap()] = true
		}
	}
	if len(want) == 0 {
		return nil, nil
	}
	var list []netlink.Addr
	var err error
	for range dumpAttempts {
		// An interrupted dump may be inconsistent: it may lack the
		// very address looked for.
		if list, err = f.h.AddrList(nil, netlink.FAMILY_ALL); !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	index := map[netip.Addr]int{}
	for _, a := range list {
		if a.IPNet == nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IP)
		if ip = ip.Unmap(); !ok || !want[ip] {
			continue
		}
		if _, dup := index[ip]; !dup {
			index[ip] = a.LinkIndex
		}
	}
	var out []Uplink
	for _, a := range addrs {
		a = a.Unmap()
		i, ok := index[a]
		if !ok {
			continue
		}
		delete(index, a)
		link, err := f.h.LinkByIndex(i)
		if err != nil {
			return nil, fmt.Errorf("look up interface %d carrying %s: %w", i, a, err)
		}
		attrs := link.Attrs()
		out = append(out, Uplink{Addr: a, Name: attrs.Name, Index: attrs.Index, MTU: attrs.MTU})
	}
	return out, nil
}
