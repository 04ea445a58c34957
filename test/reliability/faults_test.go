package reliability

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vethroute/vethroute/internal/testutil"
	"github.com/vethroute/vethroute/pkg/routing"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Dual stack, so a reservation is two address records and an ADD has a
// window where one is written and the other is not. The range is small so
// that addresses are reused often and a reused one would meet whatever its
// previous owner left behind.
const (
	faultRanges = `[[{"subnet": "10.77.0.0/24", "rangeStart": "10.77.0.1", "rangeEnd": "10.77.0.12", "gateway": "10.77.0.254"}],
                  [{"subnet": "fd00:77::/64", "rangeStart": "fd00:77::10", "rangeEnd": "fd00:77::1b", "gateway": "fd00:77::1"}]]`
	faultRounds     = 120
	faultContainers = 6
)

var faultGateways = []string{"10.77.0.254/32", "fd00:77::1/128"}

// The states a kill inside the IPAM's writes leaves, read from what the
// store holds: a reservation's owner record without all its address
// records (ADD), or a release that removed some of them (DEL).
const (
	stageOwnerNoAddress = "IPAM write: owner record, no address record"
	stageSomeAddresses  = "IPAM write: some address records"
	stagePartiallyFreed = "release: some address records removed"
)

// killer decides the instant a plugin process is SIGKILLed.
type killer struct {
	name string
	// arm starts watching (before the process starts) and calls fire at the
	// instant to kill; it returns a function that stops watching.
	arm func(f *fixture, cid string, fire func()) (disarm func())
	// delay, when arm is nil, is how long after the start to kill.
	delay func(r *rand.Rand) time.Duration
	// store: arm fires on a write in the IPAM's store.
	store bool
}

