package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteReportKeepsMarkedSections(t *testing.T) {
	path := filepath.Join(t.TempDir(), "benchmarks.md")
	if err := writeReport(path, "# first run\n"); err != nil {
		t.Fatal(err)
	}
	scale := "<!-- bench-scale:begin -->\n## Cluster scale\nfigures\n<!-- bench-scale:end -->\n"
	if err := os.WriteFile(path, []byte("# first run\n\n"+scale), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeReport(path, "# second run\n"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	if !strings.HasPrefix(got, "# second run\n") || !strings.Contains(got, scale) || strings.Contains(got, "first run") {
		t.Errorf("rewritten report:\n%s", got)
	}
}
