package reliability

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vethroute/vethroute/internal/testutil"
)

const storeRanges = `[[{"subnet": "10.44.0.0/24", "rangeStart": "10.44.0.1", "rangeEnd": "10.44.0.30", "gateway": "10.44.0.254"}]]`

// TestStoreModes checks that the plugin creates the store (and its log)
// private to root even under a umask that would let anyone read them.
func TestStoreModes(t *testing.T) {
	testutil.RequireRoot(t)
	f := newFixture(t, storeRanges, "")
	logDir := filepath.Join(t.TempDir(), "logs")
	f.node.DataDir = filepath.Join(t.TempDir(), "nested", "store")
	f.conf = []byte(f.render(storeRanges, `, "logLevel": "debug", "logFile": "`+filepath.Join(logDir, "vethroute.log")+`"`))
	cont := testutil.NewNS(t)

	old := syscall.Umask(0)
	ips, o := f.add("c1", cont.Path())
	syscall.Umask(old)
	if ips == nil {
		t.Fatalf("ADD: %s", o)
	}
	want := map[string]fs.FileMode{
		filepath.Dir(f.node.DataDir):                        fs.ModeDir | 0o700,
		f.node.DataDir:                                      fs.ModeDir | 0o700,
		f.storeDir():                                        fs.ModeDir | 0o700,
		filepath.Join(f.storeDir(), "ips"):                  fs.ModeDir | 0o700,
		filepath.Join(f.storeDir(), "owners"):               fs.ModeDir | 0o700,
		filepath.Join(f.storeDir(), "lock"):                 0o600,
		logDir:                                              fs.ModeDir | 0o700,
		filepath.Join(logDir, "vethroute.log"):              0o600,
		filepath.Join(f.storeDir(), "ips", ips[0].String()): fs.ModeSymlink,
		filepath.Join(f.storeDir(), "owners", "c1:eth0"):    fs.ModeSymlink,
	}
	for p, mode := range want {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		got := fi.Mode()
		if mode == fs.ModeSymlink {
			got &= fs.ModeType // a symlink's permission bits mean nothing
		}
		if got != mode {
			t.Errorf("%s has mode %v, want %v", p, fi.Mode(), mode)
		}
	}
	f.mustDel("c1", cont.Path())
}

