package routing

import (
	"fmt"

	"github.com/containernetworking/plugins/pkg/ip"
)

// EnableForwarding turns on IP forwarding in the node's namespace for the
// families in use: the node routes between its containers and beyond. The
// sysctl is only written when it is not already 1 (a new namespace starts
// with forwarding off; a configured node already has it on).
func EnableForwarding(v4, v6 bool) error {
	if v4 {
		if err := ip.EnableIP4Forward(); err != nil {
			return fmt.Errorf("enable net.ipv4.ip_forward: %w", err)
		}
	}
	if v6 {
		if err := ip.EnableIP6Forward(); err != nil {
			return fmt.Errorf("enable net.ipv6.conf.all.forwarding: %w", err)
		}
	}
	return nil
}
