package reaper

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vethroute/vethroute/internal/testutil"
	"github.com/vethroute/vethroute/pkg/routing"
)

// TestMain lets the test binary act as the reaper's client in a process of
// its own: the server admits a peer by the network namespace of its
// process, so a request must come from a process in the served namespace,
// as the plugin's does on a node.
func TestMain(m *testing.M) {
	if spec := os.Getenv(clientEnv); spec != "" {
		os.Exit(runClient(spec))
	}
	os.Exit(m.Run())
}

const clientEnv = "VETHROUTE_REAPER_TEST_CLIENT"

// clientSpec is what the client process does: Delete(Socket, Req), or send
// Raw as is and print the answer.
type clientSpec struct {
	Socket string
	Req    Request
	Raw    string
}

func runClient(spec string) int {
	var c clientSpec
	if err := json.Unmarshal([]byte(spec), &c); err != nil {
		fmt.Println(err)
		return 2
	}
	if c.Raw != "" {
		conn, err := net.Dial("unix", c.Socket)
		if err != nil {
			fmt.Println(err)
			return 1
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			fmt.Println(err)
			return 1
		}
		_, _, _ = conn.(*net.UnixConn).WriteMsgUnix([]byte(c.Raw), unix.UnixRights(fd), nil)
		answer, _ := io.ReadAll(io.LimitReader(conn, maxMessage))
		fmt.Print(string(answer))
		return 1
	}
	if err := Delete(c.Socket, c.Req, 5*time.Second); err != nil {
		fmt.Print(err)
		return 1
	}
	return 0
}

// client runs spec in a new process in netns, started through prefix (a
// program and its arguments, e.g. setpriv) when given. Its error carries
// what the client printed.
func (r *rig) client(t *testing.T, netns ns.NetNS, spec clientSpec, prefix ...string) error {
	t.Helper()
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	argv := append(slices.Clone(prefix), os.Args[0], "-test.run=^$")
	var out []byte
	var runErr error
	if err := netns.Do(func(ns.NetNS) error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Env = append(os.Environ(), clientEnv+"="+string(b))
		out, runErr = cmd.Output()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var exit *exec.ExitError
	switch {
	case runErr == nil:
		return nil
	case errors.As(runErr, &exit) && exit.ExitCode() == 1:
		return errors.New(string(out))
	default:
		t.Fatalf("reaper client %v: %v\n%s", argv, runErr, out)
		return nil
	}
}

// delete asks the reaper to delete req's link from a process in the
// served namespace, as the plugin does.
func (r *rig) delete(t *testing.T, req Request) error {
	t.Helper()
	return r.client(t, r.node, clientSpec{Socket: r.socket, Req: req})
}

// rig is a reaper serving a fresh node namespace, with a container
// namespace to put veth peers in.
type rig struct {
	node, cont ns.NetNS
	h          *netlink.Handle
	srv        *Server
	socket     string
	nodeIno    uint64
}

// newRig starts the reaper after applying opts to its server.
func newRig(t *testing.T, opts ...func(*Server)) *rig {
	t.Helper()
	r := &rig{node: testutil.NewNS(t), cont: testutil.NewNS(t)}
	var err error
	if r.h, err = netlink.NewHandleAt(netns.NsHandle(r.node.Fd())); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.h.Close)
	if r.nodeIno, err = NetNSInode(r.node.Path()); err != nil {
		t.Fatal(err)
	}
	if r.srv, err = NewServer(netns.NsHandle(r.node.Fd()), 4, nil); err != nil {
		t.Fatal(err)
	}
	for _, o := range opts {
		o(r.srv)
	}
	r.socket = filepath.Join(t.TempDir(), "run", "reaper.sock")
	ln, err := Listen(r.socket)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- r.srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return r
}

