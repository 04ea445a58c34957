package ipam

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/plugins/ipam/host-local/backend/allocator"

	"github.com/vethroute/vethroute/pkg/netconf"
)

// Builtin is the Allocator of the in-process Pool for one attachment. Each
// call opens the network's store and closes it again, so that the
// concurrent plugin processes of a node share it.
type Builtin struct {
	// Config is the ipam section as netconf.Load leaves it.
	Config  *allocator.IPAMConfig
	Network string
	Owner   Owner
}

var _ Allocator = (*Builtin)(nil)

func (b *Builtin) open() (*Pool, error) {
	p, err := Open(b.Config.DataDir, b.Network, b.Config.Ranges)
	if err != nil {
		// A dataDir below a regular file is a mistake in the configuration,
		// not an I/O failure: say which field to fix.
		if _, serr := os.Stat(b.Config.DataDir); errors.Is(serr, syscall.ENOTDIR) {
			return nil, netconf.ConfigError("ipam.dataDir", "%q lies below a file that is not a directory: %v", b.Config.DataDir, err)
		}
	}
	return p, err
}

// with runs f on the opened pool.
func (b *Builtin) with(f func(*Pool) error) error {
	p, err := b.open()
	if err != nil {
		return err
	}
	defer p.Close()
	return f(p)
}

// Allocate reserves one address per range set, honouring the requested
// addresses (CNI_ARGS IP=, runtimeConfig ips).
func (b *Builtin) Allocate() (leases []Lease, routes []*types.Route, err error) {
	err = b.with(func(p *Pool) error {
		leases, err = p.Allocate(b.Owner, b.Config.IPArgs)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return leases, b.Config.Routes, nil
}

// Release frees the attachment's addresses.
func (b *Builtin) Release() error {
	return b.with(func(p *Pool) error {
		if _, err := p.Release(b.Owner); err != nil {
			return fmt.Errorf("ipam dataDir %s: %w", b.Config.DataDir, err)
		}
		return nil
	})
}

// Held returns the attachment's addresses with their range's mask.
func (b *Builtin) Held() (out []*net.IPNet, err error) {
	err = b.with(func(p *Pool) error {
		ips, err := p.Get(b.Owner)
		for i, a := range ips {
			if r, rerr := b.Config.Ranges[i].RangeFor(a); rerr == nil {
				out = append(out, &net.IPNet{IP: a, Mask: r.Subnet.Mask})
			}
		}
		return err
	})
	return out, err
}

// Check verifies that the store holds each of addrs for the attachment.
func (b *Builtin) Check(addrs []net.IP) error {
	return b.with(func(p *Pool) error {
		ips, err := p.Get(b.Owner)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			found := false
			for _, h := range ips {
				found = found || h.Equal(a)
			}
			if !found {
				return fmt.Errorf("check %s: reservation of %s in %s is missing (the allocator holds %v)", b.Owner.ContainerID, a, b.Config.DataDir, ips)
			}
		}
		return nil
	})
}

// Collect releases every reservation keep rejects.
func (b *Builtin) Collect(keep func(Owner) bool) (n int, err error) {
	err = b.with(func(p *Pool) error {
		released, err := p.GC(keep)
		n = len(released)
		return err
	})
	return n, err
}

// Status fails with CNI code 50 (plugin not available) when the store is
// unusable or a range set is exhausted.
func (b *Builtin) Status() error {
	p, err := b.open()
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf("ipam dataDir %s is unusable: %v", b.Config.DataDir, err), "")
	}
	defer p.Close()
	full, err := p.Exhausted()
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf("read reservations in %s: %v", b.Config.DataDir, err), "")
	}
	if full {
		sets := make([]string, len(b.Config.Ranges))
		for i, rs := range b.Config.Ranges {
			sets[i] = rs.String()
		}
		return types.NewError(types.ErrPluginNotAvailable,
			fmt.Sprintf("pool exhausted: a range set of %s has all its addresses in use; release some (DEL/GC) or widen the range", strings.Join(sets, ", ")), "")
	}
	return nil
}
