package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vethroute/vethroute/internal/testutil"
	"github.com/vethroute/vethroute/pkg/noderoutes"
	"github.com/vethroute/vethroute/pkg/routing"
)

// nlCounts counts what one plugin invocation (and its children) asked the
// kernel, from an strace of it.
type nlCounts struct {
	// requests counts netlink requests by message type, " dump" appended
	// for dump requests (whose reply grows with what the node holds).
	requests  map[string]int
	total     int
	dumps     int
	recvBytes int64
	setns     int
	execs     int
	// opens counts openat calls: files read or written, such as the
	// reservation records of an allocator that scans its store.
	opens int
}

// netlinkTrace is an strace'd ADD and DEL.
type netlinkTrace struct{ add, del *nlCounts }

var rtmNames = map[int]string{
	16: "RTM_NEWLINK", 17: "RTM_DELLINK", 18: "RTM_GETLINK", 19: "RTM_SETLINK",
	20: "RTM_NEWADDR", 21: "RTM_DELADDR", 22: "RTM_GETADDR",
	24: "RTM_NEWROUTE", 25: "RTM_DELROUTE", 26: "RTM_GETROUTE",
	28: "RTM_NEWNEIGH", 29: "RTM_DELNEIGH", 30: "RTM_GETNEIGH",
	32: "RTM_NEWRULE", 33: "RTM_DELRULE", 34: "RTM_GETRULE",
	88: "RTM_NEWNSID", 90: "RTM_GETNSID",
}

var (
	reNlType  = regexp.MustCompile(`nlmsg_type=(0x[0-9a-f]+|[A-Z_]+)`)
	reNlFlags = regexp.MustCompile(`nlmsg_flags=([A-Z_|0-9a-fx]+)`)
	reRet     = regexp.MustCompile(`= (\d+)$`)
	rePid     = regexp.MustCompile(`^(\d+)\s+`)
)

// parseStrace counts netlink requests, bytes received from netlink,
// namespace switches and execs in the output of `strace -f -yy`.
func parseStrace(path string) (*nlCounts, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	c := &nlCounts{requests: map[string]int{}}
	pendingRecv := map[string]bool{} // pid -> an unfinished netlink recv
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		line := sc.Text()
		pid := ""
		if m := rePid.FindStringSubmatch(line); m != nil {
			pid = m[1]
		}
		body := strings.TrimSpace(strings.TrimPrefix(line, pid))
		switch {
		case strings.HasPrefix(body, "execve("):
			if !strings.Contains(body, "= -1") {
				c.execs++
			}
		case strings.HasPrefix(body, "setns("):
			c.setns++
		case strings.HasPrefix(body, "openat("):
			c.opens++
		case strings.HasPrefix(body, "sendto(") || strings.HasPrefix(body, "sendmsg("):
			if !strings.Contains(body, "NETLINK") {
				continue
			}
			m := reNlType.FindStringSubmatch(body)
			if m == nil {
				continue
			}
			name := m[1]
			if v, err := strconv.ParseInt(strings.TrimPrefix(m[1], "0x"), 16, 32); err == nil && strings.HasPrefix(m[1], "0x") {
				if n, ok := rtmNames[int(v)]; ok {
					name = n
				}
			}
			flags := ""
			if fm := reNlFlags.FindStringSubmatch(body); fm != nil {
				flags = fm[1]
			}
			if strings.Contains(name, "GET") && isDump(flags) {
				name += " dump"
				c.dumps++
			}
			c.requests[name]++
			c.total++
		case strings.HasPrefix(body, "recvfrom(") || strings.HasPrefix(body, "recvmsg("):
			if !strings.Contains(body, "NETLINK") {
				continue
			}
			if strings.Contains(body, "<unfinished") {
				pendingRecv[pid] = true
				continue
			}
			if m := reRet.FindStringSubmatch(body); m != nil {
				n, _ := strconv.ParseInt(m[1], 10, 64)
				c.recvBytes += n
			}
		case strings.HasPrefix(body, "<... recv"):
			if pendingRecv[pid] {
				delete(pendingRecv, pid)
				if m := reRet.FindStringSubmatch(body); m != nil {
					n, _ := strconv.ParseInt(m[1], 10, 64)
					c.recvBytes += n
				}
			}
		}
	}
	return c, sc.Err()
}

