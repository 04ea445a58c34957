package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	cniipam "github.com/containernetworking/plugins/pkg/ipam"
	"github.com/vethroute/vethroute/pkg/ipam"
	"github.com/vethroute/vethroute/pkg/routing"
)

// This file routes each address operation either to the built-in allocator
// (in-process, no second exec) or to an external IPAM plugin from CNI_PATH.

func ownerOf(args *skel.CmdArgs) ipam.Owner {
	return ipam.Owner{ContainerID: args.ContainerID, IfName: args.IfName}
}

func openPool(conf *NetConf) (*ipam.Pool, error) {
	p, err := ipam.Open(conf.builtin.DataDir, conf.Name, conf.builtin.Ranges)
	if err != nil {
		// A dataDir below a regular file is a mistake in the configuration,
		// not an I/O failure: say which field to fix.
		if _, serr := os.Stat(conf.builtin.DataDir); errors.Is(serr, syscall.ENOTDIR) {
			return nil, configError("ipam.dataDir", "%q lies below a file that is not a directory: %v", conf.builtin.DataDir, err)
		}
	}
	return p, err
}

// allocate returns the container's addresses (with gateways) and routes.
func allocate(conf *NetConf, args *skel.CmdArgs) ([]routing.Address, []*types.Route, error) {
	if conf.builtin == nil {
		return allocateExternal(conf, args)
	}
	pool, err := openPool(conf)
	if err != nil {
		return nil, nil, err
	}
	defer pool.Close()
	leases, err := pool.Allocate(ownerOf(args), conf.builtin.IPArgs)
	if err != nil {
		return nil, nil, err
	}
	addrs := make([]routing.Address, len(leases))
	for i, l := range leases {
		addrs[i] = routing.Address{IPNet: l.Address, Gateway: l.Gateway}
	}
	return addrs, conf.builtin.Routes, nil
}

func allocateExternal(conf *NetConf, args *skel.CmdArgs) ([]routing.Address, []*types.Route, error) {
	r, err := cniipam.ExecAdd(conf.IPAM.Type, args.StdinData)
	if err != nil {
		return nil, nil, fmt.Errorf("ipam plugin %s: %w", conf.IPAM.Type, err)
	}
	res, err := current.NewResultFromResult(r)
	if err != nil {
		_ = cniipam.ExecDel(conf.IPAM.Type, args.StdinData)
		return nil, nil, fmt.Errorf("convert result of ipam plugin %s: %w", conf.IPAM.Type, err)
	}
	if len(res.IPs) == 0 {
		_ = cniipam.ExecDel(conf.IPAM.Type, args.StdinData)
		return nil, nil, configError("ipam", "plugin %s returned no address; configure it to hand out one per address family", conf.IPAM.Type)
	}
	addrs := make([]routing.Address, 0, len(res.IPs))
	for _, ipc := range res.IPs {
		if ipc.Gateway == nil {
			_ = cniipam.ExecDel(conf.IPAM.Type, args.StdinData)
			return nil, nil, types.NewError(types.ErrInvalidNetworkConfig,
				fmt.Sprintf("ipam plugin %s returned %s without a gateway; configure a gateway for the range, vethroute puts it on the node's veth", conf.IPAM.Type, ipc.Address.String()), "")
		}
		if ipc.Address.IP.To4() == nil && conf.MTU < minMTU6 {
			_ = cniipam.ExecDel(conf.IPAM.Type, args.StdinData)
			return nil, nil, configError("mtu", "%d is below %d, the minimum for IPv6 address %s that ipam plugin %s returned", conf.MTU, minMTU6, ipc.Address.String(), conf.IPAM.Type)
		}
		// loadConf checks the MTU against the built-in IPAM's IPv6 ranges;
		// an external IPAM's family is known only from its result.
		if ipc.Address.IP.To4() == nil && conf.MTU < minMTU6 {
			_ = cniipam.ExecDel(conf.IPAM.Type, args.StdinData)
			return nil, nil, configError("mtu", "%d is below %d, the minimum for IPv6, and ipam plugin %s returned %s; raise mtu to at least %d", conf.MTU, minMTU6, conf.IPAM.Type, ipc.Address.String(), minMTU6)
		}
		addrs = append(addrs, routing.Address{IPNet: ipc.Address, Gateway: ipc.Gateway})
	}
	return addrs, res.Routes, nil
}

