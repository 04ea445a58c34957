package reaper

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vethroute/vethroute/pkg/routing"
)

const (
	// DefaultMaxInFlight bounds the deletions waiting in the kernel at once.
	// Each holds an OS thread for the length of an RCU grace period; past
	// the bound the plugin deletes the link itself, which is never wrong.
	DefaultMaxInFlight = 64
	// connTimeout bounds one connection, from the request to the answer.
	connTimeout = 10 * time.Second
	// unlistTimeout is how long the server waits for the link to leave the
	// namespace before it gives up on the answer (the deletion goes on).
	unlistTimeout = 5 * time.Second
	// slowDeletion is how long a deletion may stay in the kernel before the
	// server reports it: far beyond any grace period, the device is held by
	// a leaked reference (the kernel logs "unregister_netdevice: waiting for
	// ... to become free"), and the slot it holds is lost until it ends.
	slowDeletion = 30 * time.Second
)

// Stats counts what a Server did, for the agent's metrics.
type Stats struct {
	// Deleted counts links the server removed from the namespace.
	Deleted atomic.Uint64
	// Refused counts requests it turned down: bad, foreign, wrong
	// namespace, or busy.
	Refused atomic.Uint64
	// Failed counts deletions the kernel rejected or that timed out.
	Failed atomic.Uint64
	// AcceptErrors counts failed accepts the server retried.
	AcceptErrors atomic.Uint64
	// Slow counts deletions that have been in the kernel for the server's
	// slow threshold (30 s), counted when they reach it.
	Slow atomic.Uint64
}

// Server deletes vethroute host veths on request, in one network namespace.
type Server struct {
	ns    netns.NsHandle
	nsIno uint64
	nsDev uint64
	// local is set when ns is the process's own namespace: the server then
	// never switches namespaces, which needs CAP_SYS_ADMIN that the agent's
	// container does not have (NET_ADMIN is enough to delete a link).
	local bool
	slots chan struct{}
	// slowAfter is slowDeletion, shorter in tests.
	slowAfter time.Duration
	log       *slog.Logger
	wg        sync.WaitGroup
	// Stats is updated as requests are served.
	Stats Stats
}

// NewServer returns a server for the network namespace ns, which stays
// owned by the caller and must outlive the server. When ns is the process's
// own namespace, the whole process must stay in it (the agent's case).
// maxInFlight <= 0 means DefaultMaxInFlight.
func NewServer(ns netns.NsHandle, maxInFlight int, log *slog.Logger) (*Server, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(ns), &st); err != nil {
		return nil, fmt.Errorf("stat network namespace handle: %w", err)
	}
	if maxInFlight <= 0 {
		maxInFlight = DefaultMaxInFlight
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	own, err := NetNSInode("/proc/self/ns/net")
	if err != nil {
		return nil, err
	}
	return &Server{ns: ns, nsIno: st.Ino, nsDev: st.Dev, local: own == st.Ino, slots: make(chan struct{}, maxInFlight), slowAfter: slowDeletion, log: log}, nil
}

// InFlight returns how many deletions are still in the kernel. It stays
// near zero on a healthy node; a count that only grows means devices whose
// release never ends (see Stats.Slow), and at the bound every DEL falls
// back to deleting in-process.
func (s *Server) InFlight() int { return len(s.slots) }

// openNetlink opens a netlink handle on the served namespace.
func (s *Server) openNetlink() (netlinksafe.Handle, error) {
	if s.local {
		return netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	}
	return netlinksafe.NewHandleAt(s.ns, unix.NETLINK_ROUTE)
}

// Serve answers connections on ln until ctx ends, then closes ln and waits
// for the deletions still in the kernel. A failed accept that can pass (too
// many open files, a connection aborted before it was taken) is retried
// after a pause that doubles up to maxAcceptBackoff, as net/http's server
// does: one burst of connections must not stop the reaper for good. Any
// other failure ends Serve with an error, which the agent reports on
// /healthz.
func (s *Server) Serve(ctx context.Context, ln *net.UnixListener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer s.wg.Wait()
	var pause time.Duration
	for {
		conn, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if !temporaryAcceptError(err) {
				return fmt.Errorf("accept on reaper socket: %w", err)
			}
			pause = min(max(2*pause, minAcceptBackoff), maxAcceptBackoff)
			s.Stats.AcceptErrors.Add(1)
			s.log.Warn("accept on reaper socket failed; retrying", "err", err, "in", pause)
			select {
			case <-time.After(pause):
			case <-ctx.Done():
				return nil
			}
			continue
		}
		pause = 0
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handle(conn)
		}()
	}
}

const (
	minAcceptBackoff = 5 * time.Millisecond
	maxAcceptBackoff = time.Second
)

