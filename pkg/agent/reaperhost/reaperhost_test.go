package reaperhost

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vethroute/vethroute/pkg/agent/monitor"
)

// TestStartMetrics checks that the reaper's series are exported from
// the start, at zero, so that alerts on them work before the first DEL.
// The server only listens on a socket in a temporary directory: it changes
// nothing in the machine's network namespace.
func TestStartMetrics(t *testing.T) {
	m := monitor.NewMetrics()
	socket := filepath.Join(t.TempDir(), "reaper.sock")
	stop, _, err := Start(context.Background(), socket, m, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer stop()
	want := `
# HELP vethroute_agent_reaper_deletions_in_flight Host veth deletions the kernel has not finished; one that only grows means devices that are never released.
# TYPE vethroute_agent_reaper_deletions_in_flight gauge
vethroute_agent_reaper_deletions_in_flight 0
# HELP vethroute_agent_reaper_slow_deletions_total Host veth deletions that have been in the kernel for 30 s (a leaked device reference; see unregister_netdevice in the kernel log), counted when they reach it.
# TYPE vethroute_agent_reaper_slow_deletions_total counter
vethroute_agent_reaper_slow_deletions_total 0
`
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(want),
		"vethroute_agent_reaper_deletions_in_flight", "vethroute_agent_reaper_slow_deletions_total"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(m.Registry, "vethroute_agent_reaper_requests_total"); err != nil || n != 3 {
		t.Errorf("vethroute_agent_reaper_requests_total has %d series (err %v), want 3: deleted, refused, failed", n, err)
	}
}
