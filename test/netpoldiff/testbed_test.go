package netpoldiff

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	corev1 "k8s.io/api/core/v1"

	"github.com/vethroute/vethroute/internal/testutil"
	"github.com/vethroute/vethroute/pkg/routing"
)

// The test node: pods behind vethroute veths in 10.60.1.0/24 and
// fd00:60:1::/64, another node's pods (10.60.2.0/24, fd00:60:2::/64) and
// hosts outside the cluster (10.62.0.0/24, fd00:62::/64) as addresses of
// one "remote" namespace the node routes to through an uplink veth
// (172.30.0.1 and fd00:30::1 on the node, .2 and ::2 on the remote side).
const (
	localPods  = 6
	remotePods = 3
	externals  = 2
)

// servicePorts are the ports every endpoint serves, TCP and UDP; policies
// draw their numbers, ranges and named ports from them.
var servicePorts = []int32{80, 81, 443, 5353, 8080, 8081, 9000, 9001}

// endpoint is one address pair traffic is sent from and to: a local pod,
// a remote pod or an external host.
type endpoint struct {
	name   string
	netns  ns.NetNS
	v4, v6 netip.Addr
	local  bool // behind a veth of the test node
	pod    bool // a pod of the cluster (local or remote), not an external host
	// node is the test node itself, a source only: what it sends its pods
	// leaves through the output hook, never forwarded.
	node bool
	// containerID and hostVeth are a local pod's attachment.
	containerID, hostVeth string
}

func (e *endpoint) addr(v6 bool) netip.Addr {
	if v6 {
		return e.v6
	}
	return e.v4
}

type testbed struct {
	node, remote ns.NetNS
	endpoints    []*endpoint
	// srcPort hands out client ports: no 5-tuple repeats within a run, so
	// a conntrack entry of an earlier policy set never answers for a probe.
	srcPort atomic.Int32
}

// newTestbed builds the node, its pods and the remote side, and starts a
// TCP and UDP server on every port of every endpoint. Everything goes with
// the test's namespaces.
func newTestbed(t *testing.T) *testbed {
	t.Helper()
	tb := &testbed{node: testutil.NewNS(t), remote: testutil.NewNS(t)}
	tb.srcPort.Store(20000)
	testutil.MustRunIn(t, tb.node, "ip", "link", "set", "lo", "up")
	for i := range localPods {
		e := &endpoint{
			name: fmt.Sprintf("local%d", i), netns: testutil.NewNS(t), local: true, pod: true,
			v4: netip.MustParseAddr(fmt.Sprintf("10.60.1.%d", i+1)), v6: netip.MustParseAddr(fmt.Sprintf("fd00:60:1::%x", i+1)),
			containerID: fmt.Sprintf("netpoldiff-pod%d", i),
		}
		e.hostVeth = routing.HostVethName(e.containerID, "eth0")
		a := &routing.Attachment{
			Network: "netpoldiff", ContainerID: e.containerID, IfName: "eth0", NetNS: e.netns.Path(), MTU: 1500,
			Addresses: []routing.Address{
				{IPNet: net.IPNet{IP: e.v4.AsSlice(), Mask: net.CIDRMask(24, 32)}, Gateway: net.ParseIP("10.60.1.254")},
				{IPNet: net.IPNet{IP: e.v6.AsSlice(), Mask: net.CIDRMask(64, 128)}, Gateway: net.ParseIP("fd00:60:1::fe")},
			},
		}
		for _, dst := range []string{"0.0.0.0/0", "::/0"} {
			_, n, _ := net.ParseCIDR(dst)
			a.Routes = append(a.Routes, routeTo(*n))
		}
		if err := tb.node.Do(func(ns.NetNS) error { _, err := routing.Setup(a); return err }); err != nil {
			t.Fatalf("attach %s: %v", e.name, err)
		}
		tb.endpoints = append(tb.endpoints, e)
	}

	// The uplink: the remote namespace is the next router, every remote
	// address is on its lo.
	testutil.MustRunIn(t, tb.node, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "up0", "netns", testutil.NSName(tb.remote))
	for _, c := range [][]string{
		{"addr", "add", "172.30.0.1/24", "dev", "up0"}, {"-6", "addr", "add", "fd00:30::1/64", "dev", "up0", "nodad"},
		{"link", "set", "up0", "up"},
		{"route", "add", "10.60.2.0/24", "via", "172.30.0.2"}, {"route", "add", "10.62.0.0/24", "via", "172.30.0.2"},
		{"-6", "route", "add", "fd00:60:2::/64", "via", "fd00:30::2"}, {"-6", "route", "add", "fd00:62::/64", "via", "fd00:30::2"},
	} {
		testutil.MustRunIn(t, tb.node, "ip", c...)
	}
	for _, c := range [][]string{
		{"link", "set", "lo", "up"},
		{"addr", "add", "172.30.0.2/24", "dev", "up0"}, {"-6", "addr", "add", "fd00:30::2/64", "dev", "up0", "nodad"},
		{"link", "set", "up0", "up"},
		{"route", "add", "default", "via", "172.30.0.1"}, {"-6", "route", "add", "default", "via", "fd00:30::1"},
	} {
		testutil.MustRunIn(t, tb.remote, "ip", c...)
	}
	for i := range remotePods + externals {
		e := &endpoint{name: fmt.Sprintf("remote%d", i), netns: tb.remote, pod: true,
			v4: netip.MustParseAddr(fmt.Sprintf("10.60.2.%d", i+1)), v6: netip.MustParseAddr(fmt.Sprintf("fd00:60:2::%x", i+1))}
		if i >= remotePods {
			e.name, e.pod = fmt.Sprintf("external%d", i-remotePods), false
			e.v4, e.v6 = netip.MustParseAddr(fmt.Sprintf("10.62.0.%d", i+1)), netip.MustParseAddr(fmt.Sprintf("fd00:62::%x", i+1))
		}
		testutil.MustRunIn(t, tb.remote, "ip", "addr", "add", e.v4.String()+"/32", "dev", "lo")
		testutil.MustRunIn(t, tb.remote, "ip", "-6", "addr", "add", e.v6.String()+"/128", "dev", "lo", "nodad")
		tb.endpoints = append(tb.endpoints, e)
	}
	// The node, and the other node's own address: a host-network pod runs
	// there, which selectors must not take for a pod.
	tb.endpoints = append(tb.endpoints, &endpoint{name: "node", netns: tb.node, node: true,
		v4: netip.MustParseAddr("172.30.0.1"), v6: netip.MustParseAddr("fd00:30::1")},
		&endpoint{name: "hostnet", netns: tb.remote, v4: netip.MustParseAddr("172.30.0.2"), v6: netip.MustParseAddr("fd00:30::2")})
	for _, n := range append([]ns.NetNS{tb.node, tb.remote}, tb.localNS()...) {
		testutil.SettleDAD(t, n)
	}
	for _, e := range tb.endpoints {
		if !e.node {
			serve(t, e)
		}
	}
	return tb
}

