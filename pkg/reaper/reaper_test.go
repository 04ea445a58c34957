package reaper

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/vethroute/vethroute/internal/testutil"
	"github.com/vethroute/vethroute/pkg/routing"
)

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
			wantErr: "is not the host veth", wantRemains: true,
		},
		{
			name: "another attachment's link is refused",
			setup: func(t *testing.T) Request {
				l := r.veth(t, "vrtaaaaaaaa005", routing.LinkGroup, routing.Alias("net1", "other", "eth0"))
				return Request{NetNS: r.nodeIno, Name: "vrtaaaaaaaa005", Index: l.Attrs().Index, Alias: alias}
			},
			wantErr: "is not the host veth", wantRemains: true,
		},
		{
			name: "alias that is not vethroute's is refused",
			setup: func(t *testing.T) Request {
				l := r.veth(t, "vrtaaaaaaaa006", routing.LinkGroup, "")
				return Request{NetNS: r.nodeIno, Name: "vrtaaaaaaaa006", Index: l.Attrs().Index, Alias: "x"}
			},
			wantErr: "is not the host veth", wantRemains: true,
		},
		{
			name: "stale index is refused",
			setup: func(t *testing.T) Request {
				l := r.veth(t, "vrtaaaaaaaa007", routing.LinkGroup, alias)
				return Request{NetNS: r.nodeIno, Name: "vrtaaaaaaaa007", Index: l.Attrs().Index + 1000, Alias: alias}
			},
			wantErr: "is not the host veth", wantRemains: true,
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
			wantErr: "network namespace", wantRemains: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := tc.setup(t)
			err := Delete(r.socket, req, 5*time.Second)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Delete: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Delete: got %v, want an error containing %q", err, tc.wantErr)
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
	err := Delete(r.socket, Request{NetNS: r.nodeIno, Name: l.Attrs().Name, Index: l.Attrs().Index, Alias: alias}, 5*time.Second)
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("Delete with no free slot: got %v, want ErrBusy", err)
	}
	if !r.exists(t, l.Attrs().Name) {
		t.Fatal("a busy reaper deleted the link anyway")
	}
	for range cap(r.srv.slots) {
		<-r.srv.slots
	}
	if err := Delete(r.socket, Request{NetNS: r.nodeIno, Name: l.Attrs().Name, Index: l.Attrs().Index, Alias: alias}, 5*time.Second); err != nil {
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
	if err := Delete(r.socket, Request{NetNS: r.nodeIno, Name: l.Attrs().Name, Index: l.Attrs().Index, Alias: alias}, 5*time.Second); err != nil {
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
	start := time.Now()
	err := Delete(socket, Request{Name: "vrt000000000000"}, 2*time.Second)
	if err == nil || !strings.Contains(err.Error(), socket) {
		t.Fatalf("Delete without a server: got %v, want an error naming %s", err, socket)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Delete without a server took %s; it must fail at once", d)
	}
}

func TestMalformedRequest(t *testing.T) {
	r := newRig(t)
	conn, err := net.Dial("unix", r.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("{not json\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, maxMessage)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _ := conn.Read(buf)
	if !strings.Contains(string(buf[:n]), "decode request") {
		t.Fatalf("answer to a malformed request: %q, want a decode error", buf[:n])
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
