package testutil

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// volatile matches what `ip -d` prints that changes by itself: a bridge's
// running timers, and the peer namespace of a veth, which ip resolves to a
// name by scanning /var/run/netns and so prints differently while other
// namespaces come and go (the container side is snapshotted on its own).
var volatile = regexp.MustCompile(`(hello_timer|tcn_timer|topology_change_timer|gc_timer)\s+[0-9.]+|(link-netns|link-netnsid) \S+`)

// NetSnapshot returns the detailed state of a namespace's interfaces,
// addresses and routes (both families, every table), as `ip -d` prints
// them, with running timers blanked. Two snapshots are equal exactly when
// nothing a plugin could have added, changed or removed differs, so a test
// compares them to prove that a rejected invocation left the namespace
// alone. Take the first one after SettleDAD, or an address finishing
// duplicate address detection shows up as a change.
func NetSnapshot(t testing.TB, netns ns.NetNS) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{
		{"-d", "link", "show"},
		{"-d", "addr", "show"},
		{"-d", "-4", "route", "show", "table", "all"},
		{"-d", "-6", "route", "show", "table", "all"},
		{"-d", "-4", "rule", "show"},
		{"-d", "-6", "rule", "show"},
	} {
		out := volatile.ReplaceAllString(ipStdout(t, netns, args...), "$1$2 -")
		fmt.Fprintf(&b, "$ ip %s\n%s", strings.Join(args, " "), out)
	}
	return b.String()
}

// ipStdout runs ip in netns and returns its standard output only: ip warns
// on stderr about namespaces that vanish while it scans /var/run/netns,
// which says nothing about netns itself.
func ipStdout(t testing.TB, netns ns.NetNS, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + netns.Path(), "ip"}, args...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("ip %s in %s: %v\n%s%s", strings.Join(args, " "), netns.Path(), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// SettleDAD waits (at most 10 seconds) until no IPv6 address in netns is
// still tentative, so that snapshots taken afterwards only differ if
// something really changed.
func SettleDAD(t testing.TB, netns ns.NetNS) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out := strings.TrimSpace(MustRunIn(t, netns, "ip", "-6", "addr", "show", "tentative"))
		if out == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("addresses in %s still tentative after 10s:\n%s", netns.Path(), out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TreeSnapshot lists every entry under dir with its type, permissions and
// content: a symlink's target (read, never followed), a regular file's
// size and SHA-256. A missing dir is an empty listing.
func TreeSnapshot(t testing.TB, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) && p == dir {
				return filepath.SkipDir
			}
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fmt.Fprintf(&b, "%s %s", rel, info.Mode())
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " -> %s", target)
		case info.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(data)
			fmt.Fprintf(&b, " %d %s", len(data), hex.EncodeToString(sum[:8]))
		}
		b.WriteByte('\n')
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot %s: %v", dir, err)
	}
	return b.String()
}

// DiffLines returns the lines only in a and the lines only in b, or "" when
// both hold the same lines: enough to say what a snapshot gained or lost.
func DiffLines(a, b string) string {
	count := map[string]int{}
	for _, l := range strings.Split(a, "\n") {
		count[l]++
	}
	for _, l := range strings.Split(b, "\n") {
		count[l]--
	}
	var out []string
	for _, l := range strings.Split(a, "\n") {
		if count[l] > 0 {
			out = append(out, "- "+l)
			count[l]--
		}
	}
	for _, l := range strings.Split(b, "\n") {
		if count[l] < 0 {
			out = append(out, "+ "+l)
			count[l]++
		}
	}
	return strings.Join(out, "\n")
}
