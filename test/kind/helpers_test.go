package kind_test

// The tests in this file check the e2e's own machinery (the docker shim)
// and need neither root nor Docker nor a cluster; the cluster lifecycle's
// own tests are in internal/kindcluster.

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDockerShim runs test/kind/shim/docker against a stand-in for the real
// docker that prints its arguments, one per line, and checks what reaches it.
func TestDockerShim(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "docker")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\nprintf '%s\\n' \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	shim, err := filepath.Abs(filepath.Join("shim", "docker"))
	if err != nil {
		t.Fatal(err)
	}
	privileged := []string{"--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
		"--security-opt", "systempaths=unconfined", "--device-cgroup-rule", "a *:* rwm", "--device", "/dev/kmsg"}
	tests := []struct {
		name string
		drop string
		args []string
		want []string
	}{
		{
			name: "run --privileged rewritten",
			drop: "SYS_RESOURCE",
			args: []string{"run", "--name", "n1", "--privileged", "--tmpfs", "/run", "img"},
			want: append(append([]string{"run", "--name", "n1"}, privileged...), "--tmpfs", "/run", "img"),
		},
		{
			name: "several withheld capabilities",
			drop: "SYS_RESOURCE SYS_TIME",
			args: []string{"run", "--privileged", "img"},
			want: []string{"run", "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE", "--cap-drop", "SYS_TIME",
				"--security-opt", "systempaths=unconfined", "--device-cgroup-rule", "a *:* rwm", "--device", "/dev/kmsg", "img"},
		},
		{
			name: "exec --privileged dropped",
			drop: "SYS_RESOURCE",
			args: []string{"exec", "--privileged", "n1", "cat", "/kind/version"},
			want: []string{"exec", "n1", "cat", "/kind/version"},
		},
		{
			name: "other commands untouched",
			drop: "SYS_RESOURCE",
			args: []string{"inspect", "--privileged", "x"},
			want: []string{"inspect", "--privileged", "x"},
		},
		{
			name: "engine grants everything: pass through",
			drop: "",
			args: []string{"run", "--privileged", "img"},
			want: []string{"run", "--privileged", "img"},
		},
		{
			name: "arguments with spaces survive",
			drop: "SYS_RESOURCE",
			args: []string{"run", "-e", "A=b c", "img"},
			want: []string{"run", "-e", "A=b c", "img"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(shim, tc.args...)
			cmd.Env = append(os.Environ(), "VETHROUTE_REAL_DOCKER="+fake, "VETHROUTE_KIND_CAP_DROP="+tc.drop)
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("shim %v: %v", tc.args, err)
			}
			got := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
			if strings.Join(got, "\x00") != strings.Join(tc.want, "\x00") {
				t.Errorf("shim %q passed\n  %q\nwant\n  %q", tc.args, got, tc.want)
			}
		})
	}
}
