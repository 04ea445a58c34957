package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/vethroute/vethroute/internal/testutil"
)

// pluginStdin renders the first plugin of l as the runtime sends it on
// stdin, with edit applied to it.
func pluginStdin(t *testing.T, l *libcni.NetworkConfigList, edit func(map[string]any)) []byte {
	t.Helper()
	var conf map[string]any
	if err := json.Unmarshal(l.Plugins[0].Bytes, &conf); err != nil {
		t.Fatalf("decode plugin configuration: %v", err)
	}
	conf["cniVersion"], conf["name"] = l.CNIVersion, l.Name
	if edit != nil {
		edit(conf)
	}
	b, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCheckMalformedPrevResult: CHECK with a prevResult that cannot be
// decoded, or that does not describe this attachment, is a CNI error with
// the code that fits and changes nothing on the node, in the container or
// in the store.
func TestCheckMalformedPrevResult(t *testing.T) {
	testutil.RequireRoot(t)
	node := testutil.NewNode(t)
	cont := testutil.NewNS(t)
	l := node.ConfList(t, conflist("1.1.0", v4Ranges, v4Routes, ""))
	rt := testutil.RuntimeConf("chk1", cont.Path(), "eth0")
	mustAdd(t, node, l, rt)
	testutil.SettleDAD(t, node.NS)
	testutil.SettleDAD(t, cont)
	t.Cleanup(func() {
		if err := node.Del(l, rt); err != nil {
			t.Errorf("DEL: %v", err)
		}
	})
	contIf := `{"name": "eth0", "sandbox": "` + cont.Path() + `"}`
	tests := []struct {
		name string
		prev string
		code uint
		says string
	}{
		{"address not a CIDR", `{"cniVersion": "1.1.0", "interfaces": [` + contIf + `], "ips": [{"address": "192.168.0.999/24", "interface": 0}]}`, types.ErrDecodingFailure, "prevResult"},
		{"no interface in the sandbox", `{"cniVersion": "1.1.0", "interfaces": [], "ips": [{"address": "192.168.0.1/24", "gateway": "192.168.0.254"}]}`, types.ErrInvalidNetworkConfig, "prevResult.interfaces"},
		{"address without gateway", `{"cniVersion": "1.1.0", "interfaces": [` + contIf + `], "ips": [{"address": "192.168.0.1/24", "interface": 0}]}`, types.ErrInvalidNetworkConfig, "prevResult.ips"},
		{"no address", `{"cniVersion": "1.1.0", "interfaces": [` + contIf + `], "ips": []}`, types.ErrInvalidNetworkConfig, "prevResult.ips"},
	}
	bin := filepath.Join(testutil.PluginDir(t), "vethroute")
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := testutil.NetSnapshot(t, node.NS) + testutil.NetSnapshot(t, cont) + testutil.TreeSnapshot(t, node.DataDir)
			stdin := pluginStdin(t, l, func(c map[string]any) { c["prevResult"] = json.RawMessage(tc.prev) })
			env := testutil.CNIEnv("CHECK", rt.ContainerID, rt.NetNS, rt.IfName, "", testutil.PluginDir(t))
			o := node.RunPlugin(t, bin, testutil.Invocation{Env: env, Stdin: stdin})
			te, err := o.CNIError()
			if o.ExitCode == 0 || err != nil || te.Code != tc.code || !strings.Contains(te.Msg+te.Details, tc.says) {
				t.Fatalf("CHECK = %s\nwant CNI code %d naming %q (%v)", o, tc.code, tc.says, err)
			}
			after := testutil.NetSnapshot(t, node.NS) + testutil.NetSnapshot(t, cont) + testutil.TreeSnapshot(t, node.DataDir)
			if d := testutil.DiffLines(before, after); d != "" {
				t.Errorf("CHECK changed something:\n%s", d)
			}
		})
	}
}

// TestAddRollbackAfterIPMasqFailure: when ipMasq cannot be set up (here
// the runtime's environment has no PATH, so the iptables backend finds no
// iptables: a real failure, not a hook), ADD fails and removes the veth,
// its routes and the reservation it made before.
func TestAddRollbackAfterIPMasqFailure(t *testing.T) {
	testutil.RequireRoot(t)
	node := testutil.NewNode(t)
	cont := testutil.NewNS(t)
	l := node.ConfList(t, conflist("1.1.0", v4Ranges, v4Routes, `, "ipMasq": true, "ipMasqBackend": "iptables"`))
	bin := filepath.Join(testutil.PluginDir(t), "vethroute")
	env := testutil.CNIEnv("ADD", "masqfail", cont.Path(), "eth0", "", testutil.PluginDir(t))
	if os.Getenv("PATH") == "" {
		t.Fatal("the test needs PATH to run ip and iptables-save")
	}
	o := node.RunPlugin(t, bin, testutil.Invocation{Env: env, Stdin: pluginStdin(t, l, nil)})
	te, err := o.CNIError()
	if o.ExitCode == 0 || err != nil || te.Code != types.ErrInternal || !strings.Contains(te.Msg, "ipMasq") {
		t.Fatalf("ADD = %s\nwant CNI code %d naming ipMasq (%v)", o, types.ErrInternal, err)
	}
	node.RequireClean(t, network)
	if out := testutil.MustRunIn(t, cont, "ip", "-o", "link", "show"); strings.Count(strings.TrimSpace(out), "\n") > 0 {
		t.Errorf("container keeps interfaces after the failed ADD:\n%s", out)
	}
	if r := testutil.MustRunIn(t, node.NS, "iptables-save", "-t", "nat"); strings.Contains(r, "192.168.0.") {
		t.Errorf("a masquerade rule survived the failed ADD:\n%s", r)
	}
}