// TestKillAtRandomInstants SIGKILLs the plugin during ADD and DEL, then
// recovers as a runtime does (DEL, a retried ADD, GC) and checks after
// every round that nothing leaked, no address is held twice and the store
// is readable; at the end, that no lock is left held.
//
// Kill instants are uniformly random between 0 and the measured duration of
// an ADD (or DEL), as the task requires. Because the windows that matter
// most (between the owner and the address records of a reservation;
// between creating the veth and configuring it) are a few microseconds to a
// millisecond wide, a share of the kills is also triggered by the event
// that opens the window: inotify on the store's directories, netlink on the
// node's links. No hook in the plugin is needed. The test reports the state
// each kill left (the "stage") so the coverage is visible, and fails unless
// kills landed in ADD, in DEL, and inside the IPAM's writes of each.
func TestKillAtRandomInstants(t *testing.T) {
	testutil.RequireRoot(t)
	r := newRand(t)
	f := newFixture(t, faultRanges, "")
	containers := make([]ns.NetNS, faultContainers)
	for i := range containers {
		containers[i] = testutil.NewNS(t)
	}

	addDur, delDur := f.measure(containers[0], 5)
	t.Logf("measured (max of 5): ADD %s, DEL %s", addDur.Round(time.Microsecond), delDur.Round(time.Microsecond))
	uniform := func(d time.Duration) func(*rand.Rand) time.Duration {
		return func(r *rand.Rand) time.Duration { return time.Duration(r.Int64N(int64(d) + 1)) }
	}
	addKillers := []killer{
		{name: "uniform", delay: uniform(addDur)},
		{name: "uniform", delay: uniform(addDur)},
		{name: "on owner record", store: true, arm: func(f *fixture, _ string, fire func()) func() {
			return watchDir(f.t, filepath.Join(f.storeDir(), "owners"), unix.IN_CREATE, fire)
		}},
		{name: "on address record", store: true, arm: func(f *fixture, _ string, fire func()) func() {
			return watchDir(f.t, filepath.Join(f.storeDir(), "ips"), unix.IN_CREATE, fire)
		}},
		{name: "on veth created", arm: func(f *fixture, cid string, fire func()) func() {
			return watchLink(f.t, f.node.NS, routing.HostVethName(cid, "eth0"), unix.RTM_NEWLINK, anyLink, fire)
		}},
		{name: "on veth aliased", arm: func(f *fixture, cid string, fire func()) func() {
			return watchLink(f.t, f.node.NS, routing.HostVethName(cid, "eth0"), unix.RTM_NEWLINK,
				func(l netlink.Link) bool { return l.Attrs().Alias != "" }, fire)
		}},
	}
	delKillers := []killer{
		{name: "uniform", delay: uniform(delDur)},
		{name: "uniform", delay: uniform(delDur)},
		{name: "on veth deleted", arm: func(f *fixture, cid string, fire func()) func() {
			return watchLink(f.t, f.node.NS, routing.HostVethName(cid, "eth0"), unix.RTM_DELLINK, anyLink, fire)
		}},
		{name: "on address released", store: true, arm: func(f *fixture, _ string, fire func()) func() {
			return watchDir(f.t, filepath.Join(f.storeDir(), "ips"), unix.IN_DELETE, fire)
		}},
	}

	live := map[string]*attachment{}
	stats := map[string]int{}
	// kills and completed count, per verb, the processes the kill ended and
	// those that had already finished by themselves; ipamKills, per verb,
	// the kills that landed inside the IPAM's writes.
	kills, completed, ipamKills := map[string]int{}, map[string]int{}, map[string]int{}
	// pick draws the killer for verb. Once half the rounds have gone by
	// with no kill inside the IPAM's writes for verb, it draws among the
	// store-triggered ones alone: those windows are microseconds wide, and
	// a run that never reached them would leave that recovery untested.
	pick := func(verb string, ks []killer, round int) killer {
		if ipamKills[verb] == 0 && round >= faultRounds/2 {
			if st := slices.DeleteFunc(slices.Clone(ks), func(k killer) bool { return !k.store }); len(st) > 0 {
				ks = st
			}
		}
		return ks[r.IntN(len(ks))]
	}
	free := func() []ns.NetNS {
		var out []ns.NetNS
		for _, c := range containers {
			if !slices.ContainsFunc(mapValues(live), func(a *attachment) bool { return a.ns == c }) {
				out = append(out, c)
			}
		}
		return out
	}
	// admit records a successful ADD, failing on an address some other
	// live attachment holds: the duplicate this whole test hunts for.
	admit := func(cid string, c ns.NetNS, ips []net.IP) {
		for _, a := range live {
			for _, ip := range ips {
				if a.cid != cid && slices.ContainsFunc(a.ips, ip.Equal) {
					t.Fatalf("ADD %s got %s, which live attachment %s holds", cid, ip, a.cid)
				}
			}
		}
		live[cid] = &attachment{cid: cid, ns: c, ips: ips}
	}

	for round := range faultRounds {
		// A killed DEL of a live attachment, every other round or when
		// every container is taken.
		if len(live) > 0 && (round%2 == 1 || len(free()) == 0) {
			keys := sortedKeys(live)
			a := live[keys[r.IntN(len(keys))]]
			k := pick("DEL", delKillers, round)
			o := f.killDuring(r, k, f.inv("DEL", a.cid, a.ns.Path()), a.cid)
			stage := "DEL completed before the kill"
			if o.Signaled {
				kills["DEL"]++
				stage = f.delStage(a)
				if stage == stagePartiallyFreed {
					ipamKills["DEL"]++
				}
			} else {
				completed["DEL"]++
				if o.ExitCode != 0 {
					t.Fatalf("round %d: DEL %s failed by itself: %s", round, a.cid, o)
				}
			}
			stats["DEL/"+k.name+": "+stage]++
			// The runtime repeats DEL until it succeeds; GC first, sometimes.
			if r.IntN(3) == 0 {
				if o := f.gc(keysExcept(live, a.cid)); o.ExitCode != 0 {
					t.Fatalf("round %d: GC after killed DEL of %s: %s", round, a.cid, o)
				}
			}
			f.mustDel(a.cid, a.ns.Path())
			delete(live, a.cid)
		}

		// A killed ADD of a new container.
		c := free()[r.IntN(len(free()))]
		cid := fmt.Sprintf("k%03d", round)
		k := pick("ADD", addKillers, round)
		o := f.killDuring(r, k, f.inv("ADD", cid, c.Path()), cid)
		var firstIPs []net.IP
		stage := "ADD completed before the kill"
		if o.Signaled {
			kills["ADD"]++
			stage = f.addStage(cid, c)
			if stage == stageOwnerNoAddress || stage == stageSomeAddresses {
				ipamKills["ADD"]++
			}
		} else {
			completed["ADD"]++
			ips, err := resultIPs(o.Stdout)
			if o.ExitCode != 0 || err != nil {
				t.Fatalf("round %d: ADD %s failed by itself: %s", round, cid, o)
			}
			firstIPs = ips
		}
		stats["ADD/"+k.name+": "+stage]++

		switch recovery := r.IntN(4); recovery {
		case 0: // the runtime gives up on the sandbox: DEL
			f.mustDel(cid, c.Path())
		case 1: // the runtime retries the same ADD
			ips := f.mustAdd(cid, c.Path())
			if firstIPs != nil && !equalIPs(ips, firstIPs) {
				t.Fatalf("round %d: retried ADD %s got %v, the completed one %v", round, cid, ips, firstIPs)
			}
			admit(cid, c, ips)
		case 2: // DEL, then ADD again
			f.mustDel(cid, c.Path())
			admit(cid, c, f.mustAdd(cid, c.Path()))
		case 3: // GC (the runtime has forgotten the sandbox), then the DEL it owes
			if o := f.gc(sortedKeys(live)); o.ExitCode != 0 {
				t.Fatalf("round %d: GC after killed ADD of %s: %s", round, cid, o)
			}
			f.mustDel(cid, c.Path())
		}
		if round%10 == 9 {
			// A periodic GC listing every live attachment must not touch any.
			if o := f.gc(sortedKeys(live)); o.ExitCode != 0 {
				t.Fatalf("round %d: periodic GC: %s", round, o)
			}
		}
		if n := f.requireConsistent(live, containers, faultGateways); n > 0 {
			t.Fatalf("round %d (%s, kill %q): %d violations", round, cid, k.name, n)
		}
	}

	// Tear everything down as a runtime would, then prove the lock is free,
	// an ADD succeeds and the node is clean.
	for _, cid := range sortedKeys(live) {
		f.mustDel(cid, live[cid].ns.Path())
		delete(live, cid)
	}
	f.requireUnlocked()
	f.mustAdd("final", containers[0].Path())
	f.mustDel("final", containers[0].Path())
	f.requireConsistent(live, containers, faultGateways)
	f.node.RequireClean(t, network)

	var lines []string
	for k, v := range stats {
		lines = append(lines, fmt.Sprintf("  %4d  %s", v, k))
	}
	sort.Strings(lines)
	t.Logf("%d rounds, each followed by a full consistency check (0 violations): ADD %d killed, %d completed before the kill; DEL %d killed, %d completed before the kill; crash states observed:\n%s",
		faultRounds, kills["ADD"], completed["ADD"], kills["DEL"], completed["DEL"], strings.Join(lines, "\n"))
	// A run whose kills all missed (every process done first, or every kill
	// before the store was touched) would pass without testing recovery.
	for _, verb := range []string{"ADD", "DEL"} {
		if kills[verb] == 0 {
			t.Errorf("no %s was killed mid-run: the kills all came after the process ended", verb)
		}
		if ipamKills[verb] == 0 {
			t.Errorf("no %s was killed inside the IPAM's writes (the states above): recovery from a half-written store went untested", verb)
		}
	}
}

