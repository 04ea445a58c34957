package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/vethroute/vethroute/internal/testutil"
)

// fakeIPAM writes an IPAM plugin named fakeipam into a directory of its own:
// a shell script that appends each CNI_COMMAND to the returned log and
// answers ADD with result. It returns the directory and the log's path.
func fakeIPAM(t *testing.T, result string) (dir, log string) {
	t.Helper()
	dir = t.TempDir()
	log = filepath.Join(dir, "calls")
	if err := os.WriteFile(filepath.Join(dir, "result.json"), []byte(result), 0o600); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\n/bin/cat >/dev/null\necho \"$CNI_COMMAND\" >>" + log + "\n" +
		"if [ \"$CNI_COMMAND\" = ADD ]; then exec /bin/cat " + filepath.Join(dir, "result.json") + "; fi\n"
	if err := os.WriteFile(filepath.Join(dir, "fakeipam"), []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	return dir, log
}

// TestExternalIPAMRefusedResultIsReleased: an external IPAM's answer that
// vethroute cannot use (no address, no gateway, an IPv6 address under an
// MTU below 1280) fails ADD with code 7 naming what to fix, leaves nothing
// on the node or in the container, and hands the address back: the plugin
// runs the IPAM's DEL.
func TestExternalIPAMRefusedResultIsReleased(t *testing.T) {
	testutil.RequireRoot(t)
	tests := []struct {
		name, extra, result, says string
	}{
		{"no address", "", `{"cniVersion": "1.1.0", "ips": []}`, "no address"},
		{"no gateway", "", `{"cniVersion": "1.1.0", "ips": [{"address": "192.168.0.5/24"}]}`, "without a gateway"},
		{"IPv6 under a 1280 MTU", `, "mtu": 1200`, `{"cniVersion": "1.1.0", "ips": [{"address": "fd00:10::5/64", "gateway": "fd00:10::1"}]}`, "mtu"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir, log := fakeIPAM(t, tc.result)
			node := testutil.NewNode(t, dir)
			l := node.ConfList(t, `{"cniVersion": "1.1.0", "name": "`+network+`", "plugins": [{"type": "vethroute"`+tc.extra+`, "ipam": {"type": "fakeipam"}}]}`)
			cont := testutil.NewNS(t)
			_, err := node.Add(l, testutil.RuntimeConf("fake1", cont.Path(), "eth0"))
			var te *types.Error
			if !asCNIError(err, &te) || te.Code != types.ErrInvalidNetworkConfig || !strings.Contains(te.Msg, tc.says) {
				t.Fatalf("ADD error = %v, want CNI code %d mentioning %q", err, types.ErrInvalidNetworkConfig, tc.says)
			}
			calls, rerr := os.ReadFile(log)
			if f := strings.Fields(string(calls)); rerr != nil || len(f) == 0 || f[len(f)-1] != "DEL" {
				t.Errorf("the IPAM plugin was called %q (%v); want its DEL last, to release the address", calls, rerr)
			}
			node.RequireClean(t, network)
			if out := testutil.MustRunIn(t, cont, "ip", "-o", "link", "show"); strings.Count(strings.TrimSpace(out), "\n") > 0 {
				t.Errorf("container keeps interfaces after the failed ADD:\n%s", out)
			}
		})
	}
}