// temporaryAcceptError reports the accept failures that go away by
// themselves: descriptor or memory exhaustion and a peer that gave up.
func temporaryAcceptError(err error) bool {
	for _, errno := range []error{unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM, unix.ECONNABORTED, unix.EINTR} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}

// handle serves one connection: one request, one answer.
func (s *Server) handle(conn *net.UnixConn) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(connTimeout))
	var req Request
	err := checkPeerUser(conn)
	if err == nil {
		err = s.readRequest(conn, &req)
	}
	if err == nil {
		err = s.delete(req)
	}
	var a answer
	switch {
	case err == nil:
		s.Stats.Deleted.Add(1)
		s.log.Debug("deleted", "link", req.Name, "index", req.Index, "alias", req.Alias)
	case errors.Is(err, ErrBusy):
		s.Stats.Refused.Add(1)
		a.Busy = true
	case errors.Is(err, errRefused):
		// The details stay in the log: a refusal tells a client that
		// may be hostile nothing about the node (namespace, indexes,
		// aliases) that it could use for its next request.
		s.Stats.Refused.Add(1)
		a.Error = errRefused.Error()
		s.log.Warn("refused a delete request", "link", req.Name, "err", err)
	default:
		s.Stats.Failed.Add(1)
		a.Error = err.Error()
		s.log.Warn("delete failed", "link", req.Name, "err", err)
	}
	_ = json.NewEncoder(conn).Encode(a)
}

// errRefused marks requests turned down before anything was deleted.
var errRefused = errors.New("refused")

// checkPeerUser admits only root (or the server's own user), as the kernel
// reports the peer (SO_PEERCRED): a request deletes an interface of the
// node. The socket's mode says the same; this holds even if it changes.
func checkPeerUser(conn *net.UnixConn) error {
	raw, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if cerr != nil {
		return fmt.Errorf("peer credentials: %w", cerr)
	}
	if cred.Uid != 0 && int(cred.Uid) != unix.Geteuid() {
		return fmt.Errorf("peer uid %d is not root: %w", cred.Uid, errRefused)
	}
	return nil
}

// readRequest reads the request and the descriptor of the client's network
// namespace that comes with it (SCM_RIGHTS), and admits the request only
// when that namespace is the one the server serves. A descriptor is proof
// the kernel checked, not a number the client chose: root in another
// namespace (a container given the socket's directory) holds no descriptor
// of the node's namespace. Reading /proc/<peer pid>/ns/net instead would
// need ptrace access to the plugin, which the agent, with NET_ADMIN alone,
// does not have.
func (s *Server) readRequest(conn *net.UnixConn, req *Request) error {
	buf := make([]byte, maxMessage)
	oob := make([]byte, unix.CmsgSpace(4*maxFDs))
	n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return fmt.Errorf("read request: %w", err)
	}
	fds, err := receivedFDs(oob[:oobn])
	for _, fd := range fds {
		defer unix.Close(fd)
	}
	if err != nil {
		return fmt.Errorf("read request: %v: %w", err, errRefused)
	}
	if len(fds) != 1 {
		return fmt.Errorf("request came with %d descriptors, want its network namespace's: %w", len(fds), errRefused)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fds[0], &st); err != nil {
		return fmt.Errorf("stat the client's namespace descriptor: %v: %w", err, errRefused)
	}
	if st.Ino != s.nsIno || st.Dev != s.nsDev {
		return fmt.Errorf("client in network namespace %d, this reaper serves %d: %w", st.Ino, s.nsIno, errRefused)
	}
	body := io.MultiReader(bytes.NewReader(buf[:n]), io.LimitReader(conn, int64(maxMessage-n)))
	if err := json.NewDecoder(body).Decode(req); err != nil {
		return fmt.Errorf("decode request: %w", err)
	}
	return nil
}

// maxFDs bounds the descriptors read with a request; more are refused.
const maxFDs = 4

func receivedFDs(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var fds []int
	for _, m := range msgs {
		got, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		fds = append(fds, got...)
	}
	return fds, nil
}

// delete removes the link req names and returns once the namespace no
// longer lists it. The netlink request itself goes on in the background
// until the kernel has released the device.
func (s *Server) delete(req Request) error {
	h, link, err := s.claim(req)
	switch {
	case errors.Is(err, errGone):
		return nil // already gone: DEL is idempotent
	case err != nil:
		return err
	}
	// Subscribe before deleting, so the RTM_DELLINK cannot be missed.
	updates, unsubscribe, err := s.subscribe()
	if err != nil {
		s.release(h)
		return err
	}
	defer unsubscribe()
	return s.await(req, updates, s.unlink(h, link, req))
}

// errGone reports a link that is no longer there: nothing to delete.
var errGone = errors.New("link gone")

