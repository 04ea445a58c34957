package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/vethroute/vethroute/internal/testutil"
)

// cleanups runs registered functions once, last registered first: on
// return, on a signal and on the run's timeout alike.
type cleanups struct {
	mu   sync.Mutex
	fns  []func()
	done bool
}

func (c *cleanups) add(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		f()
		return
	}
	c.fns = append(c.fns, f)
}

func (c *cleanups) run() {
	c.mu.Lock()
	fns := c.fns
	c.fns, c.done = nil, true
	c.mu.Unlock()
	for i := len(fns) - 1; i >= 0; i-- {
		fns[i]()
	}
}

// scope is the cleanups of one size of cluster, run when that size is
// measured; the run's own cleanups run them too if it is interrupted.
type scope struct {
	cleanups
}

func newScope(parent *cleanups) *scope {
	s := &scope{}
	parent.add(s.run)
	return s
}

// newNodeNS creates the agent's node namespace, named with the run's
// prefix, with its uplink: a veth pair whose end up0 carries the first
// address of both uplink subnets, so every simulated node's InternalIP is
// an on-link gateway.
func newNodeNS(s *scope, name string) (ns.NetNS, error) {
	n, err := testutil.CreateNamedNS(name)
	if err != nil {
		return nil, err
	}
	s.add(func() {
		if err := testutil.RemoveNamedNS(n); err != nil {
			fmt.Fprintln(os.Stderr, "benchscale: cleanup:", err)
		}
	})
	err = withHandle(n, func(h *netlink.Handle) error {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = "up0"
		if err := h.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "up1"}); err != nil {
			return fmt.Errorf("create uplink: %w", err)
		}
		up0, err := h.LinkByName("up0")
		if err != nil {
			return err
		}
		v4, v6 := internalIPs(0)
		for _, a := range []string{fmt.Sprintf("%s/%d", v4, uplinkV4.Bits()), fmt.Sprintf("%s/%d", v6, uplinkV6.Bits())} {
			addr, err := netlink.ParseAddr(a)
			if err != nil {
				return err
			}
			addr.Flags = syscall.IFA_F_NODAD
			if err := h.AddrAdd(up0, addr); err != nil {
				return fmt.Errorf("address %s on up0: %w", a, err)
			}
		}
		for _, name := range []string{"lo", "up0", "up1"} {
			l, err := h.LinkByName(name)
			if err != nil {
				return err
			}
			if err := h.LinkSetUp(l); err != nil {
				return fmt.Errorf("set %s up: %w", name, err)
			}
		}
		return nil
	})
	return n, err
}

func withHandle(n ns.NetNS, f func(*netlink.Handle) error) error {
	h, err := netlink.NewHandleAt(netns.NsHandle(n.Fd()))
	if err != nil {
		return fmt.Errorf("open netlink in %s: %w", n.Path(), err)
	}
	defer h.Close()
	return f(h)
}

// countingProxy relays connections made to addr inside the node namespace
// to target (the API server on the machine's loopback) and counts the
// bytes that come back from it: what the agent receives from the API.
type countingProxy struct {
	received atomic.Int64
}

func startProxy(s *scope, n ns.NetNS, addr, target string) (*countingProxy, error) {
	var ln net.Listener
	if err := n.Do(func(ns.NetNS) (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		return nil, fmt.Errorf("listen on %s in %s: %w", addr, n.Path(), err)
	}
	p := &countingProxy{}
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	var wg sync.WaitGroup
	s.add(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		conns = nil
		mu.Unlock()
		wg.Wait()
	})
	track := func(c net.Conn) bool {
		mu.Lock()
		defer mu.Unlock()
		if conns == nil {
			return false
		}
		conns[c] = true
		return true
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			if !track(in) || !track(out) {
				in.Close()
				out.Close()
				return
			}
			wg.Add(2)
			go func() {
				defer wg.Done()
				_, _ = io.Copy(out, in)
				out.Close()
			}()
			go func() {
				defer wg.Done()
				_, _ = io.Copy(countingWriter{in, &p.received}, out)
				in.Close()
			}()
		}
	}()
	return p, nil
}

type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n.Add(int64(n))
	return n, err
}

// agentProc is vethroute-agent running in the node namespace.
type agentProc struct {
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
}

// startAgent runs bin in n with args, its environment this process's plus
// env.
func startAgent(s *scope, n ns.NetNS, bin, dir string, env []string, args ...string) (*agentProc, error) {
	logPath := filepath.Join(dir, "agent.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("nsenter", append([]string{"--net=" + n.Path(), bin}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	a := &agentProc{cmd: cmd, logPath: logPath, done: make(chan struct{})}
	if err := testutil.StartTied(cmd, func(error) { logf.Close(); close(a.done) }); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start agent: %w", err)
	}
	s.add(a.stop)
	return a, nil
}

func (a *agentProc) exited() bool {
	select {
	case <-a.done:
		return true
	default:
		return false
	}
}

func (a *agentProc) stop() {
	if a.exited() {
		return
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(15 * time.Second):
		_ = syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL)
		<-a.done
	}
}

func (a *agentProc) logTail() string {
	b, _ := os.ReadFile(a.logPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// procSample is the agent's resource use as /proc shows it.
type procSample struct {
	rssKiB, hwmKiB int64
	// anonKiB and fileKiB split rssKiB: the process's own memory, and the
	// pages of files it maps (its binary's, shared with the page cache).
	anonKiB, fileKiB int64
	cpu              time.Duration // utime + stime
}

// clockTick is USER_HZ, the unit of /proc/<pid>/stat's times on Linux.
const clockTick = 100

func sampleProc(pid int) (procSample, error) {
	var s procSample
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmRSS":
			s.rssKiB = n
		case "VmHWM":
			s.hwmKiB = n
		case "RssAnon":
			s.anonKiB = n
		case "RssFile":
			s.fileKiB = n
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// The command name may hold spaces; fields count from after its ')'.
	rest := string(stat)
	if i := strings.LastIndexByte(rest, ')'); i >= 0 {
		rest = rest[i+1:]
	}
	f := strings.Fields(rest)
	if len(f) < 13 {
		return s, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	s.cpu = time.Duration(ut+st) * time.Second / clockTick
	return s, nil
}
