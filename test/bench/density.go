package main

import (
	"fmt"
	"net"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vethroute/vethroute/pkg/noderoutes"
	"github.com/vethroute/vethroute/pkg/routing"
	"github.com/vethroute/vethroute/test/bench/floor"
)

// drainWorkers is how many DELs run at once when the nodes are drained.
const drainWorkers = 4

// densityLevel is what the probes measured with n containers on the node.
type densityLevel struct {
	n        int
	add, del durations
	errors   int
	firstErr string
	// hostRoutes is vethroute's router-route check (noderoutes.Ensure)
	// run in-process on the node at this density: work that can grow with
	// the number of routes the node holds.
	hostRoutes durations
	// trace is one strace'd ADD+DEL of the plugin at this density.
	trace *netlinkTrace
}

// densityResult is the density section for every plugin.
type densityResult struct {
	levels map[string][]*densityLevel
	// control is the exec'd floor on an empty node of its own, probed in
	// the same loop: it moves only with the machine's load, not with the
	// density, so dividing by it separates the two.
	control []*densityLevel
	// nodeFloor is the in-process floor run on the first plugin's node
	// itself, among its containers: what the kernel's own work costs at
	// this density, whatever plugin asks for it.
	nodeFloor []*densityLevel
	// fill[plugin][k] is the latency of the ADD that found k containers.
	fill      map[string]durations
	fillErrs  map[string]int
	nsCreate  durations
	drain     map[string]time.Duration
	drainErrs map[string]int
	nsRemove  time.Duration
	nsCount   int
	total     time.Duration
}

// runDensity fills each plugin's node to every level in turn (the fill ADDs
// of both plugins interleaved), and at each level runs probes ADD+DEL cycles
// of one more container, alternating plugins. It then drains the nodes
// with DELs (drainWorkers at a time) and removes the container namespaces, timing both, so that the
// cost of holding this many namespaces is part of the report.
func runDensity(l *lab, drivers []*driver, control cycler, levels []int, probes int, peer *types.Route, trace bool, progress func(string)) (*densityResult, error) {
	start := time.Now()
	res := &densityResult{levels: map[string][]*densityLevel{}, fill: map[string]durations{},
		fillErrs: map[string]int{}, drain: map[string]time.Duration{}, drainErrs: map[string]int{}}
	conts := make([][]ns.NetNS, len(drivers))
	probe := make([]ns.NetNS, len(drivers))
	for k := range drivers {
		c, err := l.newNS("probe")
		if err != nil {
			return nil, err
		}
		probe[k] = c
	}
	fillID := func(i int) string { return fmt.Sprintf("fill-%d", i) }
	floorCont, err := l.newNS("densfloor")
	if err != nil {
		return nil, err
	}
	// An address past the range's end and the range's own gateway, so the
	// floor's host route never meets a container's.
	onNode := (&floorRig{node: drivers[0].node, cont: floorCont, spec: floor.Spec{
		HostName: "flrd0", IfName: "eth0", MTU: 1500,
		Addr:    &net.IPNet{IP: net.ParseIP("10.100.15.253").To4(), Mask: net.CIDRMask(20, 32)},
		Gateway: net.ParseIP("10.100.15.254").To4(),
	}}).inProcess()
	have := 0
	for _, level := range levels {
		for i := have; i < level; i++ {
			for k, d := range drivers {
				t0 := time.Now()
				c, err := l.newNS("dens")
				if err != nil {
					return nil, fmt.Errorf("container namespace %d of %s: %w", i, d.name, err)
				}
				res.nsCreate = append(res.nsCreate, time.Since(t0))
				conts[k] = append(conts[k], c)
				took, err := d.add(fillID(i), c)
				if err != nil {
					res.fillErrs[d.name]++
					continue
				}
				res.fill[d.name] = append(res.fill[d.name], took)
			}
		}
		have = level
		progress(fmt.Sprintf("density: %d containers on each node", level))
		lv := make([]*densityLevel, len(drivers))
		for k := range drivers {
			lv[k] = &densityLevel{n: level}
			res.levels[drivers[k].name] = append(res.levels[drivers[k].name], lv[k])
		}
		ctl, nf := &densityLevel{n: level}, &densityLevel{n: level}
		res.control, res.nodeFloor = append(res.control, ctl), append(res.nodeFloor, nf)
		for p := range probes {
			if a, err := onNode.add(p); err != nil {
				nf.errors++
				nf.firstErr = err.Error()
				_, _ = onNode.del(p)
			} else if dl, err := onNode.del(p); err != nil {
				nf.errors++
				nf.firstErr = err.Error()
			} else {
				nf.add, nf.del = append(nf.add, a), append(nf.del, dl)
			}
			if a, err := control.add(p); err != nil {
				ctl.errors++
				ctl.firstErr = err.Error()
				_, _ = control.del(p)
			} else if dl, err := control.del(p); err != nil {
				ctl.errors++
				ctl.firstErr = err.Error()
			} else {
				ctl.add, ctl.del = append(ctl.add, a), append(ctl.del, dl)
			}
			for j := range drivers {
				k := (p + j) % len(drivers)
				d, s := drivers[k], lv[k]
				id := fmt.Sprintf("probe-%d-%d", level, p)
				a, err := d.add(id, probe[k])
				if err != nil {
					s.errors++
					s.firstErr = err.Error()
					_, _ = d.del(id, probe[k])
					continue
				}
				dl, err := d.del(id, probe[k])
				if err != nil {
					s.errors++
					s.firstErr = err.Error()
					continue
				}
				s.add, s.del = append(s.add, a), append(s.del, dl)
			}
		}
		for k, d := range drivers {
			if d.plugin != "vethroute" || peer == nil {
				continue
			}
			for range probes {
				var took time.Duration
				err := d.node.Do(func() error {
					t0 := time.Now()
					_, err := noderoutes.Ensure(routing.RouteProtocol, noderoutes.FromCNI([]*types.Route{peer}))
					took = time.Since(t0)
					return err
				})
				if err != nil {
					return nil, fmt.Errorf("noderoutes.Ensure at %d containers: %w", level, err)
				}
				lv[k].hostRoutes = append(lv[k].hostRoutes, took)
			}
		}
		if trace {
			for k, d := range drivers {
				t, err := traceNetlink(d, fmt.Sprintf("trace-%d", level), probe[k])
				if err != nil {
					progress("strace at density " + fmt.Sprint(level) + ": " + err.Error())
					continue
				}
				lv[k].trace = t
			}
		}
	}

	for k, d := range drivers {
		wall, errs, _ := storm(conts[k], drainWorkers, func(i int, c ns.NetNS) error { _, err := d.del(fillID(i), c); return err })
		res.drain[d.name], res.drainErrs[d.name] = wall, errs
	}
	progress("density: nodes drained")
	t0 := time.Now()
	for k := range conts {
		if k == 0 {
			conts[k] = append(conts[k], floorCont)
		}
		for _, c := range append(conts[k], probe[k]) {
			if err := l.removeNS(c); err != nil {
				return nil, err
			}
			res.nsCount++
		}
	}
	res.nsRemove = time.Since(t0)
	res.total = time.Since(start)
	return res, nil
}

// peerRoute is the router route toward the other node's pod subnet.
func peerRoute(pc pluginConf) *types.Route {
	_, dst, err := net.ParseCIDR(pc.peerSubnet)
	if err != nil {
		return nil
	}
	return &types.Route{Dst: *dst, GW: net.ParseIP(pc.peerGW)}
}
