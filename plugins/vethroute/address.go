package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/vethroute/vethroute/pkg/ipam"
	"github.com/vethroute/vethroute/pkg/ipam/external"
	"github.com/vethroute/vethroute/pkg/netconf"
	"github.com/vethroute/vethroute/pkg/routing"
)

// allocatorFor picks the IPAM of the configuration: the built-in allocator
// (in-process, no second exec) or an external IPAM plugin from CNI_PATH.
func allocatorFor(conf *netconf.NetConf, args *skel.CmdArgs) ipam.Allocator {
	if conf.Builtin != nil {
		return &ipam.Builtin{Config: conf.Builtin, Network: conf.Name, Owner: ipam.Owner{ContainerID: args.ContainerID, IfName: args.IfName}}
	}
	return &external.Plugin{Type: conf.IPAM.Type, Stdin: args.StdinData, PrevResult: conf.PrevResult}
}

// allocate returns the container's addresses (with gateways) and routes.
func allocate(conf *netconf.NetConf, a ipam.Allocator) ([]routing.Address, []*types.Route, error) {
	leases, routes, err := a.Allocate()
	if err != nil {
		return nil, nil, err
	}
	addrs := make([]routing.Address, len(leases))
	for i, l := range leases {
		// netconf.Load checks the MTU against the built-in IPAM's IPv6
		// ranges; an external IPAM's family is known only from its result.
		if l.Address.IP.To4() == nil && conf.MTU < netconf.MinMTU6 {
			_ = a.Release()
			return nil, nil, netconf.ConfigError("mtu", "%d is below %d, the minimum for IPv6 address %s that ipam plugin %s returned", conf.MTU, netconf.MinMTU6, l.Address.String(), conf.IPAM.Type)
		}
		addrs[i] = routing.Address{IPNet: l.Address, Gateway: l.Gateway}
	}
	return addrs, routes, nil
}
