// Package reaper lets a long-lived process on the node delete the plugin's
// host veths, so that a DEL returns as soon as the node no longer lists the
// interface instead of waiting for the kernel to finish releasing it.
//
// Why a second process: deleting a netdev ends in netdev_run_todo(), which
// calls rcu_barrier() after the device has already left the namespace (its
// name, addresses and routes are gone) but before the netlink request
// returns. That wait is most of a DEL on the kernels we measured (about
// 18 ms of 20, docs/benchmarks.md), and nothing observable changes during
// it. A plugin process cannot exit while one of its threads sits in that
// request, so the wait has to happen in a process that stays: the node agent
// (vethroute-agent --reaper-socket, or `vethroute-agent reaper`). When no
// reaper answers, the plugin deletes the interface itself, as before.
//
// The protocol is one JSON request and one JSON answer per connection on a
// Unix socket that only root may use. The request carries a descriptor of
// the client's network namespace (SCM_RIGHTS): only a client in the served
// namespace is heard, and a refusal says nothing but "refused".
package reaper

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// maxMessage bounds a request or an answer; both are a few hundred bytes.
const maxMessage = 4096

// Request names the host veth to delete. The server deletes it only if, in
// its own network namespace, the link of that name still has that index and
// is the vethroute host veth that alias names.
type Request struct {
	// NetNS is the inode number of the requester's network namespace. A
	// reaper serves one namespace; a name and an index mean nothing in
	// another, so a request from elsewhere is refused. The server trusts
	// the namespace descriptor sent with the request, not this number.
	NetNS uint64 `json:"netns"`
	Name  string `json:"name"`
	Index int    `json:"index"`
	Alias string `json:"alias"`
}

// answer is the server's reply: empty when the link is gone from the
// namespace.
type answer struct {
	Error string `json:"error,omitempty"`
	Busy  bool   `json:"busy,omitempty"`
}

// ErrBusy is returned when the reaper already has as many deletions in
// flight as it allows; the caller deletes the link itself.
var ErrBusy = errors.New("reaper busy")

// NetNSInode returns the inode number of the network namespace at path
// (for the caller's own: /proc/self/ns/net), which identifies it on the node.
func NetNSInode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", path, err)
	}
	return st.Ino, nil
}

// Delete asks the reaper listening on socket to delete the link req names
// and returns nil once the reaper has seen the link leave the namespace. Any
// error (no reaper, refused, busy, timeout) means the link may still be
// there and the caller must delete it itself.
func Delete(socket string, req Request, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	conn, err := net.DialTimeout("unix", socket, timeout)
	if err != nil {
		return fmt.Errorf("reaper %s: %w", socket, err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(deadline); err != nil {
		return fmt.Errorf("reaper %s: %w", socket, err)
	}
	if err := sendRequest(conn.(*net.UnixConn), req); err != nil {
		return fmt.Errorf("reaper %s: send request: %w", socket, err)
	}
	var a answer
	if err := json.NewDecoder(io.LimitReader(conn, maxMessage)).Decode(&a); err != nil {
		return fmt.Errorf("reaper %s: read answer for %s: %w", socket, req.Name, err)
	}
	switch {
	case a.Busy:
		return fmt.Errorf("reaper %s: %w", socket, ErrBusy)
	case a.Error != "":
		return fmt.Errorf("reaper %s: %s", socket, a.Error)
	}
	return nil
}

// sendRequest sends req with a descriptor of the calling thread's network
// namespace, which the server compares with the one it serves.
func sendRequest(conn *net.UnixConn, req Request) error {
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	runtime.LockOSThread()
	fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	runtime.UnlockOSThread()
	if err != nil {
		return fmt.Errorf("open own network namespace: %w", err)
	}
	defer unix.Close(fd)
	_, _, err = conn.WriteMsgUnix(append(b, '\n'), unix.UnixRights(fd), nil)
	return err
}

// socketDirMode and socketMode keep the socket root's: a request deletes
// interfaces on the node.
const (
	socketDirMode = 0o700
	socketMode    = 0o600
)

// Listen creates the Unix socket at path in a directory only root can
// enter. The directory's mode is set even when it exists (a kubelet creates
// a hostPath directory 0755), since a client that can reach the socket file
// is what the mode guards. A socket a live reaper answers on is never
// replaced: the second reaper fails, naming the path; a stale one (nobody
// listening, a previous reaper's) is removed.
func Listen(path string) (*net.UnixListener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, socketDirMode); err != nil {
		return nil, fmt.Errorf("create socket directory %s: %w", dir, err)
	}
	if err := os.Chmod(dir, socketDirMode); err != nil {
		return nil, fmt.Errorf("chmod socket directory %s: %w", dir, err)
	}
	if conn, err := net.DialTimeout("unix", path, time.Second); err == nil {
		conn.Close()
		return nil, fmt.Errorf("listen on %s: another reaper serves this socket; stop it first", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	// Closing the listener must not unlink a socket that a later reaper
	// may have put at the same path.
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(path, socketMode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return ln, nil
}