// isDump reports whether netlink flags ask for a dump (NLM_F_ROOT|NLM_F_MATCH).
func isDump(flags string) bool {
	if strings.Contains(flags, "NLM_F_DUMP") || (strings.Contains(flags, "NLM_F_ROOT") && strings.Contains(flags, "NLM_F_MATCH")) {
		return true
	}
	for _, part := range strings.Split(flags, "|") {
		if v, err := strconv.ParseUint(strings.TrimPrefix(part, "0x"), 16, 32); err == nil && strings.HasPrefix(part, "0x") && v&0x300 == 0x300 {
			return true
		}
	}
	return false
}

// straceArgs traces what parseStrace reads, following every thread and child.
var straceArgs = []string{"-f", "-qq", "-yy", "-e", "trace=sendto,sendmsg,recvfrom,recvmsg,setns,execve,openat"}

// traceNetlink straces one direct ADD and one DEL of d.
func traceNetlink(d *driver, cid string, cont ns.NetNS) (*netlinkTrace, error) {
	if _, err := exec.LookPath("strace"); err != nil {
		return nil, fmt.Errorf("strace is not installed")
	}
	dir, err := os.MkdirTemp("", "vethroute-strace-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	out := &netlinkTrace{}
	for _, command := range []string{"ADD", "DEL"} {
		file := filepath.Join(dir, command)
		args := append(append([]string(nil), straceArgs...), "-o", file, d.bin)
		if _, err := execIn(d.node, "strace", args, d.cniEnv(command, cid, cont), d.netconf); err != nil {
			return nil, fmt.Errorf("strace %s %s: %w", d.name, command, err)
		}
		c, err := parseStrace(file)
		if err != nil {
			return nil, err
		}
		if command == "ADD" {
			out.add = c
		} else {
			out.del = c
		}
	}
	return out, nil
}

// syscallRow is one line of `strace -c`.
type syscallRow struct {
	name          string
	calls, errors int
	seconds       float64
}

// syscallSummary is `strace -c -f` of one ADD.
type syscallSummary struct {
	rows  []syscallRow
	total int
}

// straceSummary runs one ADD of d under `strace -c -f` (and an untraced DEL).
func straceSummary(d *driver, cid string, cont ns.NetNS) (*syscallSummary, error) {
	if _, err := exec.LookPath("strace"); err != nil {
		return nil, fmt.Errorf("strace is not installed")
	}
	f, err := os.CreateTemp("", "vethroute-strace-c-")
	if err != nil {
		return nil, err
	}
	f.Close()
	defer os.Remove(f.Name())
	args := []string{"-c", "-f", "-o", f.Name(), d.bin}
	if _, err := execIn(d.node, "strace", args, d.cniEnv("ADD", cid, cont), d.netconf); err != nil {
		return nil, err
	}
	if _, err := d.exec("DEL", cid, cont); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(f.Name())
	if err != nil {
		return nil, err
	}
	s := &syscallSummary{}
	for _, line := range strings.Split(string(b), "\n") {
		fs := strings.Fields(line)
		if len(fs) < 5 || strings.HasPrefix(line, "%") || strings.HasPrefix(line, "-") {
			continue
		}
		secs, err1 := strconv.ParseFloat(fs[1], 64)
		calls, err2 := strconv.Atoi(fs[3])
		if err1 != nil || err2 != nil {
			continue
		}
		row := syscallRow{name: fs[len(fs)-1], calls: calls, seconds: secs}
		if len(fs) == 6 {
			row.errors, _ = strconv.Atoi(fs[4])
		}
		if row.name == "total" {
			s.total = calls
			continue
		}
		s.rows = append(s.rows, row)
	}
	sort.Slice(s.rows, func(i, j int) bool { return s.rows[i].calls > s.rows[j].calls })
	return s, nil
}

// startup is what starting a binary costs, from VERSION invocations.
type startup struct {
	name      string
	sizeBytes int64
	wall      durations
	rss       []int64
	cpu       durations
	// initClock is the sum of init() clock times GODEBUG=inittrace reports,
	// initTop the most expensive packages.
	initClock time.Duration
	initBytes int64
	initTop   []initCost
	// mainAt is when, after the process started, the last init() began:
	// runtime start-up, loading the binary's pages and every init(), i.e.
	// roughly when main() runs (median of the inittrace runs).
	mainAt time.Duration
}

type initCost struct {
	pkg   string
	clock time.Duration
	bytes int64
}

var reInit = regexp.MustCompile(`^init (\S+) @([0-9.]+) ms, ([0-9.]+) ms clock, (\d+) bytes, (\d+) allocs`)

// measureStartup runs bin VERSION n times inside node, once more under GNU
// time for the peak RSS, and n times with GODEBUG=inittrace=1; the init()
// figures are those of the run with the median init() total.
func measureStartup(node *testutil.Node, name, bin string, n int) (*startup, error) {
	st := &startup{name: name}
	if fi, err := os.Stat(bin); err == nil {
		st.sizeBytes = fi.Size()
	}
	stdin := []byte(`{"cniVersion":"1.1.0"}`)
	env := []string{"CNI_COMMAND=VERSION"}
	for range n {
		r, err := execIn(node, bin, nil, env, stdin)
		if err != nil {
			return nil, err
		}
		st.wall = append(st.wall, r.wall)
		st.cpu = append(st.cpu, r.user+r.sys)
	}
	if rss, err := peakRSS(node, bin, env, stdin); err == nil {
		st.rss = append(st.rss, rss)
	}
	var runs []*startup
	var mains durations
	for range n {
		r, err := execIn(node, bin, nil, append(env, "GODEBUG=inittrace=1"), stdin)
		if err != nil {
			return nil, err
		}
		run := &startup{}
		for _, line := range strings.Split(string(r.stderr), "\n") {
			m := reInit.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			at, _ := strconv.ParseFloat(m[2], 64)
			clock, _ := strconv.ParseFloat(m[3], 64)
			bytes, _ := strconv.ParseInt(m[4], 10, 64)
			c := initCost{pkg: m[1], clock: time.Duration(clock * float64(time.Millisecond)), bytes: bytes}
			run.initClock += c.clock
			run.initBytes += bytes
			run.initTop = append(run.initTop, c)
			run.mainAt = max(run.mainAt, time.Duration((at+clock)*float64(time.Millisecond)))
		}
		runs = append(runs, run)
		mains = append(mains, run.mainAt)
	}
	sort.Slice(runs, func(i, j int) bool { return runs[i].initClock < runs[j].initClock })
	mid := runs[len(runs)/2]
	st.initClock, st.initBytes, st.initTop, st.mainAt = mid.initClock, mid.initBytes, mid.initTop, mains.median()
	sort.Slice(st.initTop, func(i, j int) bool { return st.initTop[i].clock > st.initTop[j].clock })
	if len(st.initTop) > 5 {
		st.initTop = st.initTop[:5]
	}
	return st, nil
}

// inProcessProfile is vethroute's routing work (Setup, noderoutes.Ensure,
// Teardown) called in-process, with a CPU profile.
type inProcessProfile struct {
	cycle durations
	top   string
}

// profileInProcess runs n cycles of routing.Setup + noderoutes.Ensure +
// Teardown in a node of its own under the CPU profiler and returns the
// cycle latencies and `go tool pprof -top` of the profile.
func profileInProcess(l *lab, n int, pc pluginConf) (*inProcessProfile, error) {
	node, err := l.newNode("prof", true)
	if err != nil {
		return nil, err
	}
	cont, err := l.newNS("profc")
	if err != nil {
		return nil, err
	}
	_, sub, _ := net.ParseCIDR(pc.subnet)
	addr := net.IPNet{IP: net.ParseIP(pc.rangeStart).To4(), Mask: sub.Mask}
	_, def, _ := net.ParseCIDR("0.0.0.0/0")
	peer := peerRoute(pc)
	file := filepath.Join(l.tmp, "setup.pprof")
	f, err := os.Create(file)
	if err != nil {
		return nil, err
	}
	out := &inProcessProfile{}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	for i := range n {
		att := &routing.Attachment{Network: "bench", ContainerID: fmt.Sprintf("prof-%d", i), IfName: "eth0",
			NetNS: cont.Path(), MTU: 1500, Addresses: []routing.Address{{IPNet: addr, Gateway: net.ParseIP(pc.gateway).To4()}},
			Routes: []*types.Route{{Dst: *def}}}
		var took time.Duration
		err := node.Do(func() error {
			t0 := time.Now()
			if _, err := routing.Setup(att); err != nil {
				return err
			}
			if _, err := noderoutes.Ensure(routing.RouteProtocol, noderoutes.FromCNI([]*types.Route{peer})); err != nil {
				return err
			}
			if err := routing.Teardown(att.Network, att.ContainerID, att.IfName); err != nil {
				return err
			}
			took = time.Since(t0)
			return nil
		})
		if err != nil {
			pprof.StopCPUProfile()
			f.Close()
			return nil, fmt.Errorf("in-process cycle %d: %w", i, err)
		}
		out.cycle = append(out.cycle, took)
	}
	pprof.StopCPUProfile()
	if err := f.Close(); err != nil {
		return nil, err
	}
	cmd := exec.Command("go", "tool", "pprof", "-top", "-nodecount=18", file)
	cmd.Dir = l.root
	b, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("go tool pprof: %v\n%s", err, b)
	}
	out.top = string(b)
	return out, nil
}
