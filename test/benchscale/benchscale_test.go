package main

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vethroute/vethroute/test/bench/docsection"
)

func TestAddressing(t *testing.T) {
	seen := map[netip.Addr]bool{}
	cidrs := map[netip.Prefix]bool{}
	cluster4, cluster6 := netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00:10::/48")
	for _, i := range []int{0, 1, 254, 255, 256, 4999, 5000, 6199, maxNodes - 1} {
		v4, v6 := internalIPs(i)
		p4, p6 := podCIDRs(i)
		if !uplinkV4.Contains(v4) || !uplinkV6.Contains(v6) || seen[v4] || seen[v6] {
			t.Errorf("node %d: InternalIPs %s %s not unique on the uplink subnets", i, v4, v6)
		}
		if v4 == uplinkV4.Masked().Addr() || v4 == netip.MustParseAddr("172.20.255.255") {
			t.Errorf("node %d: InternalIP %s is the subnet's network or broadcast address", i, v4)
		}
		if !cluster4.Contains(p4.Addr()) || !cluster6.Contains(p6.Addr()) || cidrs[p4] || cidrs[p6] || p4 != p4.Masked() || p6 != p6.Masked() {
			t.Errorf("node %d: pod CIDRs %s %s not unique, masked and inside the cluster CIDRs", i, p4, p6)
		}
		seen[v4], seen[v6], cidrs[p4], cidrs[p6] = true, true, true, true
	}
}

func TestMatch(t *testing.T) {
	t0 := time.Now()
	p := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	ops := []*churnOp{
		{kind: opAdd, start: at(0), dsts: []netip.Prefix{p("10.0.1.0/24"), p("fd00:10:0:1::/64")}, present: true},
		{kind: opDelete, start: at(10), dsts: []netip.Prefix{p("10.0.2.0/24")}},
		{kind: opAssign, start: at(20), dsts: []netip.Prefix{p("10.0.3.0/24")}, present: true},
		{kind: opAdd, start: at(30), err: errTest},
	}
	events := []routeEvent{
		{at: at(-5), dst: p("10.0.1.0/24"), present: true}, // before the write: not its change
		{at: at(40), dst: p("fd00:10:0:1::/64"), present: true},
		{at: at(25), dst: p("10.0.1.0/24"), present: true},
		{at: at(15), dst: p("10.0.2.0/24"), present: true}, // the wrong direction
		{at: at(60), dst: p("10.0.2.0/24")},
	}
	res := match(ops, events, time.Minute, 10)
	if res.Writes != 4 || res.Failed != 1 || res.Missing != 1 {
		t.Fatalf("writes %d failed %d missing %d, want 4, 1, 1", res.Writes, res.Failed, res.Missing)
	}
	if l := res.Latency["add"]; l.N != 1 || l.Max != 40*time.Millisecond {
		t.Errorf("add latency %+v, want one of 40ms (the later of its two routes)", l)
	}
	if l := res.Latency["delete"]; l.N != 1 || l.Max != 50*time.Millisecond {
		t.Errorf("delete latency %+v, want one of 50ms", l)
	}
	if l := res.Latency["all"]; l.N != 2 || l.P50 != 40*time.Millisecond || l.P99 != 50*time.Millisecond {
		t.Errorf("all %+v", l)
	}
}

type testError struct{}

func (testError) Error() string { return "refused" }

var errTest = testError{}

func TestMarkdownSection(t *testing.T) {
	r := &results{Label: "x", Command: "go run ./test/benchscale", Load: [2]string{"1", "2"}, Sizes: []sizeResult{
		{Nodes: 100, Routes: 198, Converge: time.Second, RSSSteady: 30 << 10, RSSPeak: 31 << 10},
		{Nodes: 1000, Routes: 1998, Converge: 2 * time.Second, RSSSteady: 40 << 10, RSSPeak: 41 << 10},
		{Nodes: 5000, Routes: 9998, Converge: 10 * time.Second, RSSSteady: 80 << 10, RSSPeak: 90 << 10},
	}}
	md := markdown(&options{plot: "docs/benchmarks-scale.png"}, r, nil)
	for _, want := range []string{
		"| agent RSS ≤ 64 MiB at 5000 nodes | peak 90.0 MiB (steady 80.0 MiB) | **not met**",
		"| all routes within 5s of start at 5000 nodes | 10.00 s | **not met**",
		"start-up time grows at most linearly from 100 to 5000 nodes | 1.84 ms per node overall; 1.11 from 100 to 1000, 2.00 from 1000 to 5000 | **not met**",
		"RSS (steady) grows at most linearly from 100 to 5000 nodes | 10.45 KiB per node overall; 11.38 from 100 to 1000, 10.24 from 1000 to 5000 | met",
		// No churn was measured: not a pass.
		"| churn p99 ≤ 200 ms from API write to kernel at 5000 nodes | 0 ms | **not met**",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	doc := docsection.Replace("# Benchmarks\n", sectionName, md)
	if got := docsection.Find(doc); len(got) != 1 || got[0].Name != sectionName {
		t.Errorf("section not found in %q", doc)
	}
}
