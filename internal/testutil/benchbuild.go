package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// BuildVethroute builds the vethroute plugin into dir (CGO_ENABLED=0, as
// `make build` does) from the repository at root. Unlike PluginDir it needs
// no testing.TB, for programs such as the benchmark runner.
func BuildVethroute(root, dir string) error {
	return buildInto(root, filepath.Join(dir, "vethroute"), "./plugins/vethroute")
}

// BuildReference builds the named reference plugins (keys of the same table
// ReferencePlugins uses, pinned by go.mod's tool directives) into dir.
func BuildReference(root, dir string, names ...string) error {
	pkgs := make([]string, 0, len(names))
	for _, n := range names {
		pkg, ok := referencePackages[n]
		if !ok {
			return fmt.Errorf("unknown reference plugin %q", n)
		}
		pkgs = append(pkgs, pkg)
	}
	return buildInto(root, dir+string(os.PathSeparator), pkgs...)
}

// buildInto runs `go build -o out pkgs...` in root without cgo, so that the
// binaries are static like the ones a node installs.
func buildInto(root, out string, pkgs ...string) error {
	cmd := exec.Command("go", append([]string{"build", "-o", out}, pkgs...)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %v: %v\n%s", pkgs, err, b)
	}
	return nil
}