// TestPlantedSymlinks plants symlinks in the store that point out of it and
// checks that the plugin never follows one: whatever ADD, DEL and GC do
// (succeed, or fail with a clear error), the directory outside stays as it
// was, and the plugin never crashes.
func TestPlantedSymlinks(t *testing.T) {
	testutil.RequireRoot(t)
	cases := []struct {
		name string
		// plant replaces a path under the network's store directory with a
		// symlink to target (a directory or file outside the store).
		path, target string
		// fails is true when ADD must refuse (the store cannot work with
		// the link there); otherwise ADD must succeed around it.
		fails bool
	}{
		{name: "network directory", path: "", target: "outside", fails: true},
		{name: "address records directory", path: "ips", target: "outside", fails: true},
		{name: "owner records directory", path: "owners", target: "outside", fails: true},
		{name: "lock file", path: "lock", target: "outside/victim", fails: true},
		{name: "cursor hint", path: "cursor.0", target: "outside/victim"},
		{name: "cursor temporary", path: "cursor.0.tmp", target: "outside/victim"},
		{name: "address record", path: "ips/10.44.0.3", target: "outside/victim"},
		{name: "owner record", path: "owners/c9:eth0", target: "outside/victim"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, storeRanges, "")
			cont := testutil.NewNS(t)
			// An ADD/DEL first, so the store exists with its cursor.
			f.mustAdd("c0", cont.Path())
			f.mustDel("c0", cont.Path())

			top := t.TempDir()
			outside := filepath.Join(top, "outside")
			if err := os.MkdirAll(outside, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(outside, "victim"), []byte("precious\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			planted := filepath.Join(f.storeDir(), tc.path)
			if err := os.RemoveAll(planted); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(filepath.Join(top, tc.target), planted); err != nil {
				t.Fatal(err)
			}
			before := testutil.TreeSnapshot(t, top)

			ips, o := f.add("c1", cont.Path())
			switch {
			case o.Signaled || (o.ExitCode != 0 && o.ExitCode != 1):
				t.Fatalf("ADD crashed: %s", o)
			case tc.fails && ips != nil:
				t.Errorf("ADD worked through the planted link %s -> %s: %v", planted, tc.target, ips)
			case !tc.fails && ips == nil:
				t.Errorf("ADD failed: %s", o)
			case ips == nil:
				cerr, err := o.CNIError()
				if err != nil {
					t.Fatal(err)
				}
				if cerr.Code != types.ErrIOFailure || !strings.Contains(cerr.Msg, "corrupt") || !strings.Contains(cerr.Msg, planted) {
					t.Errorf("ADD's error is not code 5 naming the corrupt %s: code %d %q", planted, cerr.Code, cerr.Msg)
				}
				t.Logf("ADD refused: code %d: %s", cerr.Code, cerr.Msg)
			}
			if ips != nil && tc.path == "ips/10.44.0.3" && ips[0].String() == "10.44.0.3" {
				t.Errorf("ADD handed out 10.44.0.3, whose record is the planted link")
			}
			for _, op := range []string{"DEL", "GC"} {
				var o testutil.Outcome
				if op == "DEL" {
					o = f.run(f.inv("DEL", "c1", cont.Path()))
				} else {
					o = f.gc(nil)
				}
				if o.Signaled || (o.ExitCode != 0 && o.ExitCode != 1) {
					t.Fatalf("%s crashed: %s", op, o)
				}
			}
			if after := testutil.TreeSnapshot(t, top); after != before {
				t.Errorf("the plugin wrote outside its store through %s:\n%s", planted, testutil.DiffLines(before, after))
			}
			if got := strings.TrimSpace(testutil.MustRunIn(t, f.node.NS, "ip", "-o", "link", "show", "group", "30322")); got != "" {
				t.Errorf("host veth left behind: %s", got)
			}
		})
	}
}

