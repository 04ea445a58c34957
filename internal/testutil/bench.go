package testutil

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
)

// FindRepoRoot returns the directory holding go.mod, from the working
// directory up: the root for the benchmark and cluster commands run with
// `go run` from inside the checkout.
func FindRepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run from inside the repository (no go.mod found)")
		}
		dir = parent
	}
}

// LoadAvg returns /proc/loadavg's three load averages, "unknown" when it
// cannot be read: the benchmarks print it beside every figure, since the
// machine is shared.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
