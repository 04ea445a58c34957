package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vethroute/vethroute/internal/testutil"
)

// TestCnitoolWithExampleConf drives conf/10-vethroute.conflist, the
// documented example, with the reference cnitool from inside a node
// namespace: add, check, status, gc (keeping nothing), del.
func TestCnitoolWithExampleConf(t *testing.T) {
	node := testutil.NewNode(t)
	uplink(t, node) // the example's hostRoutes go via 172.16.0.2
	tools := testutil.ReferencePlugins(t, "cnitool")

	raw, err := os.ReadFile(filepath.Join(testutil.RepoRoot(t), "conf", "10-vethroute.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	conf := strings.Replace(string(raw), `"/var/lib/cni/vethroute"`, `"`+node.DataDir+`"`, 1)
	if conf == string(raw) {
		t.Fatal("example conflist no longer has the documented dataDir")
	}
	confDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(confDir, "10-vethroute.conflist"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cont := testutil.NewNS(t)

	// cnitool keeps libcni's result cache in /var/lib/cni, whatever the
	// environment says: give it a private mount namespace in which /var/lib
	// is a directory of the test's, so the machine's /var/lib stays as it is.
	varLib := t.TempDir()
	cnitool := func(args ...string) (string, error) {
		script := `mount --bind "$VARLIB" /var/lib && exec nsenter --net="$NODE" "$@"`
		full := append([]string{"--mount", "--propagation", "private", "sh", "-c", script, "cnitool", filepath.Join(tools, "cnitool")}, args...)
		cmd := exec.Command("unshare", full...)
		cmd.Env = append(os.Environ(),
			"VARLIB="+varLib,
			"NODE="+node.NS.Path(),
			"NETCONFPATH="+confDir,
			"CNI_PATH="+testutil.PluginDir(t),
			"CNI_CONTAINERID=cnitool1",
			"CNI_IFNAME=eth0",
		)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	out, err := cnitool("add", "vethroute", cont.Path())
	if err != nil {
		t.Fatalf("cnitool add: %v\n%s", err, out)
	}
	var res current.Result
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &res); err != nil {
		t.Fatalf("cnitool add printed no result: %v\n%s", err, out)
	}
	if got := res.IPs[0].Address.String(); got != "192.168.0.1/24" {
		t.Errorf("first address of the example range = %s, want 192.168.0.1/24", got)
	}
	if out, err := testutil.Ping(t, cont, "192.168.0.254", 1); err != nil {
		t.Errorf("container cannot reach the example gateway: %v\n%s", err, out)
	}
	for _, verb := range []string{"check", "status"} {
		if out, err := cnitool(verb, "vethroute", cont.Path()); err != nil {
			t.Errorf("cnitool %s: %v\n%s", verb, err, out)
		}
	}
	if r := node.Routes(t, "-4"); !strings.Contains(r, "10.0.0.0/24 via 172.16.0.2") {
		t.Errorf("example hostRoutes missing on the node:\n%s", r)
	}
	// gc with no valid attachments collects the attachment cnitool added.
	if out, err := cnitool("gc", "vethroute", cont.Path()); err != nil {
		t.Fatalf("cnitool gc: %v\n%s", err, out)
	}
	node.RequireClean(t, "vethroute")
	if out, err := cnitool("del", "vethroute", cont.Path()); err != nil {
		t.Fatalf("cnitool del after gc: %v\n%s", err, out)
	}
	node.RequireClean(t, "vethroute")
}
