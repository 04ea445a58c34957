package ipam

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/plugins/ipam/host-local/backend/allocator"
)

// The fuzz targets run against a temporary store: a small dual-stack pool
// (6 addresses per range set, so exhaustion is reached quickly) and a
// directory beside the store that nothing may ever touch.

// fuzzRanges returns the range sets of the fuzz pool.
func fuzzRanges(t testing.TB) []allocator.RangeSet {
	t.Helper()
	mk := func(subnet, start, end, gw string) allocator.RangeSet {
		_, n, err := net.ParseCIDR(subnet)
		if err != nil {
			t.Fatal(err)
		}
		rs := allocator.RangeSet{{Subnet: types.IPNet(*n), RangeStart: net.ParseIP(start), RangeEnd: net.ParseIP(end), Gateway: net.ParseIP(gw)}}
		if err := rs.Canonicalize(); err != nil {
			t.Fatal(err)
		}
		return rs
	}
	return []allocator.RangeSet{
		mk("10.9.0.0/24", "10.9.0.1", "10.9.0.6", "10.9.0.254"),
		mk("fd00:9::/64", "fd00:9::1", "fd00:9::6", "fd00:9::ff"),
	}
}

const fuzzCapacity = 6

// fuzzStore makes a data directory and a sentinel directory beside it.
func fuzzStore(t *testing.T) (dataDir string, sentinel func() string) {
	base := t.TempDir()
	dataDir = filepath.Join(base, "data")
	outside := filepath.Join(base, "outside")
	if err := os.MkdirAll(outside, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "victim"), []byte("untouched"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dataDir, func() string {
		var b strings.Builder
		_ = filepath.Walk(outside, func(p string, fi os.FileInfo, err error) error {
			if err != nil {
				fmt.Fprintf(&b, "%s: %v\n", p, err)
				return nil
			}
			fmt.Fprintf(&b, "%s %v %d\n", p, fi.Mode(), fi.Size())
			return nil
		})
		return b.String()
	}
}

// fuzzIfNames are valid CNI interface names, chosen to look like what the
// store itself writes (a ".tmp" suffix) or could mistake for a path.
var fuzzIfNames = []string{"eth0", "net1.tmp", "a", "cursor.0", "x-y_z.1", "tmp", "..a", "e.tmp.tmp"}

func fuzzOwner(i byte) Owner {
	return Owner{ContainerID: fmt.Sprintf("ctr%d", i%8), IfName: fuzzIfNames[int(i/8)%len(fuzzIfNames)]}
}

// FuzzOwnerKey checks that an owner the store accepts round-trips through
// its key and that the key is a single, harmless file name.
func FuzzOwnerKey(f *testing.F) {
	for _, s := range [][2]string{
		{"c1", "eth0"}, {"../../etc", "eth0"}, {"c1", "../x"}, {"c:1", "eth0"}, {"c1", "e:th0"},
		{"", "eth0"}, {"c1", ""}, {".", "."}, {"c1", strings.Repeat("e", 16)}, {strings.Repeat("c", 300), "eth0"},
		{"c\x00", "eth0"}, {"c1", "eth\n0"}, {"c1", "net1.tmp"}, {"c1", "cursor.0"}, {"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "net1"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, id, ifName string) {
		o := Owner{ContainerID: id, IfName: ifName}
		if o.Validate() != nil {
			return
		}
		key := o.key()
		if strings.ContainsAny(key, "/\x00") || key == "." || key == ".." {
			t.Fatalf("accepted owner %q makes key %q, which is not a plain file name", o, key)
		}
		back, err := parseOwner(key)
		if err != nil || back != o {
			t.Fatalf("owner %+v -> key %q -> %+v, %v", o, key, back, err)
		}
		// A key the file system cannot hold must fail cleanly, not half-way.
		dir, _ := fuzzStore(t)
		p, err := Open(dir, "fuzz", fuzzRanges(t))
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		leases, err := p.Allocate(o, nil)
		all, lerr := p.List()
		if lerr != nil {
			t.Fatalf("List after Allocate(%q): %v", key, lerr)
		}
		switch {
		case err == nil && (len(all) != 1 || all[0].Owner != o || len(leases) != 2):
			t.Fatalf("Allocate(%q) = %v, but List = %v", key, leases, all)
		case err != nil && len(all) != 0:
			t.Fatalf("Allocate(%q) failed (%v) but left %v", key, err, all)
		}
		if _, err := p.Release(o); err != nil && len(all) != 0 {
			t.Fatalf("Release(%q): %v", key, err)
		}
	})
}

// FuzzStoreRecords plants an arbitrary record (any name, any content, a
// symlink or a regular file or a directory) among real reservations and
// runs every operation of the pool. Nothing may panic, nothing outside the
// store may change, the real reservations must survive, and no address
// they hold may be handed to anyone else.
func FuzzStoreRecords(f *testing.F) {
	for _, s := range []struct {
		dir, name, content string
		kind               byte
	}{
		{"ips", "10.9.0.3", "ctr7:eth0", 0},
		{"ips", "10.9.0.3", "../../outside/victim", 0},
		{"ips", "10.9.0.4", "garbage", 1},
		{"ips", "10.9.0.5", "", 2},
		{"ips", "not-an-address", "ctr1:eth0", 0},
		{"owners", "ctr5:eth0", "10.9.0.1,fd00:9::1", 0},
		{"owners", "ctr5:eth0", "10.9.0.77,fd00:9::1", 0},
		{"owners", "ctr5:eth0", "10.9.0.2", 0},
		{"owners", "ctr5:eth0", "not-an-address", 0},
		{"owners", "junk", "10.9.0.2,fd00:9::2", 0},
		{"owners", "ctr6:eth0", "../../outside/victim", 1},
		{"", "cursor.0", "10.9.0.6", 0},
		{"", "cursor.1", "../../outside/victim", 0},
		{"", "cursor.0.tmp", "../outside/victim", 0},
		{"", "lock", "../outside/victim", 0},
		{"", "ips", "../outside", 0},
	} {
		f.Add(s.dir, s.name, s.content, s.kind, []byte{0, 1, 2, 3, 4, 5})
	}
	f.Fuzz(func(t *testing.T, dir, name, content string, kind byte, ops []byte) {
		if name == "" || name == "." || name == ".." || len(name) > 255 || strings.ContainsAny(name, "/\x00") ||
			strings.ContainsRune(content, 0) || len(content) > 4000 || (dir != "" && dir != "ips" && dir != "owners") || len(ops) > 64 {
			t.Skip("not something a file system can hold")
		}
		dataDir, sentinel := fuzzStore(t)
		before := sentinel()
		p, err := Open(dataDir, "fuzz", fuzzRanges(t))
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			if p != nil {
				p.Close()
			}
		}()
		// Two real attachments, made before the damage.
		held := map[Owner][]net.IP{}
		for _, i := range []byte{0, 1} {
			l, err := p.Allocate(fuzzOwner(i), nil)
			if err != nil {
				t.Fatal(err)
			}
			held[fuzzOwner(i)] = []net.IP{l[0].Address.IP, l[1].Address.IP}
		}
		target := filepath.Join(dataDir, "fuzz", dir, name)
		_ = os.RemoveAll(target)
		switch kind % 3 {
		case 0:
			err = os.Symlink(content, target)
		case 1:
			err = os.WriteFile(target, []byte(content), 0o600)
		case 2:
			err = os.Mkdir(target, 0o700)
		}
		if err != nil {
			t.Skipf("cannot plant %s: %v", target, err)
		}
		// Every plugin invocation opens the store afresh.
		p.Close()
		if p, err = Open(dataDir, "fuzz", fuzzRanges(t)); err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open after planting %s: %v, not ErrCorrupt", target, err)
			}
			if after := sentinel(); after != before {
				t.Fatalf("the directory beside the store changed:\n%s\n->\n%s", before, after)
			}
			return
		}
		// The planted record may have replaced a real one; those owners
		// are damaged and no longer promised anything.
		for o, ips := range held {
			for _, ip := range ips {
				if (dir == "ips" && name == ip.String()) || (dir == "owners" && name == o.key()) || dir == "" && (name == "ips" || name == "owners") {
					delete(held, o)
				}
			}
		}
		for i, op := range ops {
			o := fuzzOwner(op >> 3)
			switch op % 6 {
			case 0, 1:
				leases, err := p.Allocate(o, nil)
				if err != nil {
					continue
				}
				got := []net.IP{leases[0].Address.IP, leases[1].Address.IP}
				for other, ips := range held {
					if other == o {
						continue
					}
					for _, a := range got {
						if slices.ContainsFunc(ips, a.Equal) {
							t.Fatalf("op %d: Allocate(%s) handed out %s, which %s holds", i, o, a, other)
						}
					}
				}
				if prev, ok := held[o]; ok && !equalIPList(prev, got) {
					t.Fatalf("op %d: Allocate(%s) again gave %v, it held %v", i, o, got, prev)
				}
				held[o] = got
			case 2:
				if _, err := p.Release(o); err == nil {
					delete(held, o)
				}
			case 3:
				_, _ = p.List()
				_, _, _ = p.Usage()
				_, _ = p.Get(o)
			case 4:
				// GC keeping everything it was told of must release none of it.
				_, _ = p.GC(func(x Owner) bool { _, ok := held[x]; return ok })
			case 5:
				_, _ = p.Exhausted()
			}
			for x, ips := range held {
				got, err := p.Get(x)
				if err != nil || !equalIPList(got, ips) {
					t.Fatalf("op %d: %s held %v, the store now says %v (%v)", i, x, ips, got, err)
				}
			}
		}
		if after := sentinel(); after != before {
			t.Fatalf("the directory beside the store changed:\n%s\n->\n%s", before, after)
		}
	})
}