func (tb *testbed) localNS() (out []ns.NetNS) {
	for _, e := range tb.endpoints {
		if e.local {
			out = append(out, e.netns)
		}
	}
	return out
}

// serve answers on every service port of e's two addresses: TCP with a
// line naming the address and port reached, UDP by echoing the datagram.
// Listeners bind the endpoint's own addresses, so a UDP reply leaves from
// the address the request went to even where a namespace holds several.
func serve(t *testing.T, e *endpoint) {
	t.Helper()
	var wg sync.WaitGroup
	var closers []func()
	for _, a := range []netip.Addr{e.v4, e.v6} {
		for _, port := range servicePorts {
			ap := netip.AddrPortFrom(a, uint16(port))
			var ln net.Listener
			var pc net.PacketConn
			err := e.netns.Do(func(ns.NetNS) (err error) {
				if ln, err = net.Listen("tcp", ap.String()); err != nil {
					return err
				}
				pc, err = net.ListenPacket("udp", ap.String())
				return err
			})
			if err != nil {
				t.Fatalf("serve %s on %s: %v", e.name, ap, err)
			}
			closers = append(closers, func() { ln.Close() }, func() { pc.Close() })
			wg.Add(2)
			go func() {
				defer wg.Done()
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					_, _ = fmt.Fprintf(c, "%s\n", ap)
					c.Close()
				}
			}()
			go func() {
				defer wg.Done()
				buf := make([]byte, 128)
				for {
					n, from, err := pc.ReadFrom(buf)
					if err != nil {
						return
					}
					_, _ = pc.WriteTo(buf[:n], from)
				}
			}()
		}
	}
	t.Cleanup(func() {
		for _, c := range closers {
			c()
		}
		wg.Wait()
	})
}

// probe is one connection attempt from src to dst: a TCP connect that must
// read back the server's line, or a UDP datagram that must come back within
// timeout. A refusal, an ICMP error and silence all count as blocked, and
// why says which; err is a failure of the test itself (a server answering
// for another address, a socket that cannot be made).
func (tb *testbed) probe(src *endpoint, dst netip.Addr, proto corev1.Protocol, port int32, timeout time.Duration) (allowed bool, why string, err error) {
	local := netip.AddrPortFrom(src.addr(dst.Is6()), uint16(tb.srcPort.Add(1)))
	remote := netip.AddrPortFrom(dst, uint16(port))
	var blocked error
	err = src.netns.Do(func(ns.NetNS) error {
		var c net.Conn
		var err error
		switch proto {
		case corev1.ProtocolTCP:
			d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(local), Timeout: timeout}
			c, err = d.Dial("tcp", remote.String())
		case corev1.ProtocolUDP:
			c, err = net.DialUDP("udp", net.UDPAddrFromAddrPort(local), net.UDPAddrFromAddrPort(remote))
		default:
			return fmt.Errorf("protocol %s not probed", proto)
		}
		if err != nil {
			if isBlocked(err) {
				blocked = err
				return nil
			}
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(timeout))
		want := remote.String()
		if proto == corev1.ProtocolUDP {
			want = "probe " + local.String()
			if _, err := c.Write([]byte(want)); err != nil {
				blocked = err
				return nil
			}
		}
		buf := make([]byte, 128)
		n, err := c.Read(buf)
		if err != nil {
			if isBlocked(err) || errors.Is(err, io.EOF) {
				blocked = err
				return nil
			}
			return err
		}
		if got := strings.TrimSpace(string(buf[:n])); got != want {
			return fmt.Errorf("%s %s -> %s: answer %q, want %q", proto, local, remote, got, want)
		}
		return nil
	})
	if err != nil {
		return false, "", err
	}
	if blocked != nil {
		return false, blocked.Error(), nil
	}
	return true, "", nil
}

// isBlocked tells a connection a filter stopped (timeout, refusal, ICMP
// unreachable) from a failure of the test itself.
func isBlocked(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	s := err.Error()
	for _, m := range []string{"connection refused", "no route to host", "network is unreachable", "permission denied", "connection reset", "i/o timeout", "operation not permitted"} {
		if strings.Contains(s, m) {
			return true
		}
	}
	return errors.Is(err, context.DeadlineExceeded)
}

func routeTo(dst net.IPNet) *types.Route { return &types.Route{Dst: dst} }