// measure runs n ADD/DEL pairs and returns the longest of each.
func (f *fixture) measure(c ns.NetNS, n int) (add, del time.Duration) {
	f.t.Helper()
	for i := range n {
		cid := fmt.Sprintf("warm%d", i)
		o := f.run(f.inv("ADD", cid, c.Path()))
		if o.ExitCode != 0 {
			f.t.Fatalf("warm-up ADD: %s", o)
		}
		add = max(add, o.Duration)
		o = f.run(f.inv("DEL", cid, c.Path()))
		if o.ExitCode != 0 {
			f.t.Fatalf("warm-up DEL: %s", o)
		}
		del = max(del, o.Duration)
	}
	return add, del
}

// killDuring starts inv and SIGKILLs it at the instant k chooses.
func (f *fixture) killDuring(r *rand.Rand, k killer, inv testutil.Invocation, cid string) testutil.Outcome {
	f.t.Helper()
	var (
		mu      sync.Mutex
		proc    *testutil.Running
		pending bool
	)
	fire := func() {
		mu.Lock()
		defer mu.Unlock()
		if proc == nil {
			pending = true
			return
		}
		_ = proc.Kill()
	}
	var disarm func()
	if k.arm != nil {
		disarm = k.arm(f, cid, fire)
	}
	p, err := f.node.StartPlugin(f.bin, inv)
	if err != nil {
		f.t.Fatal(err)
	}
	mu.Lock()
	proc = p
	if pending {
		_ = p.Kill()
	}
	mu.Unlock()
	if k.arm == nil {
		time.Sleep(k.delay(r))
		_ = p.Kill()
	}
	o := p.Wait()
	if disarm != nil {
		disarm()
	}
	if o.Err != nil {
		f.t.Fatalf("wait: %v", o.Err)
	}
	return o
}

