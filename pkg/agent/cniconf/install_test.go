package cniconf

import (
	"os"
	"path/filepath"
	"testing"
)

func TestInstallPlugin(t *testing.T) {
	src := filepath.Join(t.TempDir(), "vethroute")
	if err := os.WriteFile(src, []byte("#!/bin/true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dstDir := filepath.Join(t.TempDir(), "opt", "cni", "bin")
	for i, want := range []bool{true, false} {
		wrote, err := InstallPlugin(src, dstDir)
		if err != nil {
			t.Fatal(err)
		}
		if wrote != want {
			t.Errorf("install %d: wrote = %v, want %v", i, wrote, want)
		}
	}
	st, err := os.Stat(filepath.Join(dstDir, "vethroute"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o755 {
		t.Errorf("installed mode %v, want 0755 (runtimes exec it)", st.Mode().Perm())
	}
	if _, err := InstallPlugin(filepath.Join(t.TempDir(), "missing"), dstDir); err == nil {
		t.Error("installing a missing binary succeeded")
	}
}