// veth creates a veth pair with its peer in the container namespace, marked
// with group and alias, and returns the node end.
func (r *rig) veth(t *testing.T, name string, group uint32, alias string) netlink.Link {
	t.Helper()
	attrs := netlink.NewLinkAttrs()
	attrs.Name, attrs.Group = name, group
	if err := r.h.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "eth0-" + name[len(name)-3:], PeerNamespace: netlink.NsFd(r.cont.Fd())}); err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	link, err := r.h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if alias != "" {
		if err := r.h.LinkSetAlias(link, alias); err != nil {
			t.Fatal(err)
		}
	}
	return link
}

func (r *rig) exists(t *testing.T, name string) bool {
	t.Helper()
	_, err := r.h.LinkByName(name)
	if err != nil && !errors.As(err, new(netlink.LinkNotFoundError)) {
		t.Fatal(err)
	}
	return err == nil
}

func TestDelete(t *testing.T) {
	r := newRig(t)
	alias := routing.Alias("net1", "ctr1", "eth0")
	tests := []struct {
		name string
		// setup creates what the request names and returns the request.
		setup       func(t *testing.T) Request
		wantErr     string
		wantRemains bool
	}{
		{
			name: "owned link is deleted",
			setup: func(t *testing.T) Request {
				l := r.veth(t, "vrtaaaaaaaa001", routing.LinkGroup, alias)
				return Request{NetNS: r.nodeIno, Name: "vrtaaaaaaaa001", Index: l.Attrs().Index, Alias: alias}
			},
		},
		{
			name: "link without alias yet (plugin killed mid-ADD) is deleted",
			setup: func(t *testing.T) Request {
				l := r.veth(t, "vrtaaaaaaaa002", routing.LinkGroup, "")
				return Request{NetNS: r.nodeIno, Name: "vrtaaaaaaaa002", Index: l.Attrs().Index, Alias: alias}
			},
		},
		{
			name: "missing link is success",
			setup: func(t *testing.T) Request {
				return Request{NetNS: r.nodeIno, Name: "vrtaaaaaaaa003", Index: 9999, Alias: alias}
			},
		},
		{
			name: "foreign link is refused",
			setup: func(t *testing.T) Request {
				l := r.veth(t, "vrtaaaaaaaa004", 0, "someone else's")
				return Request{NetNS: r.nodeIno, Name: "vrtaaaaaaaa004", Index: l.Attrs().Index, Alias: alias}
			},
			wantErr: "refused", wantRemains: true,
		},
		{
			name: "another attachment's link is refused",
			setup: func(t *testing.T) Request {
				l := r.veth(t, "vrtaaaaaaaa005", routing.LinkGroup, routing.Alias("net1", "other", "eth0"))
				return Request{NetNS: r.nodeIno, Name: "vrtaaaaaaaa005", Index: l.Attrs().Index, Alias: alias}
			},
			wantErr: "refused", wantRemains: true,
		},
		{
			name: "alias that is not vethroute's is refused",
			setup: func(t *testing.T) Request {
				l := r.veth(t, "vrtaaaaaaaa006", routing.LinkGroup, "")
				return Request{NetNS: r.nodeIno, Name: "vrtaaaaaaaa006", Index: l.Attrs().Index, Alias: "x"}
			},
			wantErr: "refused", wantRemains: true,
		},
		{
			name: "stale index is refused",
			setup: func(t *testing.T) Request {
				l := r.veth(t, "vrtaaaaaaaa007", routing.LinkGroup, alias)
				return Request{NetNS: r.nodeIno, Name: "vrtaaaaaaaa007", Index: l.Attrs().Index + 1000, Alias: alias}
			},
			wantErr: "refused", wantRemains: true,
		},
		{
			name: "request from another namespace is refused",
			setup: func(t *testing.T) Request {
				l := r.veth(t, "vrtaaaaaaaa008", routing.LinkGroup, alias)
				other, err := NetNSInode(r.cont.Path())
				if err != nil {
					t.Fatal(err)
				}
				return Request{NetNS: other, Name: "vrtaaaaaaaa008", Index: l.Attrs().Index, Alias: alias}
			},
			wantErr: "refused", wantRemains: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := tc.setup(t)
			err := r.delete(t, req)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Delete: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Delete: got %v, want an error containing %q", err, tc.wantErr)
			case tc.wantErr == "refused" && !strings.HasSuffix(strings.TrimSpace(err.Error()), ": refused"):
				// Finding 3: a refusal tells the client nothing more.
				t.Fatalf("refusal %q says more than \"refused\"", err)
			}
			// Delete returns once the link is unlisted: no waiting here.
			if got := r.exists(t, req.Name); got != tc.wantRemains {
				t.Fatalf("%s exists after Delete: %v, want %v", req.Name, got, tc.wantRemains)
			}
		})
	}
	if got := r.srv.Stats.Deleted.Load(); got != 3 {
		t.Errorf("Stats.Deleted = %d, want 3", got)
	}
	if got := r.srv.Stats.Refused.Load(); got != 5 {
		t.Errorf("Stats.Refused = %d, want 5", got)
	}
}

