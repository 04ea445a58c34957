package main

import (
	"fmt"
	"net"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vethroute/vethroute/internal/testutil"
	"github.com/vethroute/vethroute/pkg/noderoutes"
	"github.com/vethroute/vethroute/pkg/routing"
	"github.com/vethroute/vethroute/test/bench/floor"
)

// cycler is one way of attaching and detaching a container: a plugin through
// libcni, or the floor in-process or exec'd.
type cycler struct {
	name string
	add  func(i int) (time.Duration, error)
	del  func(i int) (time.Duration, error)
}

// cycleStats are the latencies of sequential ADD+DEL cycles.
type cycleStats struct {
	name            string
	add, del, cycle durations
	errors          int
	firstErr        string
}

// pluginCycler drives a plugin through libcni with a fresh container ID per
// cycle, as a node sees pods come and go, in one reused container netns.
func pluginCycler(d *driver, cont ns.NetNS, prefix string) cycler {
	id := func(i int) string { return fmt.Sprintf("%s-%d", prefix, i) }
	return cycler{
		name: d.name,
		add:  func(i int) (time.Duration, error) { return d.add(id(i), cont) },
		del:  func(i int) (time.Duration, error) { return d.del(id(i), cont) },
	}
}

// settlePause follows the settling deletion: that deletion's own RCU
// callbacks are queued as it returns, and the next cycler's deletion would
// wait for them in its rcu_barrier().
const settlePause = 10 * time.Millisecond

// newSettler returns a function that creates and deletes a veth pair in a
// namespace of its own, then pauses. Deleting a device ends in
// rcu_barrier(), which cannot return before a barrier already running
// (another deletion's, such as a reaper's) has, so once the function returns
// the kernel has no deletion in flight.
func (l *lab) newSettler() (func() error, error) {
	scratch, err := l.newNS("settle")
	if err != nil {
		return nil, err
	}
	h, err := netlink.NewHandleAt(netns.NsHandle(scratch.Fd()), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink in %s: %w", scratch.Path(), err)
	}
	l.onClose(h.Close)
	return func() error {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = "settle0"
		veth := &netlink.Veth{LinkAttrs: attrs, PeerName: "settle1"}
		if err := h.LinkAdd(veth); err != nil {
			return fmt.Errorf("create settle0: %w", err)
		}
		if err := h.LinkDel(veth); err != nil {
			return fmt.Errorf("delete settle0: %w", err)
		}
		time.Sleep(settlePause)
		return nil
	}, nil
}

// floorRig is the node on which the floor runs.
type floorRig struct {
	node *testutil.Node
	bin  string
	cont ns.NetNS
	spec floor.Spec
	// reaper, when set, is the socket of startFloorReaper on node, to
	// which the exec'd floor's DEL hands the deletion.
	reaper string
}

func (l *lab) newFloorRig() (*floorRig, error) {
	node, err := l.newNode("floor", false)
	if err != nil {
		return nil, err
	}
	cont, err := l.newNS("floorc")
	if err != nil {
		return nil, err
	}
	return &floorRig{node: node, bin: l.binDir + "/floorplugin", cont: cont, spec: floor.Spec{
		HostName: "flr0", IfName: "eth0", MTU: 1500,
		Addr:    &net.IPNet{IP: net.ParseIP("10.100.0.5").To4(), Mask: net.CIDRMask(20, 32)},
		Gateway: net.ParseIP("10.100.15.254").To4(),
	}}, nil
}

// inProcess is the floor as a function call inside the node's namespace.
func (f *floorRig) inProcess() cycler {
	timed := func(op func() error) (time.Duration, error) {
		var took time.Duration
		err := f.node.Do(func() error {
			start := time.Now()
			err := op()
			took = time.Since(start)
			return err
		})
		return took, err
	}
	return cycler{
		name: "floor (in-process)",
		add: func(int) (time.Duration, error) {
			return timed(func() error { return floor.Attach(f.cont.Path(), f.spec) })
		},
		del: func(int) (time.Duration, error) { return timed(func() error { return floor.Detach(f.spec.HostName) }) },
	}
}

// env is floorplugin's environment for command.
func (f *floorRig) env(command string) []string {
	env := []string{"CNI_COMMAND=" + command, "CNI_NETNS=" + f.cont.Path(), "CNI_IFNAME=" + f.spec.IfName,
		"FLOOR_HOST=" + f.spec.HostName, "FLOOR_ADDR=" + f.spec.Addr.String(), "FLOOR_GW=" + f.spec.Gateway.String()}
	if f.reaper != "" {
		env = append(env, "FLOOR_REAPER="+f.reaper)
	}
	return env
}

