package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/vethroute/vethroute/internal/testutil"
)

// readOnlyPlugin writes a wrapper that runs the plugin in a private mount
// namespace of its own where the node's dataDir is read-only: mount is the
// shell command that makes it so ($D is the dataDir). The machine's mounts
// never change.
func readOnlyPlugin(t *testing.T, mount string) string {
	t.Helper()
	w := filepath.Join(t.TempDir(), "vethroute-ro")
	script := "#!/bin/sh\nexec unshare -m --propagation private sh -ec '" + mount + "; exec \"$P\"'\n"
	if err := os.WriteFile(w, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	return w
}

// TestReadOnlyDataDirIsIOFailure: a dataDir on a read-only file system is
// CNI's I/O failure (code 5), for ADD on an empty store and for DEL that
// cannot release, not a generic error (issue 14 finding 8).
func TestReadOnlyDataDirIsIOFailure(t *testing.T) {
	testutil.RequireRoot(t)
	node := testutil.NewNode(t)
	l := node.ConfList(t, conflist("1.1.0", v4Ranges, v4Routes, ""))
	plugin := filepath.Join(testutil.PluginDir(t), "vethroute")
	run := func(mount, command, id, netns string) *types.Error {
		t.Helper()
		env := append(testutil.CNIEnv(command, id, netns, "eth0", "", testutil.PluginDir(t)),
			"PATH="+os.Getenv("PATH"), "D="+node.DataDir, "P="+plugin)
		o := node.RunPlugin(t, readOnlyPlugin(t, mount), testutil.Invocation{Env: env, Stdin: pluginStdin(t, l, nil)})
		te, err := o.CNIError()
		if o.ExitCode == 0 || err != nil {
			t.Fatalf("%s on a read-only dataDir = %s (%v), want a CNI error", command, o, err)
		}
		return te
	}

	cont := testutil.NewNS(t)
	if te := run(`mount -t tmpfs -o ro tmpfs "$D"`, "ADD", "ro1", cont.Path()); te.Code != types.ErrIOFailure {
		t.Errorf("ADD on an empty read-only dataDir = %v, want code %d", te, types.ErrIOFailure)
	}
	node.RequireClean(t, network)

	rt := testutil.RuntimeConf("ro2", cont.Path(), "eth0")
	mustAdd(t, node, l, rt)
	if te := run(`mount --bind "$D" "$D"; mount -o remount,bind,ro "$D"`, "DEL", rt.ContainerID, rt.NetNS); te.Code != types.ErrIOFailure || !strings.Contains(te.Error(), node.DataDir) {
		t.Errorf("DEL with a read-only dataDir = %v, want code %d naming %s", te, types.ErrIOFailure, node.DataDir)
	}
	if err := node.Del(l, rt); err != nil {
		t.Fatalf("DEL once the dataDir is writable again: %v", err)
	}
	node.RequireClean(t, network)
}
