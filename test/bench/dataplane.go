package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// The article's two-router topology: node A (router01) serves 192.168.0.0/24
// with gateway .254, node B (router02) 10.0.0.0/24, joined by a veth
// 172.16.0.1/24 -- 172.16.0.2/24, each with a route toward the other's pods.
var (
	topoA = pluginConf{subnet: "192.168.0.0/24", rangeStart: "192.168.0.1", rangeEnd: "192.168.0.250", gateway: "192.168.0.254",
		peerSubnet: "10.0.0.0/24", peerGW: "172.16.0.2"}
	topoB = pluginConf{subnet: "10.0.0.0/24", rangeStart: "10.0.0.1", rangeEnd: "10.0.0.250", gateway: "10.0.0.254",
		peerSubnet: "192.168.0.0/24", peerGW: "172.16.0.1"}
)

const iperfPort = "5201"

// topology is one plugin's two nodes and three containers: a1 (iperf3
// server) and a2 on node A, b1 on node B.
type topology struct {
	plugin        string
	a1, a2, b1    ns.NetNS
	a1IP          net.IP
	ttl           int
	sameBps, xBps []float64
	errors        int
	firstErr      string
}

// throughput holds the data-plane results.
type throughput struct {
	topos    []*topology
	duration time.Duration
	skipped  string
}

// buildTopology sets up the article's topology for plugin and starts iperf3
// in a1, bound to a1's address (stopped when the lab closes).
func (l *lab) buildTopology(plugin string) (*topology, error) {
	da, err := l.newDriver(plugin, "dpa", topoA, false)
	if err != nil {
		return nil, err
	}
	db, err := l.newDriver(plugin, "dpb", topoB, false)
	if err != nil {
		return nil, err
	}
	if err := withHandle(da.node.NS, func(h *netlink.Handle) error {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = "up0"
		return h.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "up0", PeerNamespace: netlink.NsFd(int(netns.NsHandle(db.node.NS.Fd())))})
	}); err != nil {
		return nil, fmt.Errorf("link the nodes: %w", err)
	}
	if err := withHandle(da.node.NS, func(h *netlink.Handle) error { return configureUplink(h, "172.16.0.1/24", "up0") }); err != nil {
		return nil, err
	}
	if err := withHandle(db.node.NS, func(h *netlink.Handle) error { return configureUplink(h, "172.16.0.2/24", "up0") }); err != nil {
		return nil, err
	}
	if plugin == "ptp" {
		// ptp has no setting for router routes: add them by hand, as an
		// operator of a ptp node would.
		if err := addRoute(da.node.NS, topoA.peerSubnet, topoA.peerGW); err != nil {
			return nil, err
		}
		if err := addRoute(db.node.NS, topoB.peerSubnet, topoB.peerGW); err != nil {
			return nil, err
		}
	}
	t := &topology{plugin: da.name}
	for i, c := range []struct {
		d   *driver
		dst *ns.NetNS
		ip  *net.IP
	}{{da, &t.a1, &t.a1IP}, {da, &t.a2, nil}, {db, &t.b1, nil}} {
		cont, err := l.newNS("dpc")
		if err != nil {
			return nil, err
		}
		ip, err := c.d.addIP(fmt.Sprintf("dp-%d", i), cont)
		if err != nil {
			return nil, fmt.Errorf("%s ADD for the data plane: %w", da.name, err)
		}
		*c.dst = cont
		if c.ip != nil {
			*c.ip = ip
		}
	}
	out, err := exec.Command("nsenter", "--net="+t.b1.Path(), "ping", "-c", "1", "-W", "2", t.a1IP.String()).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("%s: ping from node B's container to %s: %v\n%s", da.name, t.a1IP, err, out)
	}
	if m := regexp.MustCompile(`ttl=(\d+)`).FindSubmatch(out); m != nil {
		t.ttl, _ = strconv.Atoi(string(m[1]))
	}
	srv := exec.Command("nsenter", "--net="+t.a1.Path(), "iperf3", "-s", "-B", t.a1IP.String(), "-p", iperfPort)
	if err := srv.Start(); err != nil {
		return nil, fmt.Errorf("start iperf3 server: %w", err)
	}
	l.onClose(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	return t, nil
}

// iperf runs a TCP iperf3 client in client toward server for d and returns
// the received throughput in bit/s. It retries while the server starts.
func iperf(client ns.NetNS, server net.IP, d time.Duration) (float64, error) {
	secs := strconv.Itoa(max(1, int(d.Seconds())))
	var last error
	for range 10 {
		ctx, cancel := context.WithTimeout(context.Background(), d+20*time.Second)
		out, err := exec.CommandContext(ctx, "nsenter", "--net="+client.Path(), "iperf3", "-c", server.String(),
			"-p", iperfPort, "-t", secs, "-J").Output()
		cancel()
		if err == nil {
			var r struct {
				End struct {
					SumReceived struct {
						BitsPerSecond float64 `json:"bits_per_second"`
					} `json:"sum_received"`
				} `json:"end"`
			}
			if err := json.Unmarshal(out, &r); err != nil {
				return 0, fmt.Errorf("decode iperf3 output: %w", err)
			}
			return r.End.SumReceived.BitsPerSecond, nil
		}
		last = fmt.Errorf("iperf3 to %s: %v\n%s", server, err, out)
		time.Sleep(300 * time.Millisecond)
	}
	return 0, last
}

// runDataPlane builds the topology for every plugin and measures, rounds
// times alternating plugins, TCP throughput container to container on one
// node (a2 -> a1) and across the two routers (b1 -> a1).
func runDataPlane(l *lab, plugins []string, rounds int, d time.Duration, progress func(string)) (*throughput, error) {
	start := time.Now()
	res := &throughput{}
	if _, err := exec.LookPath("iperf3"); err != nil {
		res.skipped = "iperf3 is not installed (apt-get install iperf3)"
		return res, nil
	}
	for _, p := range plugins {
		t, err := l.buildTopology(p)
		if err != nil {
			return nil, err
		}
		res.topos = append(res.topos, t)
	}
	for r := range rounds {
		for _, cross := range []bool{false, true} {
			for j := range res.topos {
				t := res.topos[(r+j)%len(res.topos)]
				client := t.a2
				if cross {
					client = t.b1
				}
				bps, err := iperf(client, t.a1IP, d)
				if err != nil {
					t.errors++
					t.firstErr = err.Error()
					continue
				}
				if cross {
					t.xBps = append(t.xBps, bps)
				} else {
					t.sameBps = append(t.sameBps, bps)
				}
			}
		}
		progress(fmt.Sprintf("data plane: round %d/%d", r+1, rounds))
	}
	res.duration = time.Since(start)
	return res, nil
}
