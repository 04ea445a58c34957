package external

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	cniipam "github.com/containernetworking/plugins/pkg/ipam"

	"github.com/vethroute/vethroute/pkg/ipam"
	"github.com/vethroute/vethroute/pkg/netconf"
)

// Plugin execs the IPAM plugin Type with the runtime's stdin. The plugin
// reads the attachment from the CNI environment, which it inherits.
type Plugin struct {
	Type  string
	Stdin []byte
	// PrevResult is the runtime's result of ADD, when it sent one: the
	// only record of the addresses outside the IPAM plugin.
	PrevResult types.Result
}

var _ ipam.Allocator = (*Plugin)(nil)

// Allocate runs the plugin's ADD. A result vethroute cannot use (no
// address, an address without a gateway, which vethroute puts on the node's
// veth) is handed back through the plugin's DEL.
func (p *Plugin) Allocate() ([]ipam.Lease, []*types.Route, error) {
	r, err := cniipam.ExecAdd(p.Type, p.Stdin)
	if err != nil {
		return nil, nil, fmt.Errorf("ipam plugin %s: %w", p.Type, err)
	}
	res, err := current.NewResultFromResult(r)
	if err != nil {
		_ = p.Release()
		return nil, nil, fmt.Errorf("convert result of ipam plugin %s: %w", p.Type, err)
	}
	if len(res.IPs) == 0 {
		_ = p.Release()
		return nil, nil, netconf.ConfigError("ipam", "plugin %s returned no address; configure it to hand out one per address family", p.Type)
	}
	leases := make([]ipam.Lease, 0, len(res.IPs))
	for _, ipc := range res.IPs {
		if ipc.Gateway == nil {
			_ = p.Release()
			return nil, nil, types.NewError(types.ErrInvalidNetworkConfig,
				fmt.Sprintf("ipam plugin %s returned %s without a gateway; configure a gateway for the range, vethroute puts it on the node's veth", p.Type, ipc.Address.String()), "")
		}
		leases = append(leases, ipam.Lease{Address: ipc.Address, Gateway: ipc.Gateway})
	}
	return leases, res.Routes, nil
}

// Release runs the plugin's DEL.
func (p *Plugin) Release() error {
	if err := cniipam.ExecDel(p.Type, p.Stdin); err != nil {
		return fmt.Errorf("ipam plugin %s DEL: %w", p.Type, err)
	}
	return nil
}

// Held returns the addresses of prevResult; nil without one.
func (p *Plugin) Held() ([]*net.IPNet, error) {
	if p.PrevResult == nil {
		return nil, nil
	}
	prev, err := current.NewResultFromResult(p.PrevResult)
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

// Check runs the plugin's CHECK, which compares with prevResult itself.
func (p *Plugin) Check([]net.IP) error {
	if err := cniipam.ExecCheck(p.Type, p.Stdin); err != nil {
		return fmt.Errorf("ipam plugin %s CHECK: %w", p.Type, err)
	}
	return nil
}

// Collect runs the plugin's GC, which reads the valid attachments from
// stdin itself and does not say how many it released.
func (p *Plugin) Collect(func(ipam.Owner) bool) (int, error) {
	stdin, err := gcStdin(p.Stdin)
	if err != nil {
		return 0, fmt.Errorf("ipam plugin %s GC: %w", p.Type, err)
	}
	if err := invoke.DelegateGC(context.TODO(), p.Type, stdin, nil); err != nil {
		return 0, fmt.Errorf("ipam plugin %s GC: %w", p.Type, err)
	}
	return 0, nil
}

// gcStdin returns stdin with cni.dev/valid-attachments holding every
// attachment vethroute keeps (netconf.NetConf.Attachments), when the runtime
// also or only sent the draft key cni.dev/attachments: an IPAM plugin reads
// only the final key, and would otherwise release the addresses of every
// attachment listed under the draft one while they are in use.
func gcStdin(stdin []byte) ([]byte, error) {
	var conf netconf.NetConf
	if err := json.Unmarshal(stdin, &conf); err != nil {
		return nil, fmt.Errorf("decode configuration: %w", err)
	}
	if conf.LegacyAttachments == nil {
		return stdin, nil
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(stdin, &raw); err != nil {
		return nil, fmt.Errorf("decode configuration: %w", err)
	}
	valid, err := json.Marshal(conf.Attachments())
	if err != nil {
		return nil, err
	}
	raw["cni.dev/valid-attachments"] = valid
	return json.Marshal(raw)
}

// Status runs the plugin's STATUS and passes its CNI error through. A
// plugin that cannot be found in CNI_PATH, or fails without a CNI error
// (RawExec reports code 0), cannot service ADD either: code 50.
func (p *Plugin) Status() error {
	err := cniipam.ExecStatus(p.Type, p.Stdin)
	if err == nil {
		return nil
	}
	var te *types.Error
	if errors.As(err, &te) && te.Code != 0 {
		return fmt.Errorf("ipam plugin %s STATUS: %w", p.Type, err)
	}
	return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf("ipam plugin %s STATUS: %v", p.Type, err), "")
}
