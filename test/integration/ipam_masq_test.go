package integration

import (
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/vethroute/vethroute/internal/testutil"
)

// TestExternalIPAM runs vethroute with the reference host-local IPAM plugin
// instead of the built-in allocator: users switch by changing ipam.type.
func TestExternalIPAM(t *testing.T) {
	node := testutil.NewNode(t, testutil.ReferencePlugins(t, "host-local"))
	list := `{"cniVersion": "1.1.0", "name": "` + network + `", "plugins": [{"type": "vethroute",
	  "ipam": {"type": "host-local", "ranges": ` + dualRanges + `, "routes": ` + dualRoutes + `, "dataDir": "@DATADIR@/host-local"}}]}`
	l := node.ConfList(t, list)
	cont := testutil.NewNS(t)
	rt := testutil.RuntimeConf("ext1", cont.Path(), "eth0")
	res := mustAdd(t, node, l, rt)
	if len(res.IPs) != 2 {
		t.Fatalf("host-local gave %d addresses, want 2", len(res.IPs))
	}
	for _, ipc := range res.IPs {
		if out, err := testutil.Ping(t, cont, ipc.Gateway.String(), 1); err != nil {
			t.Errorf("gateway %s unreachable: %v\n%s", ipc.Gateway, err, out)
		}
	}
	if err := node.Check(l, rt); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	if err := node.Del(l, rt); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	node.RequireClean(t, network)
	if out := testutil.MustRunIn(t, node.NS, "sh", "-c", "ls "+node.DataDir+"/host-local/"+network+" | grep -v -e lock -e last_reserved || true"); strings.TrimSpace(out) != "" {
		t.Errorf("host-local still holds reservations after DEL: %s", out)
	}
}

// TestExternalIPAMGCAndStatus checks that GC and STATUS reach the external
// IPAM plugin: STATUS passes through, and GC makes host-local release the
// addresses of an attachment that is no longer valid. GC runs the binary
// directly: libcni's GC would first DEL the attachments it has cached, and
// the DEL alone would release them.
func TestExternalIPAMGCAndStatus(t *testing.T) {
	refDir := testutil.ReferencePlugins(t, "host-local")
	node := testutil.NewNode(t, refDir)
	plugin := `{"type": "vethroute", "ipam": {"type": "host-local", "ranges": ` + dualRanges + `, "routes": ` + dualRoutes + `, "dataDir": "@DATADIR@/host-local"}}`
	l := node.ConfList(t, `{"cniVersion": "1.1.0", "name": "`+network+`", "plugins": [`+plugin+`]}`)
	if err := node.Status(l); err != nil {
		t.Fatalf("STATUS: %v", err)
	}
	held := func() string {
		return strings.TrimSpace(testutil.MustRunIn(t, node.NS, "sh", "-c", "cat "+node.DataDir+"/host-local/"+network+"/[0-9a-f]* 2>/dev/null | tr '\\r\\n' '  ' || true"))
	}
	for _, id := range []string{"extgc1", "extgc2"} {
		cont := testutil.NewNS(t)
		mustAdd(t, node, l, testutil.RuntimeConf(id, cont.Path(), "eth0"))
	}
	node.PluginGC(t, l, []types.GCAttachment{{ContainerID: "extgc1", IfName: "eth0"}})
	if h := held(); !strings.Contains(h, "extgc1") || strings.Contains(h, "extgc2") {
		t.Fatalf("host-local holds %q after GC, want extgc1's addresses only", h)
	}
	node.PluginGC(t, l, nil)
	if h := held(); h != "" {
		t.Errorf("host-local still holds %q after GC of everything", h)
	}
	node.RequireClean(t, network)
}

// TestIPMasq checks that ipMasq installs a masquerade rule for the
// container's address in the node's namespace and that DEL removes it.
func TestIPMasq(t *testing.T) {
	for _, backend := range []string{"iptables", "nftables"} {
		t.Run(backend, func(t *testing.T) {
			node := testutil.NewNode(t)
			l := node.ConfList(t, conflist("1.1.0", v4Ranges, v4Routes, `, "ipMasq": true, "ipMasqBackend": "`+backend+`"`))
			cont := testutil.NewNS(t)
			rt := testutil.RuntimeConf("masq1", cont.Path(), "eth0")
			res := mustAdd(t, node, l, rt)
			ip := res.IPs[0].Address.IP.String()
			rules := func() string {
				if backend == "iptables" {
					return testutil.MustRunIn(t, node.NS, "iptables-save", "-t", "nat")
				}
				return testutil.MustRunIn(t, node.NS, "nft", "list", "ruleset")
			}
			if r := rules(); !strings.Contains(r, ip) || !strings.Contains(strings.ToLower(r), "masquerade") {
				t.Fatalf("no masquerade rule for %s after ADD:\n%s", ip, r)
			}
			if err := node.Del(l, rt); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			if r := rules(); strings.Contains(r, ip) {
				t.Fatalf("masquerade rule for %s survived DEL:\n%s", ip, r)
			}
			node.RequireClean(t, network)
		})
	}
}
