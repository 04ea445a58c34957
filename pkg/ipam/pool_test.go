package ipam

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/plugins/ipam/host-local/backend/allocator"
	"golang.org/x/sys/unix"
)

// rangeSet builds a canonical range set from "subnet[,start,end[,gw]]" specs.
func rangeSet(t testing.TB, specs ...string) allocator.RangeSet {
	t.Helper()
	var rs allocator.RangeSet
	for _, s := range specs {
		var sub, start, end, gw string
		n, _ := fmt.Sscanf(s, "%s %s %s %s", &sub, &start, &end, &gw)
		_, ipn, err := net.ParseCIDR(sub)
		if err != nil {
			t.Fatalf("bad subnet %q: %v", sub, err)
		}
		r := allocator.Range{Subnet: types.IPNet(*ipn)}
		if n >= 3 {
			r.RangeStart, r.RangeEnd = net.ParseIP(start), net.ParseIP(end)
		}
		if n == 4 {
			r.Gateway = net.ParseIP(gw)
		}
		rs = append(rs, r)
	}
	if err := rs.Canonicalize(); err != nil {
		t.Fatalf("canonicalize %v: %v", specs, err)
	}
	return rs
}

func openPool(t testing.TB, dir string, sets ...allocator.RangeSet) *Pool {
	t.Helper()
	p, err := Open(dir, "testnet", sets)
	if err != nil {
		t.Fatalf("open pool: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func owner(i int) Owner { return Owner{ContainerID: fmt.Sprintf("c%04d", i), IfName: "eth0"} }

func TestAllocate(t *testing.T) {
	tests := []struct {
		name      string
		sets      []string // one range-set spec each
		requested []string
		want      []string
		wantGw    []string
		wantErr   error
	}{
		{name: "ipv4 first address skips gateway", sets: []string{"10.1.0.0/24"}, want: []string{"10.1.0.2/24"}, wantGw: []string{"10.1.0.1"}},
		{name: "ipv4 explicit range and gateway", sets: []string{"192.168.0.0/24 192.168.0.1 192.168.0.250 192.168.0.254"}, want: []string{"192.168.0.1/24"}, wantGw: []string{"192.168.0.254"}},
		{name: "ipv6", sets: []string{"fd00:10::/64"}, want: []string{"fd00:10::2/64"}, wantGw: []string{"fd00:10::1"}},
		{name: "dual stack", sets: []string{"10.1.0.0/24", "fd00:10::/64"}, want: []string{"10.1.0.2/24", "fd00:10::2/64"}, wantGw: []string{"10.1.0.1", "fd00:10::1"}},
		{name: "requested address", sets: []string{"10.1.0.0/24"}, requested: []string{"10.1.0.77"}, want: []string{"10.1.0.77/24"}, wantGw: []string{"10.1.0.1"}},
		{name: "requested outside range", sets: []string{"10.1.0.0/24"}, requested: []string{"10.2.0.7"}, wantErr: ErrConflict},
		{name: "requested gateway", sets: []string{"10.1.0.0/24"}, requested: []string{"10.1.0.1"}, wantErr: ErrConflict},
		{name: "two requested in one set", sets: []string{"10.1.0.0/24"}, requested: []string{"10.1.0.7", "10.1.0.8"}, wantErr: ErrConflict},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var sets []allocator.RangeSet
			for _, s := range tc.sets {
				sets = append(sets, rangeSet(t, s))
			}
			p := openPool(t, t.TempDir(), sets...)
			var req []net.IP
			for _, r := range tc.requested {
				req = append(req, net.ParseIP(r).To4())
			}
			leases, err := p.Allocate(owner(1), req)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Allocate error = %v, want %v", err, tc.wantErr)
				}
				if got, _ := p.List(); len(got) != 0 {
					t.Fatalf("failed Allocate left reservations: %v", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Allocate: %v", err)
			}
			if len(leases) != len(tc.want) {
				t.Fatalf("got %d leases, want %d", len(leases), len(tc.want))
			}
			for i, l := range leases {
				if l.Address.String() != tc.want[i] || l.Gateway.String() != tc.wantGw[i] {
					t.Errorf("lease %d = %s gw %s, want %s gw %s", i, l.Address.String(), l.Gateway, tc.want[i], tc.wantGw[i])
				}
			}
			again, err := p.Allocate(owner(1), nil)
			if err != nil || again[0].Address.String() != tc.want[0] {
				t.Fatalf("repeated Allocate = %v, %v; want the same address %s", again, err, tc.want[0])
			}
		})
	}
}

func TestAllocateExhaustionAndReuseOrder(t *testing.T) {
	p := openPool(t, t.TempDir(), rangeSet(t, "10.9.0.0/29")) // .2-.6 usable, .1 is the gateway
	var got []string
	for i := range 5 {
		l, err := p.Allocate(owner(i), nil)
		if err != nil {
			t.Fatalf("Allocate %d: %v", i, err)
		}
		got = append(got, l[0].Address.IP.String())
	}
	if _, err := p.Allocate(owner(99), nil); !errors.Is(err, ErrExhausted) {
		t.Fatalf("Allocate on a full pool = %v, want ErrExhausted", err)
	}
	if full, err := p.Exhausted(); err != nil || !full {
		t.Fatalf("Exhausted() = %v, %v; want true", full, err)
	}
	seen := map[string]bool{}
	for _, a := range got {
		if seen[a] {
			t.Fatalf("address %s handed out twice: %v", a, got)
		}
		seen[a] = true
	}
	// Release the second address; the next allocation must get it (it is the
	// only free one) and must not disturb anyone else.
	rel, err := p.Release(owner(1))
	if err != nil || len(rel) != 1 || rel[0].String() != got[1] {
		t.Fatalf("Release = %v, %v; want [%s]", rel, err, got[1])
	}
	if rel, err := p.Release(owner(1)); err != nil || len(rel) != 0 {
		t.Fatalf("second Release = %v, %v; want nothing and no error", rel, err)
	}
	l, err := p.Allocate(owner(100), nil)
	if err != nil || l[0].Address.IP.String() != got[1] {
		t.Fatalf("Allocate after release = %v, %v; want %s", l, err, got[1])
	}
}

func TestCursorDelaysReuse(t *testing.T) {
	p := openPool(t, t.TempDir(), rangeSet(t, "10.9.0.0/24"))
	a, _ := p.Allocate(owner(1), nil)
	if _, err := p.Release(owner(1)); err != nil {
		t.Fatal(err)
	}
	b, err := p.Allocate(owner(2), nil)
	if err != nil {
		t.Fatal(err)
	}
	if a[0].Address.IP.Equal(b[0].Address.IP) {
		t.Fatalf("a just-released address %s was handed out again at once", a[0].Address.IP)
	}
}

func TestRecoveryFromHalfWrittenState(t *testing.T) {
	dir := t.TempDir()
	p := openPool(t, dir, rangeSet(t, "10.9.0.0/24"))
	netDir := filepath.Join(dir, "testnet")

	// A process killed after writing the owner record, before its claim.
	if err := os.Symlink("10.9.0.50", filepath.Join(netDir, ownersDir, "dead:eth0")); err != nil {
		t.Fatal(err)
	}
	l, err := p.Allocate(Owner{"dead", "eth0"}, nil)
	if err != nil || l[0].Address.IP.String() != "10.9.0.50" {
		t.Fatalf("retried Allocate = %v, %v; want the recorded 10.9.0.50", l, err)
	}
	if got, err := os.Readlink(filepath.Join(netDir, ipsDir, "10.9.0.50")); err != nil || got != "dead:eth0" {
		t.Fatalf("claim not completed: %q, %v", got, err)
	}

	// A claim without an owner record (killed in the middle of an undo): GC
	// removes it, keeping the live reservation.
	if err := os.Symlink("ghost:eth0", filepath.Join(netDir, ipsDir, "10.9.0.60")); err != nil {
		t.Fatal(err)
	}
	released, err := p.GC(func(o Owner) bool { return o.ContainerID == "dead" })
	if err != nil || len(released) != 0 {
		t.Fatalf("GC = %v, %v", released, err)
	}
	if _, err := os.Lstat(filepath.Join(netDir, ipsDir, "10.9.0.60")); !os.IsNotExist(err) {
		t.Fatalf("orphaned claim survived GC: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(netDir, ipsDir, "10.9.0.50")); err != nil {
		t.Fatalf("GC removed a live claim: %v", err)
	}

	// An owner record whose address someone else took meanwhile: allocate anew.
	if err := os.Symlink("10.9.0.70", filepath.Join(netDir, ownersDir, "late:eth0")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("other:eth0", filepath.Join(netDir, ipsDir, "10.9.0.70")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("10.9.0.70", filepath.Join(netDir, ownersDir, "other:eth0")); err != nil {
		t.Fatal(err)
	}
	l, err = p.Allocate(Owner{"late", "eth0"}, nil)
	if err != nil || l[0].Address.IP.String() == "10.9.0.70" {
		t.Fatalf("Allocate over a lost claim = %v, %v; want a fresh address", l, err)
	}
}

func TestGC(t *testing.T) {
	p := openPool(t, t.TempDir(), rangeSet(t, "10.9.0.0/24"), rangeSet(t, "fd00:9::/64"))
	for i := range 6 {
		if _, err := p.Allocate(owner(i), nil); err != nil {
			t.Fatal(err)
		}
	}
	released, err := p.GC(func(o Owner) bool { return o == owner(0) || o == owner(3) })
	if err != nil {
		t.Fatal(err)
	}
	if len(released) != 4 {
		t.Fatalf("GC released %d reservations, want 4", len(released))
	}
	left, _ := p.List()
	if len(left) != 2 || left[0].Owner != owner(0) || left[1].Owner != owner(3) {
		t.Fatalf("after GC: %v", left)
	}
	used, _, _ := p.Usage()
	if used[0].Int64() != 2 || used[1].Int64() != 2 {
		t.Fatalf("usage after GC = %v, want 2 per set", used)
	}
}

// TestGCKeepsTmpInterfaceName is issue 14's finding 2: "net1.tmp" is a
// valid interface name (Multus lets users pick one), and GC must neither skip
// its owner record nor free the address it holds while the attachment is
// valid.
func TestGCKeepsTmpInterfaceName(t *testing.T) {
	p := openPool(t, t.TempDir(), rangeSet(t, "10.9.0.0/24"))
	live := Owner{ContainerID: "c1", IfName: "net1.tmp"}
	stale := Owner{ContainerID: "c2", IfName: "eth0.tmp"}
	leases, err := p.Allocate(live, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Allocate(stale, nil); err != nil {
		t.Fatal(err)
	}
	released, err := p.GC(func(o Owner) bool { return o == live })
	if err != nil {
		t.Fatal(err)
	}
	if len(released) != 1 || released[0].Owner != stale {
		t.Errorf("GC released %v, want only %s", released, stale)
	}
	held, err := p.Get(live)
	if err != nil || len(held) != 1 || !held[0].Equal(leases[0].Address.IP) {
		t.Fatalf("after GC %s holds %v (%v), want %s", live, held, err, leases[0].Address.IP)
	}
	// The address is still claimed: a new owner gets another one.
	other, err := p.Allocate(Owner{ContainerID: "c3", IfName: "eth0"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if other[0].Address.IP.Equal(leases[0].Address.IP) {
		t.Fatalf("%s handed out twice after GC", other[0].Address.IP)
	}
}

func TestStoreRefusesUnsafeState(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dataDir string)
		op    func(p *Pool) error
		want  error
	}{
		{
			name: "regular file where a record belongs",
			setup: func(t *testing.T, d string) {
				mustWrite(t, filepath.Join(d, "testnet", ownersDir, "c0001:eth0"), "10.9.0.9")
			},
			op:   func(p *Pool) error { _, err := p.Allocate(owner(1), nil); return err },
			want: ErrCorrupt,
		},
		{
			name: "garbage owner record",
			setup: func(t *testing.T, d string) {
				mustSymlink(t, "not-an-ip", filepath.Join(d, "testnet", ownersDir, "c0001:eth0"))
			},
			op:   func(p *Pool) error { _, err := p.Allocate(owner(1), nil); return err },
			want: ErrCorrupt,
		},
		{
			name: "reservation from another range configuration",
			setup: func(t *testing.T, d string) {
				mustSymlink(t, "10.9.0.9,fd00::9", filepath.Join(d, "testnet", ownersDir, "c0001:eth0"))
			},
			op:   func(p *Pool) error { _, err := p.Allocate(owner(1), nil); return err },
			want: ErrCorrupt,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := openPool(t, dir, rangeSet(t, "10.9.0.0/24"))
			tc.setup(t, dir)
			if err := tc.op(p); !errors.Is(err, tc.want) {
				t.Fatalf("error = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestStoreDoesNotFollowLinksOut(t *testing.T) {
	dir := t.TempDir()
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(dir, "testnet")); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, "testnet", []allocator.RangeSet{rangeSet(t, "10.9.0.0/24")}); err == nil {
		t.Fatal("Open followed a symlinked network directory out of dataDir")
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Fatalf("store wrote outside dataDir: %v", entries)
	}
}

func TestStorePermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	p := openPool(t, dir, rangeSet(t, "10.9.0.0/24"))
	if _, err := p.Allocate(owner(1), nil); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{
		dir:                                     0o700,
		filepath.Join(dir, "testnet"):           0o700,
		filepath.Join(dir, "testnet", "ips"):    0o700,
		filepath.Join(dir, "testnet", lockName): 0o600,
	} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Mode().Perm() &^ 0o022; got != want&^0o022 || st.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %v, want %v", path, st.Mode().Perm(), want)
		}
	}
}

func TestValidation(t *testing.T) {
	dir := t.TempDir()
	sets := []allocator.RangeSet{rangeSet(t, "10.9.0.0/24")}
	for _, bad := range []string{"", "../etc", "a/b", "-x"} {
		if _, err := Open(dir, bad, sets); err == nil {
			t.Errorf("Open accepted network name %q", bad)
		}
	}
	p := openPool(t, dir, sets...)
	for _, o := range []Owner{{"../x", "eth0"}, {"c1", "a/b"}, {"c1", ""}, {"", "eth0"}, {"c1", "averyveryverylongname"}} {
		if _, err := p.Allocate(o, nil); err == nil {
			t.Errorf("Allocate accepted owner %+v", o)
		}
	}
}

// TestConcurrentAllocate runs many allocators, each with its own open store
// (as separate plugin processes would), against one range.
func TestConcurrentAllocate(t *testing.T) {
	dir := t.TempDir()
	set := rangeSet(t, "10.9.0.0/25") // 125 usable
	const n = 64
	var wg sync.WaitGroup
	results := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := Open(dir, "testnet", []allocator.RangeSet{set})
			if err != nil {
				errs[i] = err
				return
			}
			defer p.Close()
			l, err := p.Allocate(owner(i), nil)
			if err != nil {
				errs[i] = err
				return
			}
			results[i] = l[0].Address.IP.String()
		}()
	}
	wg.Wait()
	seen := map[string]int{}
	for i, a := range results {
		if errs[i] != nil {
			t.Fatalf("Allocate %d: %v", i, errs[i])
		}
		if j, dup := seen[a]; dup {
			t.Fatalf("%s handed to both %d and %d", a, j, i)
		}
		seen[a] = i
	}
}

func mustWrite(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func mustSymlink(t *testing.T, target, path string) {
	t.Helper()
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
}

// TestRangeSetOfSeveralRanges covers findFree's walk over more than one
// range of a set: from a cursor in the last range it wraps to a hole in the
// first, a requested address may lie in any range, and exhaustion is
// reported only when every range is full.
func TestRangeSetOfSeveralRanges(t *testing.T) {
	set := rangeSet(t, "10.9.0.0/24 10.9.0.10 10.9.0.12", "10.9.1.0/24 10.9.1.10 10.9.1.11")
	p := openPool(t, t.TempDir(), set)
	want := []string{"10.9.0.10", "10.9.0.11", "10.9.0.12", "10.9.1.10", "10.9.1.11"}
	for i, w := range want {
		l, err := p.Allocate(owner(i), nil)
		if err != nil {
			t.Fatalf("Allocate #%d: %v", i, err)
		}
		if got := l[0].Address.IP.String(); got != w {
			t.Fatalf("Allocate #%d = %s, want %s (in range order)", i, got, w)
		}
	}
	steps := []struct {
		name    string
		release int // owner released first, -1 for none
		request string
		want    string // "" means exhausted
	}{
		{"cursor in the last range wraps to a hole in the first", 1, "", "10.9.0.11"},
		{"every range full", -1, "", ""},
		{"requested address in the second range", 3, "10.9.1.10", "10.9.1.10"},
		{"hole behind the cursor in the same range", 4, "", "10.9.1.11"},
	}
	for i, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.release >= 0 {
				if _, err := p.Release(owner(st.release)); err != nil {
					t.Fatal(err)
				}
			}
			var req []net.IP
			if st.request != "" {
				req = []net.IP{net.ParseIP(st.request)}
			}
			l, err := p.Allocate(owner(100+i), req)
			if st.want == "" {
				full, ferr := p.Exhausted()
				if !errors.Is(err, ErrExhausted) || ferr != nil || !full {
					t.Fatalf("Allocate on a full set = %v, %v; Exhausted() = %v, %v; want ErrExhausted and true", l, err, full, ferr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := l[0].Address.IP.String(); got != st.want {
				t.Fatalf("Allocate = %s, want %s", got, st.want)
			}
		})
	}
}

// TestLockTimeoutIsBusy: another process holding the network's lock past
// the timeout gives ErrBusy, which the plugin reports as "try again later"
// (CNI code 11), and changes nothing.
func TestLockTimeoutIsBusy(t *testing.T) {
	dir := t.TempDir()
	p := openPool(t, dir, rangeSet(t, "10.9.0.0/29"))
	old := lockTimeout
	lockTimeout = time.Millisecond
	t.Cleanup(func() { lockTimeout = old })
	f, err := os.Open(filepath.Join(dir, "testnet", lockName))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Allocate(owner(1), nil); !errors.Is(err, ErrBusy) {
		t.Fatalf("Allocate with the lock held elsewhere = %v, want ErrBusy", err)
	}
	if _, err := p.Release(owner(1)); !errors.Is(err, ErrBusy) {
		t.Fatalf("Release with the lock held elsewhere = %v, want ErrBusy", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	if rs, err := p.List(); err != nil || len(rs) != 0 {
		t.Fatalf("after the refused calls the store holds %v (%v), want nothing", rs, err)
	}
}