// claim checks that req names the host veth it claims to and takes a
// deletion slot for it. On success the caller owns the handle and the slot
// and gives both back through release.
func (s *Server) claim(req Request) (_ netlinksafe.Handle, _ netlink.Link, err error) {
	if req.NetNS != s.nsIno {
		return netlinksafe.Handle{}, nil, fmt.Errorf("request from network namespace %d, this reaper serves %d: %w", req.NetNS, s.nsIno, errRefused)
	}
	h, err := s.openNetlink()
	if err != nil {
		return netlinksafe.Handle{}, nil, fmt.Errorf("open netlink: %w", err)
	}
	defer func() {
		if err != nil {
			h.Close()
		}
	}()
	link, err := h.LinkByName(req.Name)
	if err != nil {
		if errors.As(err, new(netlink.LinkNotFoundError)) {
			return netlinksafe.Handle{}, nil, errGone
		}
		return netlinksafe.Handle{}, nil, fmt.Errorf("look up %s: %w", req.Name, err)
	}
	if link.Attrs().Index != req.Index || !routing.OwnsLink(link, req.Alias) {
		return netlinksafe.Handle{}, nil, fmt.Errorf("%s (index %d, alias %q) is not the host veth %q with index %d: %w",
			req.Name, link.Attrs().Index, link.Attrs().Alias, req.Alias, req.Index, errRefused)
	}
	select {
	case s.slots <- struct{}{}:
		return h, link, nil
	default:
		return netlinksafe.Handle{}, nil, ErrBusy
	}
}

// release gives back what claim took.
func (s *Server) release(h netlinksafe.Handle) {
	h.Close()
	<-s.slots
}

// subscribe listens to the link changes of the served namespace until
// unsubscribe is called.
func (s *Server) subscribe() (_ <-chan netlink.LinkUpdate, unsubscribe func(), _ error) {
	updates := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	// A blocked receive does not notice the socket closing; the timeout
	// ends the subscription's reader on a node where no link changes.
	rcvTimeout := unix.NsecToTimeval((unlistTimeout + time.Second).Nanoseconds())
	opts := netlink.LinkSubscribeOptions{ReceiveTimeout: &rcvTimeout}
	if !s.local {
		ns := s.ns
		opts.Namespace = &ns
	}
	if err := netlink.LinkSubscribeWithOptions(updates, done, opts); err != nil {
		close(done)
		return nil, nil, fmt.Errorf("subscribe to link changes: %w", err)
	}
	return updates, func() {
		close(done)
		// The subscription's reader may be blocked on a full channel;
		// draining lets it see the closed socket, close the channel and end.
		go func() {
			for range updates {
			}
		}()
	}, nil
}

// unlink deletes link in the background, where the kernel may keep it for
// long, and releases h and its slot when the deletion ends. The channel
// gets the deletion's result.
func (s *Server) unlink(h netlinksafe.Handle, link netlink.Link, req Request) <-chan error {
	result := make(chan error, 1)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.release(h)
		start := time.Now()
		// Counted when the threshold passes, not when the deletion ends:
		// one that never ends must show too.
		slow := time.AfterFunc(s.slowAfter, func() {
			s.Stats.Slow.Add(1)
			s.log.Warn("deletion still waiting for the kernel to release the device; check the kernel log for unregister_netdevice",
				"link", req.Name, "index", req.Index, "after", s.slowAfter)
		})
		err := h.LinkDel(link)
		stopped := slow.Stop()
		if took := time.Since(start); took >= s.slowAfter {
			if stopped {
				// Over the threshold before the timer ran: count it here.
				s.Stats.Slow.Add(1)
			}
			s.log.Warn("slow deletion ended", "link", req.Name, "index", req.Index, "took", took, "err", err)
		}
		result <- err
	}()
	return result
}

// await answers once the link has left the namespace or its deletion
// failed, or after unlistTimeout (the deletion goes on).
func (s *Server) await(req Request, updates <-chan netlink.LinkUpdate, result <-chan error) error {
	timeout := time.NewTimer(unlistTimeout)
	defer timeout.Stop()
	for {
		select {
		case u, ok := <-updates:
			if !ok {
				// The subscription failed; the deletion's own result decides.
				select {
				case err := <-result:
					return deleteResult(req.Name, err)
				case <-timeout.C:
					return fmt.Errorf("%s: no answer from the kernel within %s", req.Name, unlistTimeout)
				}
			}
			if u.Header.Type == unix.RTM_DELLINK && int(u.Index) == req.Index {
				return nil
			}
		case err := <-result:
			return deleteResult(req.Name, err)
		case <-timeout.C:
			return fmt.Errorf("%s still listed after %s", req.Name, unlistTimeout)
		}
	}
}

func deleteResult(name string, err error) error {
	if err == nil || errors.As(err, new(netlink.LinkNotFoundError)) || errors.Is(err, unix.ENODEV) {
		return nil
	}
	return fmt.Errorf("delete %s: %w", name, err)
}