// FuzzPoolOps runs arbitrary sequences of Allocate (with and without a
// requested address), Release, GC and simulated crashes (a reservation
// killed after its owner record, or after part of its address records)
// against a model of what must hold: an owner keeps its addresses until it
// is released, never shares one, gets them back on a repeated Allocate, is
// told "exhausted" only when a range set is full, and List always reads.
func FuzzPoolOps(f *testing.F) {
	f.Add([]byte{0, 8, 16, 24, 32, 40, 48, 56, 2, 10, 3, 0})
	f.Add([]byte{5, 0, 5, 8, 1, 19, 4, 12})
	f.Add([]byte{6, 0, 6, 8, 6, 16, 0, 0, 3, 255})
	f.Add([]byte{1, 3, 1, 3, 1, 11, 2, 0, 1, 3})
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 128 {
			t.Skip()
		}
		dataDir, _ := fuzzStore(t)
		ranges := fuzzRanges(t)
		p, err := Open(dataDir, "fuzz", ranges)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		held := map[Owner][]net.IP{}
		for i := 0; i+1 < len(ops); i += 2 {
			op, arg := ops[i], ops[i+1]
			o := fuzzOwner(op >> 3)
			switch op % 8 {
			case 0, 1, 2: // Allocate, sometimes a requested address
				var req []net.IP
				if op%8 == 1 {
					req = []net.IP{net.IPv4(10, 9, 0, arg%9).To4()}
				}
				leases, err := p.Allocate(o, req)
				if err != nil {
					if errors.Is(err, ErrExhausted) {
						if full, uerr := p.Exhausted(); uerr != nil || !full {
							t.Fatalf("op %d: Allocate(%s) said exhausted, but Exhausted() = %v, %v", i, o, full, uerr)
						}
					} else if !errors.Is(err, ErrConflict) {
						t.Fatalf("op %d: Allocate(%s, %v): %v", i, o, req, err)
					}
					if _, ok := held[o]; ok && !errors.Is(err, ErrConflict) {
						t.Fatalf("op %d: Allocate(%s) failed although it holds %v: %v", i, o, held[o], err)
					}
					continue
				}
				got := []net.IP{leases[0].Address.IP, leases[1].Address.IP}
				if req != nil && !got[0].Equal(req[0]) {
					t.Fatalf("op %d: requested %s, got %v", i, req[0], got)
				}
				if prev, ok := held[o]; ok && !equalIPList(prev, got) {
					t.Fatalf("op %d: Allocate(%s) again gave %v, it held %v", i, o, got, prev)
				}
				for j, a := range got {
					if !ranges[j].Contains(a) {
						t.Fatalf("op %d: %s is outside range set %d", i, a, j)
					}
				}
				held[o] = got
			case 3: // Release
				if _, err := p.Release(o); err != nil {
					t.Fatalf("op %d: Release(%s): %v", i, o, err)
				}
				delete(held, o)
			case 4: // GC keeping the owners whose bit is set in arg
				keep := func(x Owner) bool { _, ok := held[x]; return ok && arg&(1<<(x.ContainerID[3]-'0')) != 0 }
				if _, err := p.GC(keep); err != nil {
					t.Fatalf("op %d: GC: %v", i, err)
				}
				for x := range held {
					if !keep(x) {
						delete(held, x)
					}
				}
			case 5, 6: // a reservation killed half-way: owner record, then op%8-5 address records
				if _, ok := held[o]; ok {
					continue
				}
				picked := make([]net.IP, len(ranges))
				ok := true
				for j := range ranges {
					if picked[j], err = p.findFree(j); err != nil {
						ok = false
					}
				}
				if !ok {
					continue
				}
				_ = p.st.createRecord(ownerRecord(o), joinIPs(picked))
				for _, a := range picked[:op%8-5] {
					_ = p.st.createRecord(ipRecord(a), o.key())
				}
				// Neither held nor free: the runtime retries ADD (and gets
				// these back) or DELs; the model waits for that.
			case 7:
				if _, err := p.List(); err != nil {
					t.Fatalf("op %d: List: %v", i, err)
				}
			}
			// Every owner the model holds is intact, and no address is
			// claimed twice.
			seen := map[string]Owner{}
			for x, ips := range held {
				got, err := p.Get(x)
				if err != nil || !equalIPList(got, ips) {
					t.Fatalf("op %d: %s held %v, the store says %v (%v)", i, x, ips, got, err)
				}
				for _, a := range ips {
					if y, dup := seen[a.String()]; dup {
						t.Fatalf("op %d: %s held by %s and %s", i, a, x, y)
					}
					seen[a.String()] = x
					cur, _, _ := p.st.readRecord(ipRecord(a))
					if cur != x.key() {
						t.Fatalf("op %d: %s of %s is claimed by %q", i, a, x, cur)
					}
				}
			}
			if _, err := p.List(); err != nil {
				t.Fatalf("op %d: List: %v", i, err)
			}
		}
		// A GC keeping nobody empties the store completely.
		if _, err := p.GC(func(Owner) bool { return false }); err != nil {
			t.Fatal(err)
		}
		for _, d := range []string{ipsDir, ownersDir} {
			names, err := p.st.list(d)
			if err != nil || len(names) != 0 {
				sort.Strings(names)
				t.Fatalf("after GC keeping nobody, %s holds %v (%v)", d, names, err)
			}
		}
	})
}

func equalIPList(a, b []net.IP) bool {
	return slices.EqualFunc(a, b, func(x, y net.IP) bool { return x.Equal(y) })
}