// TestCorruptStore damages records of live attachments and checks that the
// plugin stops with a clear error (code 5) rather than guessing, never hands
// out an address that a damaged record may still stand for, and that the
// repair procedure of docs/reliability.md restores a consistent store.
func TestCorruptStore(t *testing.T) {
	testutil.RequireRoot(t)
	f := newFixture(t, storeRanges, "")
	var nss []*attachment
	live := map[string]*attachment{}
	for _, cid := range []string{"c1", "c2", "c3"} {
		a := &attachment{cid: cid, ns: testutil.NewNS(t)}
		a.ips = f.mustAdd(cid, a.ns.Path())
		live[cid] = a
		nss = append(nss, a)
	}
	c2, c3 := live["c2"], live["c3"]
	ipsDir, ownersDir := filepath.Join(f.storeDir(), "ips"), filepath.Join(f.storeDir(), "owners")
	// c2's address record becomes a regular file (another tool wrote it),
	// c3's owner record says nothing sensible, and an owner record appears
	// whose name is no owner key at all.
	mustDo(t, os.Remove(filepath.Join(ipsDir, c2.ips[0].String())))
	mustDo(t, os.WriteFile(filepath.Join(ipsDir, c2.ips[0].String()), []byte("c2:eth0\n"), 0o600))
	mustDo(t, os.Remove(filepath.Join(ownersDir, "c3:eth0")))
	mustDo(t, os.Symlink("not-an-address", filepath.Join(ownersDir, "c3:eth0")))
	mustDo(t, os.Symlink("10.44.0.29", filepath.Join(ownersDir, "junk")))

	requireCorrupt := func(what string, o testutil.Outcome, record string) {
		t.Helper()
		cerr, err := o.CNIError()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if cerr.Code != types.ErrIOFailure || !strings.Contains(cerr.Msg, "corrupt") ||
			!strings.Contains(cerr.Msg, record) || !strings.Contains(cerr.Msg, "reliability.md") {
			t.Errorf("%s: want code 5 saying the store is corrupt at %s and where the repair is documented, got code %d %q", what, record, cerr.Code, cerr.Msg)
		}
	}
	// GC cannot tell owners apart any more, and says so.
	requireCorrupt("GC", f.gc([]string{"c1", "c2", "c3"}), "junk")
	// DEL of c3 tears the veth down but cannot release what it cannot read.
	requireCorrupt("DEL c3", f.run(f.inv("DEL", "c3", c3.ns.Path())), "not-an-address")
	delete(live, "c3")
	// New ADDs either fail on the damage or get an address no damaged
	// record could stand for: never c2's, never c3's.
	taken := []string{c2.ips[0].String(), c3.ips[0].String(), "10.44.0.29"}
	for _, cid := range []string{"c4", "c5"} {
		a := &attachment{cid: cid, ns: testutil.NewNS(t)}
		ips, o := f.add(cid, a.ns.Path())
		if ips == nil {
			requireCorrupt("ADD "+cid, o, f.storeDir())
			continue
		}
		if slices.Contains(taken, ips[0].String()) {
			t.Errorf("ADD %s got %s, an address a damaged record still holds", cid, ips[0])
		}
		a.ips = ips
		live[cid] = a
		nss = append(nss, a)
	}

	// The operator repairs the store as docs/reliability.md says.
	script := repairScript(t)
	out, err := testutil.RunIn(t, f.node.NS, time.Minute, "env", "DATADIR="+f.node.DataDir, "NETWORK="+network, "bash", "-c", script)
	if err != nil {
		t.Fatalf("repair script: %v\n%s", err, out)
	}
	t.Logf("repair script output:\n%s", out)
	// The runtime's retried DEL of c3 now succeeds, the store matches the
	// node exactly, GC works, and new ADDs never collide.
	f.mustDel("c3", c3.ns.Path())
	var containers []*attachment
	containers = append(containers, nss...)
	f.requireConsistent(live, nsList(containers), []string{"10.44.0.254/32"})
	if o := f.gc(sortedKeys(live)); o.ExitCode != 0 {
		t.Fatalf("GC after repair: %s", o)
	}
	extra := &attachment{cid: "c6", ns: testutil.NewNS(t)}
	extra.ips = f.mustAdd("c6", extra.ns.Path())
	for _, a := range live {
		if a.ips[0].Equal(extra.ips[0]) {
			t.Errorf("after repair, ADD c6 got %s, which %s holds", extra.ips[0], a.cid)
		}
	}
	live["c6"] = extra
	f.requireConsistent(live, nsList(append(containers, extra)), []string{"10.44.0.254/32"})
	for _, cid := range sortedKeys(live) {
		f.mustDel(cid, live[cid].ns.Path())
	}
	f.node.RequireClean(t, network)
}

// repairScript extracts the repair procedure from docs/reliability.md, so
// the test runs exactly what the document tells an operator to run.
func repairScript(t *testing.T) string {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join(testutil.RepoRoot(t), "docs", "reliability.md"))
	if err != nil {
		t.Fatalf("read docs/reliability.md: %v", err)
	}
	m := regexp.MustCompile("(?s)<!-- repair-script -->\\s*```(?:sh|bash)\\n(.*?)```").FindSubmatch(doc)
	if m == nil {
		t.Fatal("docs/reliability.md has no ```sh block after <!-- repair-script -->")
	}
	return string(m[1])
}

func nsList(as []*attachment) []ns.NetNS {
	out := make([]ns.NetNS, len(as))
	for i, a := range as {
		out[i] = a.ns
	}
	return out
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