func TestDeleteBusy(t *testing.T) {
	r := newRig(t)
	alias := routing.Alias("net1", "ctr1", "eth0")
	l := r.veth(t, "vrtbbbbbbbb001", routing.LinkGroup, alias)
	// Every slot taken, as if four deletions were still in the kernel.
	for range cap(r.srv.slots) {
		r.srv.slots <- struct{}{}
	}
	if got := r.srv.InFlight(); got != cap(r.srv.slots) {
		t.Fatalf("InFlight with every slot taken = %d, want %d", got, cap(r.srv.slots))
	}
	err := r.delete(t, Request{NetNS: r.nodeIno, Name: l.Attrs().Name, Index: l.Attrs().Index, Alias: alias})
	if err == nil || !strings.Contains(err.Error(), ErrBusy.Error()) {
		t.Fatalf("Delete with no free slot: got %v, want ErrBusy", err)
	}
	if !r.exists(t, l.Attrs().Name) {
		t.Fatal("a busy reaper deleted the link anyway")
	}
	for range cap(r.srv.slots) {
		<-r.srv.slots
	}
	if err := r.delete(t, Request{NetNS: r.nodeIno, Name: l.Attrs().Name, Index: l.Attrs().Index, Alias: alias}); err != nil {
		t.Fatalf("Delete after slots freed: %v", err)
	}
}

func TestSlowDeletionIsCounted(t *testing.T) {
	var logged strings.Builder
	var mu sync.Mutex
	r := newRig(t, func(s *Server) {
		// Any deletion is slow by this threshold: the test needs no device
		// that the kernel refuses to release.
		s.slowAfter = time.Nanosecond
		s.log = slog.New(slog.NewTextHandler(lockedWriter{&mu, &logged}, nil))
	})
	alias := routing.Alias("net1", "ctr1", "eth0")
	l := r.veth(t, "vrtcccccccc001", routing.LinkGroup, alias)
	if err := r.delete(t, Request{NetNS: r.nodeIno, Name: l.Attrs().Name, Index: l.Attrs().Index, Alias: alias}); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	// The answer may come before the kernel has finished; wait for it.
	deadline := time.Now().Add(10 * time.Second)
	for r.srv.InFlight() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := r.srv.InFlight(); got != 0 {
		t.Fatalf("InFlight 10s after the deletion = %d, want 0", got)
	}
	if got := r.srv.Stats.Slow.Load(); got != 1 {
		t.Errorf("Stats.Slow = %d, want 1", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logged.String(), "slow deletion ended") || !strings.Contains(logged.String(), "vrtcccccccc001") {
		t.Errorf("no slow-deletion warning naming the link in the log:\n%s", logged.String())
	}
}

// lockedWriter serialises writes from the server's goroutines.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestDeleteWithoutServer(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "none.sock")
	err := Delete(socket, Request{Name: "vrt000000000000"}, 2*time.Second)
	if err == nil || !strings.Contains(err.Error(), socket) {
		t.Fatalf("Delete without a server: got %v, want an error naming %s", err, socket)
	}
}

func TestMalformedRequest(t *testing.T) {
	r := newRig(t)
	err := r.client(t, r.node, clientSpec{Socket: r.socket, Raw: "{not json\n"})
	if err == nil || !strings.Contains(err.Error(), "decode request") {
		t.Fatalf("answer to a malformed request: %v, want a decode error", err)
	}
}

func TestListenReplacesStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d", "reaper.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false) // leave the file behind, as a killed agent does
	ln.Close()
	ln2, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	ln2.Close()
}

// TestPeerInOtherNetNSIsRefused is issue 14's finding 3: root without
// capabilities in another network namespace (a container given the socket's
// directory) sends a request that is right in every field, as a refusal or a
// guess could have told it. The server judges the peer by the namespace the
// kernel reports for its process, so the link survives and the answer says
// nothing but "refused".
func TestPeerInOtherNetNSIsRefused(t *testing.T) {
	r := newRig(t)
	alias := routing.Alias("net1", "ctr1", "eth0")
	l := r.veth(t, "vrtdddddddd001", routing.LinkGroup, alias)
	req := Request{NetNS: r.nodeIno, Name: l.Attrs().Name, Index: l.Attrs().Index, Alias: alias}
	noCaps := []string{"setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--"}
	err := r.client(t, r.cont, clientSpec{Socket: r.socket, Req: req}, noCaps...)
	if err == nil {
		t.Fatal("a client in another network namespace had the node's link deleted")
	}
	if !strings.HasSuffix(strings.TrimSpace(err.Error()), ": refused") {
		t.Errorf("refusal %q says more than \"refused\"", err)
	}
	if !r.exists(t, l.Attrs().Name) {
		t.Fatal("link deleted on a request from another network namespace")
	}
	// The same request from the served namespace is honoured.
	if err := r.delete(t, req); err != nil {
		t.Fatalf("Delete from the node's namespace: %v", err)
	}
}

// TestListenGuardsTheSocket: the directory is made root's even when it
// exists with a wider mode (a kubelet creates hostPath directories 0755),
// and a second reaper cannot take over a live reaper's socket.
func TestListenGuardsTheSocket(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "reaper.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("socket directory mode = %v (%v), want 0700", fi.Mode().Perm(), err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if ln2, err := Listen(path); err == nil {
		ln2.Close()
		t.Fatal("a second Listen took over the socket a live reaper serves")
	} else if !strings.Contains(err.Error(), path) {
		t.Errorf("second Listen: %v, want an error naming %s", err, path)
	}
	if c, err := net.Dial("unix", path); err != nil {
		t.Fatalf("the first reaper's socket is gone: %v", err)
	} else {
		c.Close()
	}
}

// TestAcceptErrorsDoNotStopServer is issue 14's finding 4: with its
// descriptors used up, accept fails with EMFILE; the server must pause and
// go on, not end, so that DEL works again once descriptors are free.
func TestAcceptErrorsDoNotStopServer(t *testing.T) {
	r := newRig(t)
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	// A few descriptors above what the process holds now: the idle
	// connections below (two descriptors each, both ends in this
	// process) use them up and the server's accept meets EMFILE.
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	low := unix.Rlimit{Cur: uint64(len(fds) + 16), Max: old.Max}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
				t.Errorf("restore RLIMIT_NOFILE: %v", err)
			}
		}
	}
	defer restore()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < 64 && r.srv.Stats.AcceptErrors.Load() == 0; i++ {
		c, err := net.Dial("unix", r.socket)
		if err != nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		conns = append(conns, c)
	}
	for i := 0; i < 100 && r.srv.Stats.AcceptErrors.Load() == 0; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if r.srv.Stats.AcceptErrors.Load() == 0 {
		t.Fatalf("accept never failed with %d descriptors allowed and %d connections held", low.Cur, len(conns))
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	restore()

	alias := routing.Alias("net1", "ctr1", "eth0")
	l := r.veth(t, "vrteeeeeeee001", routing.LinkGroup, alias)
	if err := r.delete(t, Request{NetNS: r.nodeIno, Name: l.Attrs().Name, Index: l.Attrs().Index, Alias: alias}); err != nil {
		t.Fatalf("Delete after accept failures: %v", err)
	}
	if r.exists(t, l.Attrs().Name) {
		t.Fatal("link still there after Delete")
	}
}
