package cniconf

import (
	"os"
	"path/filepath"
	"strings"
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

func TestInstallPlugins(t *testing.T) {
	src := t.TempDir()
	for _, name := range []string{"vethroute", "portmap", "bandwidth"} {
		if err := os.WriteFile(filepath.Join(src, name), []byte("#!/bin/true "+name+"\n"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// A directory inside is not a plugin and is not copied.
	if err := os.Mkdir(filepath.Join(src, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	dstDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dstDir, "portmap"), []byte("#!/bin/true portmap\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	wrote, err := InstallPlugins(src, dstDir)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(wrote, ",") != "bandwidth,vethroute" {
		t.Errorf("wrote %v, want [bandwidth vethroute] (portmap was identical)", wrote)
	}
	for _, name := range []string{"vethroute", "portmap", "bandwidth"} {
		if b, err := os.ReadFile(filepath.Join(dstDir, name)); err != nil || string(b) != "#!/bin/true "+name+"\n" {
			t.Errorf("%s installed as %q, %v", name, b, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dstDir, "sub")); err == nil {
		t.Error("a directory was installed")
	}
	// A single file still works, for a DaemonSet that names the plugin.
	if wrote, err := InstallPlugins(filepath.Join(src, "vethroute"), t.TempDir()); err != nil || len(wrote) != 1 {
		t.Errorf("single file: wrote %v, %v", wrote, err)
	}
	if _, err := InstallPlugins(t.TempDir(), dstDir); err == nil {
		t.Error("an empty directory installed nothing without an error")
	}
}
