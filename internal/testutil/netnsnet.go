package testutil

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
)

// ListenIn opens a TCP listener inside netns. Only the socket is created
// there (on a locked thread that ns.Do switches and restores); accepting and
// serving happen on any goroutine, since a socket keeps the namespace it
// was created in.
func ListenIn(t testing.TB, netns ns.NetNS, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	err := netns.Do(func(ns.NetNS) (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, netns.Path(), err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// ForwardTCP relays connections made to listenAddr inside netns to target
// in the test's own namespace, until the test ends. It lets a daemon that
// runs inside a node namespace reach a server the test runs on the
// machine's loopback (the API server), without any route or address being
// added outside the test's namespaces. lo is brought up in netns.
func ForwardTCP(t testing.TB, netns ns.NetNS, listenAddr, target string) {
	t.Helper()
	MustRunIn(t, netns, "ip", "link", "set", "lo", "up")
	ln := ListenIn(t, netns, listenAddr)
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	track := func(c net.Conn, on bool) bool {
		mu.Lock()
		defer mu.Unlock()
		if on && conns == nil {
			return false // shutting down
		}
		if on {
			conns[c] = true
		} else if conns != nil {
			delete(conns, c)
		}
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
			if !track(in, true) {
				in.Close()
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer track(in, false)
				defer in.Close()
				out, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				track(out, true)
				defer track(out, false)
				defer out.Close()
				done := make(chan struct{}, 2)
				pipe := func(dst, src net.Conn) {
					_, _ = io.Copy(dst, src)
					// Half-close so the other direction can finish.
					if tc, ok := dst.(*net.TCPConn); ok {
						_ = tc.CloseWrite()
					}
					done <- struct{}{}
				}
				go pipe(out, in)
				go pipe(in, out)
				<-done
				<-done
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		conns = nil
		mu.Unlock()
		wg.Wait()
	})
}

// HTTPClientIn returns an HTTP client whose connections are made from
// inside netns, to reach servers that listen there (a daemon's /metrics).
func HTTPClientIn(netns ns.NetNS) *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := netns.Do(func(ns.NetNS) (err error) {
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		if err != nil {
			return nil, err
		}
		if c == nil {
			return nil, errors.New("dial in netns returned no connection")
		}
		return c, nil
	}
	return &http.Client{Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
}
