package ipam

import (
	"net"

	"github.com/containernetworking/cni/pkg/types"
)

// Allocator is what the plugin asks of an IPAM for one attachment. Builtin
// is the in-process Pool; package external execs an IPAM plugin.
type Allocator interface {
	// Allocate reserves the attachment's addresses and returns them with
	// their gateways and the routes the container gets.
	Allocate() ([]Lease, []*types.Route, error)
	// Release frees the attachment's addresses; releasing nothing is
	// success.
	Release() error
	// Held returns the attachment's addresses as prefixes, or nil when
	// they are not known.
	Held() ([]*net.IPNet, error)
	// Check verifies that the IPAM still holds addrs for the attachment.
	Check(addrs []net.IP) error
	// Collect releases every reservation whose owner keep rejects and
	// returns how many it released, when the IPAM says.
	Collect(keep func(Owner) bool) (int, error)
	// Status reports whether an ADD could succeed now.
	Status() error
}
