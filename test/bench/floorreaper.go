package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vethroute/vethroute/internal/testutil"
)

// floorUnlistTimeout bounds the wait for a link to leave the node.
const floorUnlistTimeout = 5 * time.Second

// startFloorReaper serves floor.DetachVia in node from the benchmark's own
// process: it deletes the named link and answers once the node no longer
// lists it, while its goroutine sits out the kernel's release of the
// device. It is the floor of vethroute's reaper: the same wait taken off
// DEL, with no checks and a one-line protocol. It stops when the lab
// closes.
func (l *lab) startFloorReaper(node *testutil.Node) (string, error) {
	nsh := netns.NsHandle(node.NS.Fd())
	socket := filepath.Join(l.tmp, fmt.Sprintf("floor-reaper-%d.sock", time.Now().UnixNano()))
	ln, err := net.Listen("unix", socket)
	if err != nil {
		return "", fmt.Errorf("floor reaper: %w", err)
	}
	l.onClose(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed with the lab
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(2 * floorUnlistTimeout))
				answer := "ok"
				if err := floorReap(nsh, c); err != nil {
					answer = strings.ReplaceAll(err.Error(), "\n", " ")
				}
				fmt.Fprintln(c, answer)
			}()
		}
	}()
	return socket, nil
}

// floorReap reads one link name from c, deletes that link in the
// background and returns once the namespace announces it gone. Each request
// has a netlink handle of its own, which its deletion closes: a handle is
// not for concurrent use, and a deletion outlives its request.
func floorReap(nsh netns.NsHandle, c net.Conn) (err error) {
	name, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read request: %w", err)
	}
	h, err := netlink.NewHandleAt(nsh, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("open netlink: %w", err)
	}
	deleting := false
	defer func() {
		if !deleting {
			h.Close()
		}
	}()
	link, err := h.LinkByName(strings.TrimSpace(name))
	if err != nil {
		return fmt.Errorf("find %s: %w", strings.TrimSpace(name), err)
	}
	updates, done := make(chan netlink.LinkUpdate, 16), make(chan struct{})
	if err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{Namespace: &nsh}); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	defer func() {
		close(done)
		go func() {
			for range updates {
			}
		}()
	}()
	result := make(chan error, 1)
	deleting = true
	go func() {
		defer h.Close()
		result <- h.LinkDel(link)
	}()
	timeout := time.NewTimer(floorUnlistTimeout)
	defer timeout.Stop()
	for {
		select {
		case u, ok := <-updates:
			if !ok {
				return errors.New("link subscription ended")
			}
			if u.Header.Type == unix.RTM_DELLINK && int(u.Index) == link.Attrs().Index {
				return nil
			}
		case err := <-result:
			return err
		case <-timeout.C:
			return fmt.Errorf("%s still listed after %s", link.Attrs().Name, floorUnlistTimeout)
		}
	}
}
