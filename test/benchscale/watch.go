package main

import (
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// routeEvent is one change of an agent route the kernel announced.
type routeEvent struct {
	at      time.Time
	dst     netip.Prefix
	present bool // RTM_NEWROUTE (added or replaced); false for RTM_DELROUTE
}

// watcher follows the agent's routes in the node namespace through a
// netlink route subscription on a handle in that namespace, so every time
// is when the kernel announced the change, not when someone polled.
type watcher struct {
	proto netlink.RouteProtocol

	mu      sync.Mutex
	present map[netip.Prefix]bool
	events  []routeEvent
	err     error
	// target and reached: the first time the number of present routes
	// reached target.
	target  int
	reached time.Time
	notify  chan struct{}

	stop chan struct{}
	done chan struct{}
}

func startWatcher(s *scope, n ns.NetNS, proto netlink.RouteProtocol) (*watcher, error) {
	h, err := netns.GetFromPath(n.Path())
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", n.Path(), err)
	}
	w := &watcher{proto: proto, present: map[netip.Prefix]bool{}, notify: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{})}
	ch := make(chan netlink.RouteUpdate, 1<<16)
	err = netlink.RouteSubscribeWithOptions(ch, w.stop, netlink.RouteSubscribeOptions{
		Namespace:              &h,
		ReceiveBufferSize:      64 << 20,
		ReceiveBufferForceSize: true,
		ErrorCallback: func(err error) {
			w.mu.Lock()
			if w.err == nil {
				w.err = err
			}
			w.mu.Unlock()
		},
	})
	h.Close()
	if err != nil {
		return nil, fmt.Errorf("subscribe to routes in %s: %w", n.Path(), err)
	}
	go func() {
		defer close(w.done)
		for u := range ch {
			w.record(u)
		}
	}()
	s.add(func() {
		close(w.stop)
		// The subscription closes ch once its socket is shut.
		select {
		case <-w.done:
		case <-time.After(5 * time.Second):
		}
	})
	return w, nil
}

func (w *watcher) record(u netlink.RouteUpdate) {
	if u.Protocol != w.proto || u.Table != unix.RT_TABLE_MAIN || u.Dst == nil {
		return
	}
	a, ok := netip.AddrFromSlice(u.Dst.IP)
	if !ok {
		return
	}
	ones, _ := u.Dst.Mask.Size()
	dst := netip.PrefixFrom(a.Unmap(), ones).Masked()
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	switch u.Type {
	case unix.RTM_NEWROUTE:
		w.present[dst] = true
		w.events = append(w.events, routeEvent{at: now, dst: dst, present: true})
	case unix.RTM_DELROUTE:
		delete(w.present, dst)
		w.events = append(w.events, routeEvent{at: now, dst: dst})
	default:
		return
	}
	if w.target > 0 && w.reached.IsZero() && len(w.present) >= w.target {
		w.reached = now
		select {
		case w.notify <- struct{}{}:
		default:
		}
	}
}

// waitCount waits until n agent routes are present and returns when that
// first happened, or an error after timeout or when the subscription failed.
func (w *watcher) waitCount(n int, timeout time.Duration, alive func() error) (time.Time, error) {
	w.mu.Lock()
	w.target = n
	if len(w.present) >= n {
		w.reached = time.Now()
	}
	w.mu.Unlock()
	deadline := time.After(timeout)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		w.mu.Lock()
		reached, have, err := w.reached, len(w.present), w.err
		w.mu.Unlock()
		if !reached.IsZero() {
			return reached, nil
		}
		if err != nil {
			return time.Time{}, fmt.Errorf("route subscription failed (%d of %d routes seen): %w", have, n, err)
		}
		if err := alive(); err != nil {
			return time.Time{}, err
		}
		select {
		case <-w.notify:
		case <-tick.C:
		case <-deadline:
			return time.Time{}, fmt.Errorf("%d of %d routes after %s", have, n, timeout)
		}
	}
}

func (w *watcher) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.present)
}

func (w *watcher) failure() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// eventsSince returns the events recorded from index i on, and the index
// after them.
func (w *watcher) eventsSince(i int) ([]routeEvent, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := append([]routeEvent(nil), w.events[i:]...)
	return out, len(w.events)
}

func (w *watcher) mark() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.events)
}
