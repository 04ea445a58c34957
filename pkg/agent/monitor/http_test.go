package monitor

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// TestHTTPServerCapsIdleConnections is issue 14's finding 6: connections
// that never send a request must not each cost the agent a goroutine and
// buffers (idle connections by the thousand OOMed it), and the health
// endpoint, served apart from metrics, answers meanwhile.
func TestHTTPServerCapsIdleConnections(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	metrics, err := Serve("127.0.0.1:0", MetricsHandler(NewMetrics()), log)
	if err != nil {
		t.Fatal(err)
	}
	health, err := Serve("127.0.0.1:0", Handler(nil, func() bool { return true }), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = metrics.Shutdown(ctx)
		_ = health.Shutdown(ctx)
	})

	before := runtime.NumGoroutine()
	const idle = 1000
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range idle {
		c, err := net.Dial("tcp", metrics.Addr)
		if err != nil {
			t.Fatalf("dial %d: %v", len(conns), err)
		}
		conns = append(conns, c)
	}
	// Give the server every chance to accept what it will accept.
	time.Sleep(500 * time.Millisecond)
	if grown := runtime.NumGoroutine() - before; grown > maxHTTPConns+16 {
		t.Errorf("%d idle connections grew the agent by %d goroutines, want at most the cap %d (+16)", idle, grown, maxHTTPConns)
	}

	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + health.Addr + "/healthz")
	if err != nil {
		t.Fatalf("/healthz with %d idle metrics connections: %v", idle, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz = %d %q", resp.StatusCode, body)
	}
}

// TestHealthzReportsDeadParts: /healthz fails while a part the agent runs
// (the reaper) has stopped serving.
func TestHealthzReportsDeadParts(t *testing.T) {
	var dead atomic.Pointer[error]
	alive := func() error {
		if e := dead.Load(); e != nil {
			return *e
		}
		return nil
	}
	srv, err := Serve("127.0.0.1:0", Handler(nil, func() bool { return true }, alive), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	get := func() int {
		resp, err := http.Get("http://" + srv.Addr + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(); code != http.StatusOK {
		t.Fatalf("/healthz = %d with every part alive", code)
	}
	e := io.ErrUnexpectedEOF
	dead.Store(&e)
	if code := get(); code != http.StatusServiceUnavailable {
		t.Fatalf("/healthz = %d with a dead part, want 503", code)
	}
}