// exec is the floor as a minimal static binary executed directly: the cost
// of starting any Go plugin process plus the floor's netlink work.
func (f *floorRig) exec() cycler {
	run := func(command string) (time.Duration, error) {
		r, err := execIn(f.node, f.bin, nil, f.env(command), nil)
		return r.wall, err
	}
	name := nameFloorExec
	if f.reaper != "" {
		name = nameFloorReaped
	}
	return cycler{
		name: name,
		add:  func(int) (time.Duration, error) { return run("ADD") },
		del:  func(int) (time.Duration, error) { return run("DEL") },
	}
}

// runSequential runs n ADD+DEL cycles of every cycler, interleaved (cycle i
// of each before cycle i+1 of any, starting with a different one each time)
// so that load from elsewhere on the machine hits all of them alike. After
// each cycle, untimed, settle waits out the kernel's deferred work (a
// reaper's deletion goes on after DEL returns), so that no cycler pays for
// the one before it.
func runSequential(cyclers []cycler, n int, settle func() error, progress func(string)) []*cycleStats {
	stats := make([]*cycleStats, len(cyclers))
	for i, c := range cyclers {
		stats[i] = &cycleStats{name: c.name}
	}
	for i := range n {
		for k := range cyclers {
			j := (i + k) % len(cyclers)
			c, s := cyclers[j], stats[j]
			a, err := c.add(i)
			if err != nil {
				s.fail(err)
				// Undo whatever half of the attachment exists, so the next
				// cycle starts clean; its error is already counted.
				_, _ = c.del(i)
				continue
			}
			d, err := c.del(i)
			if err != nil {
				s.fail(err)
				continue
			}
			s.add, s.del, s.cycle = append(s.add, a), append(s.del, d), append(s.cycle, a+d)
			if err := settle(); err != nil {
				s.fail(fmt.Errorf("settle after cycle %d: %w", i, err))
			}
		}
		if (i+1)%50 == 0 {
			progress(fmt.Sprintf("sequential: %d/%d cycles", i+1, n))
		}
	}
	return stats
}

func (s *cycleStats) fail(err error) {
	s.errors++
	if s.firstErr == "" {
		s.firstErr = err.Error()
	}
}

// directCycler runs the plugin binary itself, without libcni, as section 4
// does: compared with the libcni cycler it shows the runtime side's share,
// compared with the exec'd floor what the plugin does beyond starting.
func directCycler(d *driver, cont ns.NetNS) cycler {
	id := func(i int) string { return fmt.Sprintf("direct-%d", i) }
	run := func(command string, i int) (time.Duration, error) {
		r, err := d.exec(command, id(i), cont)
		return r.wall, err
	}
	return cycler{
		name: nameDirect,
		add:  func(i int) (time.Duration, error) { return run("ADD", i) },
		del:  func(i int) (time.Duration, error) { return run("DEL", i) },
	}
}

// newRoutingRig returns a cycler that calls vethroute's routing package
// in-process on a node of its own: Setup and noderoutes.Ensure for ADD,
// Teardown for DEL; what the plugin does without exec and without IPAM.
func (l *lab) newRoutingRig(pc pluginConf) (cycler, error) {
	node, err := l.newNode("inproc", true)
	if err != nil {
		return cycler{}, err
	}
	cont, err := l.newNS("inprocc")
	if err != nil {
		return cycler{}, err
	}
	_, sub, err := net.ParseCIDR(pc.subnet)
	if err != nil {
		return cycler{}, err
	}
	addr := routing.Address{IPNet: net.IPNet{IP: net.ParseIP(pc.rangeStart).To4(), Mask: sub.Mask}, Gateway: net.ParseIP(pc.gateway).To4()}
	_, def, _ := net.ParseCIDR("0.0.0.0/0")
	peer := peerRoute(pc)
	att := func(i int) *routing.Attachment {
		return &routing.Attachment{Network: "bench", ContainerID: fmt.Sprintf("inproc-%d", i), IfName: "eth0",
			NetNS: cont.Path(), MTU: 1500, Addresses: []routing.Address{addr}, Routes: []*types.Route{{Dst: *def}}}
	}
	timed := func(op func() error) (time.Duration, error) {
		var took time.Duration
		err := node.Do(func() error {
			start := time.Now()
			err := op()
			took = time.Since(start)
			return err
		})
		return took, err
	}
	return cycler{
		name: nameRouting,
		add: func(i int) (time.Duration, error) {
			return timed(func() error {
				if _, err := routing.Setup(att(i)); err != nil {
					return err
				}
				_, err := noderoutes.Ensure(routing.RouteProtocol, noderoutes.FromCNI([]*types.Route{peer}))
				return err
			})
		},
		del: func(i int) (time.Duration, error) {
			return timed(func() error { a := att(i); return routing.Teardown(a.Network, a.ContainerID, a.IfName) })
		},
	}, nil
}
