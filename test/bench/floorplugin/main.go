// Command floorplugin is the benchmark's exec'd floor: the netlink work of
// package floor in the smallest possible binary, so that the benchmark can
// tell the cost of starting any Go plugin process from the cost of what a
// plugin does. It reads CNI_COMMAND (ADD, DEL, or VERSION, which does nothing), CNI_NETNS, CNI_IFNAME and
// FLOOR_HOST, FLOOR_ADDR (CIDR), FLOOR_GW from its environment, and
// FLOOR_REAPER, a socket DEL hands the deletion to (floor.DetachVia); it is not a
// CNI plugin and prints nothing on success.
package main

import (
	"fmt"
	"net"
	"os"
	"strconv"

	"github.com/vethroute/vethroute/test/bench/floor"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "floorplugin:", err)
		os.Exit(1)
	}
}

func run() error {
	switch cmd := os.Getenv("CNI_COMMAND"); cmd {
	case "ADD":
		ip, addr, err := net.ParseCIDR(os.Getenv("FLOOR_ADDR"))
		if err != nil {
			return fmt.Errorf("FLOOR_ADDR: %w", err)
		}
		addr.IP = ip
		gw := net.ParseIP(os.Getenv("FLOOR_GW"))
		if gw == nil {
			return fmt.Errorf("FLOOR_GW %q is not an address", os.Getenv("FLOOR_GW"))
		}
		mtu, _ := strconv.Atoi(os.Getenv("FLOOR_MTU"))
		if mtu == 0 {
			mtu = 1500
		}
		return floor.Attach(os.Getenv("CNI_NETNS"), floor.Spec{
			HostName: os.Getenv("FLOOR_HOST"), IfName: os.Getenv("CNI_IFNAME"),
			Addr: addr, Gateway: gw.To4(), MTU: mtu,
		})
	case "DEL":
		if sock := os.Getenv("FLOOR_REAPER"); sock != "" {
			return floor.DetachVia(sock, os.Getenv("FLOOR_HOST"))
		}
		return floor.Detach(os.Getenv("FLOOR_HOST"))
	case "VERSION":
		// Nothing: the benchmark times this to learn what starting a
		// minimal Go binary costs.
		return nil
	default:
		return fmt.Errorf("CNI_COMMAND %q is neither ADD nor DEL", cmd)
	}
}