// release frees the container's addresses; releasing nothing is success.
func release(conf *NetConf, args *skel.CmdArgs) error {
	if conf.builtin == nil {
		if err := cniipam.ExecDel(conf.IPAM.Type, args.StdinData); err != nil {
			return fmt.Errorf("ipam plugin %s DEL: %w", conf.IPAM.Type, err)
		}
		return nil
	}
	pool, err := openPool(conf)
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := pool.Release(ownerOf(args)); err != nil {
		return fmt.Errorf("ipam dataDir %s: %w", conf.builtin.DataDir, err)
	}
	return nil
}

// held returns the container's addresses as prefixes, from the built-in
// store or, for an external IPAM, from prevResult when the runtime sent it.
func held(conf *NetConf, args *skel.CmdArgs) ([]*net.IPNet, error) {
	if conf.builtin == nil {
		if conf.PrevResult == nil {
			return nil, nil
		}
		prev, err := current.NewResultFromResult(conf.PrevResult)
		if err != nil {
			return nil, err
		}
		var out []*net.IPNet
		for _, ipc := range prev.IPs {
			a := ipc.Address
			out = append(out, &a)
		}
		return out, nil
	}
	pool, err := openPool(conf)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	ips, err := pool.Get(ownerOf(args))
	if err != nil {
		return nil, err
	}
	var out []*net.IPNet
	for i, a := range ips {
		r, err := conf.builtin.Ranges[i].RangeFor(a)
		if err != nil {
			continue
		}
		out = append(out, &net.IPNet{IP: a, Mask: r.Subnet.Mask})
	}
	return out, nil
}

// checkReservation verifies that the allocator still holds what ADD reported.
func checkReservation(conf *NetConf, args *skel.CmdArgs, addrs []routing.Address) error {
	if conf.builtin == nil {
		if err := cniipam.ExecCheck(conf.IPAM.Type, args.StdinData); err != nil {
			return fmt.Errorf("ipam plugin %s CHECK: %w", conf.IPAM.Type, err)
		}
		return nil
	}
	pool, err := openPool(conf)
	if err != nil {
		return err
	}
	defer pool.Close()
	ips, err := pool.Get(ownerOf(args))
	if err != nil {
		return err
	}
	for _, a := range addrs {
		found := false
		for _, h := range ips {
			found = found || h.Equal(a.IPNet.IP)
		}
		if !found {
			return fmt.Errorf("check %s: reservation of %s in %s is missing (the allocator holds %v)", args.ContainerID, a.IPNet.IP, conf.builtin.DataDir, ips)
		}
	}
	return nil
}

// collectAddresses releases every reservation keep rejects and returns how
// many it released.
func collectAddresses(conf *NetConf, args *skel.CmdArgs, keep func(id, ifName string) bool) (int, error) {
	if conf.builtin == nil {
		if err := invoke.DelegateGC(context.TODO(), conf.IPAM.Type, args.StdinData, nil); err != nil {
			return 0, fmt.Errorf("ipam plugin %s GC: %w", conf.IPAM.Type, err)
		}
		return 0, nil
	}
	pool, err := openPool(conf)
	if err != nil {
		return 0, err
	}
	defer pool.Close()
	released, err := pool.GC(func(o ipam.Owner) bool { return keep(o.ContainerID, o.IfName) })
	return len(released), err
}

// status reports whether an ADD could succeed now.
func status(conf *NetConf, args *skel.CmdArgs) error {
	if conf.builtin == nil {
		if err := cniipam.ExecStatus(conf.IPAM.Type, args.StdinData); err != nil {
			return err
		}
		return nil
	}
	pool, err := openPool(conf)
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf("ipam dataDir %s is unusable: %v", conf.builtin.DataDir, err), "")
	}
	defer pool.Close()
	used, capacity, err := pool.Usage()
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf("read reservations in %s: %v", conf.builtin.DataDir, err), "")
	}
	for i := range used {
		if used[i].Cmp(capacity[i]) >= 0 {
			return types.NewError(types.ErrPluginNotAvailable,
				fmt.Sprintf("pool exhausted: range set %s has all %s addresses in use; release some (DEL/GC) or widen the range", conf.builtin.Ranges[i].String(), capacity[i]), "")
		}
	}
	return nil
}
