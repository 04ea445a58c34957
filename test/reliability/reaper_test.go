package reliability

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/vethroute/vethroute/internal/testutil"
)

const reaperRanges = `[[{"subnet": "10.77.0.0/24", "rangeStart": "10.77.0.1", "rangeEnd": "10.77.0.40", "gateway": "10.77.0.254"}]]`

// fakeReaper listens on socket and answers every request with answer, or
// never answers when answer is nil (a hung agent). It stops with the test.
func fakeReaper(t *testing.T, socket string, answer map[string]any) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(socket), 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if answer == nil {
				mu.Lock()
				held = append(held, c)
				mu.Unlock()
				continue
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, 4096)
				_, _ = c.Read(buf)
				_ = json.NewEncoder(c).Encode(answer)
			}()
		}
	}()
}

// TestReaperFailures runs DEL and GC with reaperSocket set against every way
// the agent's reaper can let the plugin down: killed while DELs are in
// flight, hung, busy, refusing. DEL and GC must still succeed, each within
// the plugin's wait for the reaper, and leave no host veth, route or
// reservation behind.
func TestReaperFailures(t *testing.T) {
	testutil.RequireRoot(t)
	tests := []struct {
		name  string
		start func(t *testing.T, f *fixture, socket string) (kill func())
	}{
		{"killed mid-batch", func(t *testing.T, f *fixture, socket string) func() {
			d := testutil.StartDaemon(t, f.node.NS, "setpriv", "--bounding-set=-all,+net_admin",
				testutil.AgentBinary(t), "reaper", "--socket="+socket)
			for i := 0; i < 100; i++ {
				if _, err := os.Stat(socket); err == nil {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			return func() { _ = syscall.Kill(d.Pid(), syscall.SIGKILL) }
		}},
		{"hung", func(t *testing.T, _ *fixture, socket string) func() { fakeReaper(t, socket, nil); return nil }},
		{"busy", func(t *testing.T, _ *fixture, socket string) func() {
			fakeReaper(t, socket, map[string]any{"busy": true})
			return nil
		}},
		{"refusing", func(t *testing.T, _ *fixture, socket string) func() {
			fakeReaper(t, socket, map[string]any{"error": "refused"})
			return nil
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			socket := filepath.Join(t.TempDir(), "run", "reaper.sock")
			f := newFixture(t, reaperRanges, fmt.Sprintf(`, "reaperSocket": %q`, socket))
			kill := tc.start(t, f, socket)

			const n = 8
			conts := make([]ns.NetNS, n)
			for i := range conts {
				conts[i] = testutil.NewNS(t)
				f.mustAdd(fmt.Sprintf("reap%d", i), conts[i].Path())
			}
			var wg sync.WaitGroup
			outcomes := make([]testutil.Outcome, n)
			for i := range conts {
				wg.Add(1)
				go func() {
					defer wg.Done()
					outcomes[i] = f.run(f.inv("DEL", fmt.Sprintf("reap%d", i), conts[i].Path()))
				}()
				if i == n/2 && kill != nil {
					kill()
				}
			}
			wg.Wait()
			for i, o := range outcomes {
				if o.ExitCode != 0 {
					t.Errorf("DEL reap%d with a %s reaper: %s", i, tc.name, o)
				}
			}
			// GC of stale attachments goes through the same reaper.
			for i := range 2 {
				f.mustAdd(fmt.Sprintf("stale%d", i), testutil.NewNS(t).Path())
			}
			if o := f.gc(nil); o.ExitCode != 0 {
				t.Errorf("GC with a %s reaper: %s", tc.name, o)
			}
			f.node.RequireClean(t, network)
			if r := f.reservations(); len(r) != 0 {
				t.Errorf("reservations left with a %s reaper: %v", tc.name, r)
			}
			f.requireUnlocked()
		})
	}
}