// addStage names the state a killed ADD left behind.
func (f *fixture) addStage(cid string, c ns.NetNS) string {
	f.t.Helper()
	held, owned := f.reservations()[ownerKey(cid)]
	claimed := 0
	claims := f.claims()
	for _, ip := range held {
		if claims[ip.String()] == ownerKey(cid) {
			claimed++
		}
	}
	v := f.view()
	link, hasLink := v.links[routing.HostVethName(cid, "eth0")]
	contAddrs := containerAddrs(f.t, c)
	switch {
	case !owned && !hasLink:
		return "before the reservation"
	case !owned:
		return "veth without reservation (unexpected)"
	case claimed == 0 && !hasLink:
		return stageOwnerNoAddress
	case claimed < len(held) && !hasLink:
		return stageSomeAddresses
	case !hasLink:
		return "reserved, no veth yet"
	case link.alias == "":
		return "veth created, alias not yet set"
	case len(contAddrs) == 0:
		return "veth exists, container side not configured"
	case len(link.addrs) < len(faultGateways) || len(v.routes) < len(held):
		return "container configured, node side not"
	default:
		return "fully configured"
	}
}

// delStage names the state a killed DEL left behind.
func (f *fixture) delStage(a *attachment) string {
	f.t.Helper()
	held, owned := f.reservations()[ownerKey(a.cid)]
	claims := f.claims()
	claimed := 0
	for _, ip := range held {
		if claims[ip.String()] == ownerKey(a.cid) {
			claimed++
		}
	}
	_, hasLink := f.view().links[routing.HostVethName(a.cid, "eth0")]
	switch {
	case hasLink && owned && claimed == len(held):
		return "before the teardown"
	case hasLink:
		return "veth present, reservation partly gone (unexpected)"
	case owned && claimed == len(held):
		return "veth removed, reservation held"
	case owned:
		return stagePartiallyFreed
	default:
		return "everything released"
	}
}

// containerAddrs returns eth0's global addresses in a container namespace.
func containerAddrs(t testing.TB, c ns.NetNS) []string {
	t.Helper()
	return withHandle(t, c, func(h netlinksafe.Handle) []string {
		l, err := h.LinkByName("eth0")
		if err != nil {
			return nil
		}
		addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			t.Fatalf("list container addresses: %v", err)
		}
		var out []string
		for _, a := range addrs {
			if !a.IP.IsLinkLocalUnicast() {
				out = append(out, a.IPNet.String())
			}
		}
		return out
	})
}

// watchDir calls fire at the first inotify event of mask in dir. The file
// is opened non-blocking so that Go's poller can wake the reader on close.
func watchDir(t testing.TB, dir string, mask uint32, fire func()) (stop func()) {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatalf("inotify: %v", err)
	}
	if _, err := unix.InotifyAddWatch(fd, dir, mask); err != nil {
		unix.Close(fd)
		t.Fatalf("watch %s: %v", dir, err)
	}
	file := os.NewFile(uintptr(fd), "inotify:"+dir)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		if n, err := file.Read(buf); err == nil && n >= unix.SizeofInotifyEvent {
			fire()
		}
	}()
	return func() {
		file.Close()
		<-done
	}
}

func anyLink(netlink.Link) bool { return true }

// watchLink calls fire at the first netlink message of type msgType about
// the interface name in the namespace n that match accepts.
func watchLink(t testing.TB, n ns.NetNS, name string, msgType uint16, match func(netlink.Link) bool, fire func()) (stop func()) {
	t.Helper()
	ch := make(chan netlink.LinkUpdate, 64)
	quit := make(chan struct{})
	h := netns.NsHandle(n.Fd())
	if err := netlink.LinkSubscribeWithOptions(ch, quit, netlink.LinkSubscribeOptions{Namespace: &h}); err != nil {
		t.Fatalf("subscribe to links in %s: %v", n.Path(), err)
	}
	go func() {
		fired := false
		for u := range ch {
			if !fired && u.Header.Type == msgType && u.Attrs().Name == name && match(u.Link) {
				fire()
				fired = true
			}
		}
	}()
	// The subscription notices quit only when its next message arrives
	// (its socket read blocks); it then closes ch and the reader ends.
	// Waiting for that would cost a round trip, so stop does not.
	return func() { close(quit) }
}

func mapValues[K comparable, V any](m map[K]V) []V {
	out := make([]V, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func keysExcept[V any](m map[string]V, skip string) []string {
	return slices.DeleteFunc(sortedKeys(m), func(k string) bool { return k == skip })
}
