package testutil

import (
	"debug/elf"
	"path/filepath"
	"strings"
	"testing"
)

// TestBuildIsStatic builds the plugin both ways and checks that each binary
// is static (no ELF interpreter; with cgo, package net would link libc) and
// that only BuildStripped drops the symbol table.
func TestBuildIsStatic(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go build")
	}
	for _, tc := range []struct {
		name     string
		build    func(root, dir string, pkgs ...string) error
		stripped bool
	}{
		{"Build", Build, false},
		{"BuildStripped", BuildStripped, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := tc.build(RepoRoot(t), dir, "./plugins/vethroute"); err != nil {
				t.Fatal(err)
			}
			f, err := elf.Open(filepath.Join(dir, "vethroute"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			for _, p := range f.Progs {
				if p.Type == elf.PT_INTERP {
					t.Error("binary has an ELF interpreter: it is not static")
				}
			}
			if _, err := f.Symbols(); (err != nil) != tc.stripped {
				t.Errorf("symbols: %v, want stripped %v", err, tc.stripped)
			}
		})
	}
}

func TestReferencePackages(t *testing.T) {
	pkgs, err := ReferencePackages("ptp", "host-local")
	if err != nil || len(pkgs) != 2 || !strings.HasSuffix(pkgs[0], "/main/ptp") || !strings.HasSuffix(pkgs[1], "/ipam/host-local") {
		t.Errorf("ReferencePackages(ptp, host-local) = %v, %v", pkgs, err)
	}
	if _, err := ReferencePackages("nosuch"); err == nil || !strings.Contains(err.Error(), "nosuch") {
		t.Errorf("unknown plugin: err = %v, want one naming it", err)
	}
}
