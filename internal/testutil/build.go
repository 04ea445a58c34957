package testutil

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// buildTimeout bounds one `go build`: a cold build of the agent with
// client-go on a busy machine takes minutes, a hung toolchain must not
// stall the suite for ever.
const buildTimeout = 15 * time.Minute

// RepoRoot returns the repository's top directory (where go.mod is).
func RepoRoot(t testing.TB) string {
	t.Helper()
	return repoRoot()
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Build builds main packages, each into dir under the last element of its
// path, from the repository at root. A package is a ./-relative directory
// of this module or an import path of a module go.mod requires. cgo is off
// so that the binaries are static, like the ones a node installs.
func Build(root, dir string, pkgs ...string) error {
	return goBuild(root, dir, nil, pkgs)
}

// BuildStripped is Build with -trimpath and symbols stripped: for binaries
// copied into container images, where size counts and the build machine's
// paths do not belong.
func BuildStripped(root, dir string, pkgs ...string) error {
	return goBuild(root, dir, []string{"-trimpath", "-ldflags=-s -w"}, pkgs)
}

// goBuild is the one place tests run `go build`.
func goBuild(root, dir string, flags, pkgs []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	args := append(append([]string{"build"}, flags...), "-o", dir+string(os.PathSeparator))
	cmd := exec.CommandContext(ctx, "go", append(args, pkgs...)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %v: %w\n%s", pkgs, err, out)
	}
	return nil
}

// referencePackages maps the reference plugins the tests chain with or
// compare against to their packages, pinned by the tool directives in go.mod.
var referencePackages = map[string]string{
	"ptp":        "github.com/containernetworking/plugins/plugins/main/ptp",
	"host-local": "github.com/containernetworking/plugins/plugins/ipam/host-local",
	"portmap":    "github.com/containernetworking/plugins/plugins/meta/portmap",
	"bandwidth":  "github.com/containernetworking/plugins/plugins/meta/bandwidth",
	"tuning":     "github.com/containernetworking/plugins/plugins/meta/tuning",
	"firewall":   "github.com/containernetworking/plugins/plugins/meta/firewall",
	"cnitool":    "github.com/containernetworking/cni/cnitool",
}

// ReferencePackages returns the packages of the named reference plugins
// (ptp, host-local, portmap, bandwidth, tuning, firewall, cnitool), for Build.
func ReferencePackages(names ...string) ([]string, error) {
	pkgs := make([]string, 0, len(names))
	for _, n := range names {
		pkg, ok := referencePackages[n]
		if !ok {
			return nil, fmt.Errorf("reference plugin %q unknown: add its package to referencePackages and a tool directive to go.mod", n)
		}
		pkgs = append(pkgs, pkg)
	}
	return pkgs, nil
}

// sharedBuild is a build made once per test process and removed by Main.
type sharedBuild struct {
	once sync.Once
	dir  string
	err  error
}

var (
	sharedMu sync.Mutex
	shared   = map[string]*sharedBuild{}
	// underMain is set by Main, which removes the shared builds at exit.
	underMain bool
)

// buildShared builds pkgs once per test process (per key) into a directory
// that Main removes. Without Main nothing would remove such a directory,
// so each call builds into a t.TempDir of its own instead.
func buildShared(t testing.TB, key string, pkgs ...string) string {
	t.Helper()
	sharedMu.Lock()
	if !underMain {
		sharedMu.Unlock()
		dir := t.TempDir()
		if err := Build(repoRoot(), dir, pkgs...); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	b, ok := shared[key]
	if !ok {
		b = &sharedBuild{}
		shared[key] = b
	}
	sharedMu.Unlock()
	b.once.Do(func() {
		if b.dir, b.err = os.MkdirTemp("", "vethroute-test-bin-"); b.err != nil {
			return
		}
		b.err = Build(repoRoot(), b.dir, pkgs...)
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.dir
}

// Main runs a package's tests and then removes the directories PluginDir
// and ReferencePlugins built into, which outlive any single test. Packages
// that use them call it from TestMain.
func Main(m *testing.M) {
	sharedMu.Lock()
	underMain = true
	sharedMu.Unlock()
	code := m.Run()
	sharedMu.Lock()
	for _, b := range shared {
		if b.dir != "" {
			_ = os.RemoveAll(b.dir)
		}
	}
	sharedMu.Unlock()
	os.Exit(code)
}

// PluginDir returns a directory holding the vethroute plugin.
// VETHROUTE_BIN_DIR overrides it (make test builds bin/ first and points
// here, so every package tests the same binary); else it is built once per
// test process.
func PluginDir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("VETHROUTE_BIN_DIR"); d != "" {
		if _, err := os.Stat(filepath.Join(d, "vethroute")); err != nil {
			t.Fatalf("VETHROUTE_BIN_DIR=%s has no vethroute binary: %v", d, err)
		}
		return d
	}
	return buildShared(t, "vethroute", "./plugins/vethroute")
}

// ReferencePlugins returns a directory holding the named reference CNI
// plugins (and cnitool) at the versions go.mod pins, built once per test
// process for each set of names.
func ReferencePlugins(t testing.TB, names ...string) string {
	t.Helper()
	pkgs, err := ReferencePackages(names...)
	if err != nil {
		t.Fatal(err)
	}
	return buildShared(t, "reference:"+strings.Join(names, ","), pkgs...)
}

// StaticBinaries builds main packages with BuildStripped into a fresh
// directory that t.Cleanup removes, and returns that directory. Static
// binaries run inside any container image, even one without a libc.
func StaticBinaries(t testing.TB, pkgs ...string) string {
	t.Helper()
	dir := t.TempDir()
	if err := BuildStripped(repoRoot(), dir, pkgs...); err != nil {
		t.Fatal(err)
	}
	return dir
}

// AgentBinary returns the vethroute-agent binary: $VETHROUTE_BIN_DIR's when
// it has one (make test builds bin/ first), else a fresh static build.
func AgentBinary(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("VETHROUTE_BIN_DIR"); d != "" {
		p := filepath.Join(d, "vethroute-agent")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return filepath.Join(StaticBinaries(t, "./cmd/vethroute-agent"), "vethroute-agent")
}
