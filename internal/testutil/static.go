package testutil

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// StaticBinaries builds Go main packages (of this module, or of a module
// go.mod requires, such as
// "github.com/containernetworking/plugins/plugins/main/loopback") as static,
// stripped binaries (CGO_ENABLED=0) into a fresh directory that t.Cleanup
// removes, and returns that directory. Static binaries run inside any
// container image, even one without a libc.
func StaticBinaries(t testing.TB, pkgs ...string) string {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	args := append([]string{"build", "-trimpath", "-ldflags=-s -w", "-o", dir + "/"}, pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = RepoRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %v: %v\n%s", pkgs, err, out)
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
