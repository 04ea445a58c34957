package testutil

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
)

// NetSnapshot returns the detailed state of a namespace's interfaces,
// addresses and routes (both families, every table), as `ip -d` prints
// them. Two snapshots are equal exactly when nothing a plugin could have
// added, changed or removed differs, so a test compares them to prove that
// a rejected invocation left the namespace alone.
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
		fmt.Fprintf(&b, "$ ip %s\n%s", strings.Join(args, " "), MustRunIn(t, netns, "ip", args...))
	}
	return b.String()
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
