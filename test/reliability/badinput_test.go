package reliability

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vethroute/vethroute/internal/testutil"
)

const badRanges = `[[{"subnet": "10.66.0.0/24", "rangeStart": "10.66.0.1", "rangeEnd": "10.66.0.20", "gateway": "10.66.0.254"}]]`

// env is the CNI environment of one bad-input case; a field left empty is
// not set at all.
type env struct {
	command, containerID, netns, ifName, args, path string
}

// badCase is one malformed or hostile invocation and the CNI error it must
// produce.
type badCase struct {
	name string
	// stdin replaces the configuration when set; otherwise edit (if any)
	// changes a copy of the valid configuration.
	stdin []byte
	edit  func(conf map[string]any)
	// env changes the valid environment (ADD of container "victim").
	env func(e *env)
	// code is the CNI error code the plugin must return.
	code uint
	// says are fragments the error's message and details must contain
	// (case-insensitively): the name of the problem and of the field.
	says []string
}

// TestBadInput feeds the plugin malformed and hostile input. Each must end
// with a CNI error on stdout (exit 1) carrying the right code and a message
// that names the problem, and must leave the node, the container and the
// store exactly as they were.
func TestBadInput(t *testing.T) {
	testutil.RequireRoot(t)
	f := newFixture(t, badRanges, "")
	victim := testutil.NewNS(t)
	// Another attachment holds an address, so "already taken" has a
	// victim and the store is not empty.
	holderNS := testutil.NewNS(t)
	taken := f.mustAdd("holder", holderNS.Path())[0].String()
	t.Cleanup(func() { f.mustDel("holder", holderNS.Path()) })

	scratch := t.TempDir()
	regular := filepath.Join(scratch, "regular-file")
	if err := os.WriteFile(regular, []byte("not a namespace\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mountNS := fmt.Sprintf("/proc/%d/ns/mnt", os.Getpid())

	set := func(path string, v any) func(map[string]any) {
		return func(conf map[string]any) { setPath(conf, path, v) }
	}
	ranges := func(js string) func(map[string]any) { return set("ipam.ranges", rawJSON(js)) }
	cniArgs := func(a string) func(*env) { return func(e *env) { e.args = a } }

	cases := []badCase{
		// Not a configuration at all.
		{name: "invalid JSON", stdin: []byte(`{"cniVersion": "1.1.0", "name": `), code: types.ErrDecodingFailure, says: []string{"unexpected end of JSON input"}},
		{name: "empty stdin", stdin: []byte{}, code: types.ErrDecodingFailure, says: []string{"unexpected end of JSON input"}},
		{name: "8 MiB of nesting", stdin: bytes.Repeat([]byte("["), 8<<20), code: types.ErrDecodingFailure, says: []string{"exceeded max depth"}},
		{name: "8 MiB of NUL bytes", stdin: make([]byte, 8<<20), code: types.ErrDecodingFailure, says: []string{"invalid character"}},
		{name: "JSON array", stdin: []byte(`[1, 2, 3]`), code: types.ErrDecodingFailure, says: []string{"cannot unmarshal array"}},
		// Versions.
		{name: "cniVersion 0.2.0", edit: set("cniVersion", "0.2.0"), code: types.ErrIncompatibleCNIVersion, says: []string{"incompatible", "0.2.0"}},
		{name: "cniVersion 99.0.0", edit: set("cniVersion", "99.0.0"), code: types.ErrIncompatibleCNIVersion, says: []string{"incompatible", "99.0.0"}},
		{name: "cniVersion not a version", edit: set("cniVersion", "one"), code: types.ErrIncompatibleCNIVersion, says: []string{"one"}},
		// Network names.
		{name: "no name", edit: set("name", nil), code: types.ErrInvalidNetworkConfig, says: []string{"network name"}},
		{name: "name with ../", edit: set("name", "../../etc"), code: types.ErrInvalidNetworkConfig, says: []string{"network name", "../../etc"}},
		// The IPAM section.
		{name: "no ipam", edit: set("ipam", nil), code: types.ErrInvalidNetworkConfig, says: []string{"ipam.type"}},
		{name: "invalid subnet CIDR", edit: ranges(`[[{"subnet": "10.66.0.0/33"}]]`), code: types.ErrInvalidNetworkConfig, says: []string{"ipam", "10.66.0.0/33"}},
		{name: "subnet not a CIDR", edit: ranges(`[[{"subnet": "banana"}]]`), code: types.ErrInvalidNetworkConfig, says: []string{"ipam", "banana"}},
		{name: "rangeStart outside subnet", edit: ranges(`[[{"subnet": "10.66.0.0/24", "rangeStart": "10.67.0.1"}]]`), code: types.ErrInvalidNetworkConfig, says: []string{"ipam", "10.67.0.1"}},
		{name: "rangeEnd before rangeStart", edit: ranges(`[[{"subnet": "10.66.0.0/24", "rangeStart": "10.66.0.9", "rangeEnd": "10.66.0.3"}]]`), code: types.ErrInvalidNetworkConfig, says: []string{"ipam", "RangeStart 10.66.0.9"}},
		{name: "gateway not an address", edit: ranges(`[[{"subnet": "10.66.0.0/24", "gateway": "10.66.0.999"}]]`), code: types.ErrInvalidNetworkConfig, says: []string{"ipam", "10.66.0.999"}},
		{name: "gateway outside subnet", edit: ranges(`[[{"subnet": "10.66.0.0/24", "gateway": "10.99.0.1"}]]`), code: types.ErrInvalidNetworkConfig, says: []string{"ipam", "10.99.0.1"}},
		{name: "no ranges", edit: ranges(`[]`), code: types.ErrInvalidNetworkConfig, says: []string{"ipam", "no IP ranges"}},
		{name: "overlapping range sets", edit: ranges(`[[{"subnet": "10.66.0.0/24"}], [{"subnet": "10.66.0.0/25"}]]`), code: types.ErrInvalidNetworkConfig, says: []string{"ipam", "overlaps"}},
		{name: "relative dataDir", edit: set("ipam.dataDir", "var/lib/x"), code: types.ErrInvalidNetworkConfig, says: []string{"ipam.dataDir", "var/lib/x"}},
		{name: "dataDir under a regular file", edit: set("ipam.dataDir", filepath.Join(regular, "store")), code: types.ErrInvalidNetworkConfig, says: []string{"ipam.dataDir", "not a directory"}},
		{name: "ipam routes without dst", edit: set("ipam.routes", rawJSON(`[{"gw": "10.66.0.254"}]`)), code: types.ErrInvalidNetworkConfig, says: []string{"ipam.routes[0].dst"}},
		// Plugin keys.
		{name: "mtu too small", edit: set("mtu", 10), code: types.ErrInvalidNetworkConfig, says: []string{"mtu", "10"}},
		{name: "mtu too large", edit: set("mtu", 70000), code: types.ErrInvalidNetworkConfig, says: []string{"mtu", "70000"}},
		{name: "mtu negative", edit: set("mtu", -1), code: types.ErrInvalidNetworkConfig, says: []string{"mtu", "-1"}},
		{name: "mtu a string", edit: set("mtu", "1500"), code: types.ErrInvalidNetworkConfig, says: []string{"mtu"}},
		{name: "mtu below IPv6 minimum", edit: func(c map[string]any) {
			setPath(c, "mtu", 1000)
			setPath(c, "ipam.ranges", rawJSON(`[[{"subnet": "fd00:66::/64"}]]`))
		}, code: types.ErrInvalidNetworkConfig, says: []string{"mtu", "1280"}},
		{name: "hostRoutes dst not a CIDR", edit: set("hostRoutes", rawJSON(`[{"dst": "10.0.0.0/99", "gw": "172.16.0.2"}]`)), code: types.ErrInvalidNetworkConfig, says: []string{"hostRoutes", "10.0.0.0/99"}},
		{name: "hostRoutes gw not an address", edit: set("hostRoutes", rawJSON(`[{"dst": "10.0.0.0/24", "gw": "172.16.0.256"}]`)), code: types.ErrInvalidNetworkConfig, says: []string{"hostRoutes", "172.16.0.256"}},
		{name: "hostRoutes without gw", edit: set("hostRoutes", rawJSON(`[{"dst": "10.0.0.0/24"}]`)), code: types.ErrInvalidNetworkConfig, says: []string{"hostRoutes[0].gw"}},
		{name: "hostRoutes mixed families", edit: set("hostRoutes", rawJSON(`[{"dst": "10.0.0.0/24", "gw": "fd00::2"}]`)), code: types.ErrInvalidNetworkConfig, says: []string{"hostRoutes[0]", "families"}},
		{name: "hostRoutes host bits", edit: set("hostRoutes", rawJSON(`[{"dst": "10.0.0.1/24", "gw": "172.16.0.2"}]`)), code: types.ErrInvalidNetworkConfig, says: []string{"hostRoutes[0].dst", "host bits"}},
		{name: "ipMasqBackend unknown", edit: set("ipMasqBackend", "pf"), code: types.ErrInvalidNetworkConfig, says: []string{"ipMasqBackend", "pf"}},
		{name: "logLevel unknown", edit: set("logLevel", "loud"), code: types.ErrInvalidNetworkConfig, says: []string{"logLevel", "loud"}},
		{name: "logFile relative", edit: set("logFile", "../x.log"), code: types.ErrInvalidNetworkConfig, says: []string{"logFile", "../x.log"}},
		{name: "prevResult not a result", edit: set("prevResult", rawJSON(`{"ips": "many"}`)), code: types.ErrDecodingFailure, says: []string{"prevResult"}},
		// The environment.
		{name: "interface name too long", env: func(e *env) { e.ifName = "eth0123456789abc" }, code: types.ErrInvalidEnvironmentVariables, says: []string{"interface name is too long"}},
		{name: "interface name with /", env: func(e *env) { e.ifName = "eth/0" }, code: types.ErrInvalidEnvironmentVariables, says: []string{"interface name contains /"}},
		{name: "interface name ..", env: func(e *env) { e.ifName = ".." }, code: types.ErrInvalidEnvironmentVariables, says: []string{"interface name is . or .."}},
		{name: "container ID with ../", env: func(e *env) { e.containerID = "../../etc/passwd" }, code: types.ErrInvalidEnvironmentVariables, says: []string{"invalid characters in containerID", "../../etc/passwd"}},
		{name: "container ID of 1000 characters", env: func(e *env) { e.containerID = strings.Repeat("c", 1000) }, code: types.ErrInvalidEnvironmentVariables, says: []string{"containerID"}},
		{name: "network name of 300 characters", edit: set("name", strings.Repeat("n", 300)), code: types.ErrInvalidNetworkConfig, says: []string{"name"}},
		{name: "CHECK with a container ID of 1000 characters", env: func(e *env) { e.command, e.containerID = "CHECK", strings.Repeat("c", 1000) }, code: types.ErrInvalidEnvironmentVariables, says: []string{"containerID"}},
		{name: "DEL container ID with ../", env: func(e *env) { e.command, e.containerID = "DEL", "../x" }, code: types.ErrInvalidEnvironmentVariables, says: []string{"containerID"}},
		{name: "no CNI_CONTAINERID", env: func(e *env) { e.containerID = "" }, code: types.ErrInvalidEnvironmentVariables, says: []string{"CNI_CONTAINERID"}},
		{name: "no CNI_NETNS", env: func(e *env) { e.netns = "" }, code: types.ErrInvalidEnvironmentVariables, says: []string{"CNI_NETNS"}},
		{name: "no CNI_IFNAME", env: func(e *env) { e.ifName = "" }, code: types.ErrInvalidEnvironmentVariables, says: []string{"CNI_IFNAME"}},
		{name: "no CNI_PATH", env: func(e *env) { e.path = "" }, code: types.ErrInvalidEnvironmentVariables, says: []string{"CNI_PATH"}},
		{name: "unknown CNI_COMMAND", env: func(e *env) { e.command = "FROB" }, code: types.ErrInvalidEnvironmentVariables, says: []string{"FROB"}},
		{name: "netns missing", env: func(e *env) { e.netns = filepath.Join(scratch, "no-such-netns") }, code: types.ErrInvalidNetNS, says: []string{"no-such-netns"}},
		{name: "netns a regular file", env: func(e *env) { e.netns = regular }, code: types.ErrInvalidNetNS, says: []string{regular}},
		{name: "netns a directory", env: func(e *env) { e.netns = scratch }, code: types.ErrInvalidNetNS, says: []string{scratch}},
		{name: "netns a mount namespace", env: func(e *env) { e.netns = mountNS }, code: types.ErrInvalidNetNS, says: []string{mountNS}},
		{name: "netns the node's own", env: func(e *env) { e.netns = f.node.NS.Path() }, code: types.ErrInvalidNetNS, says: []string{"netns"}},
		// Requested addresses.
		{name: "CNI_ARGS IP outside range", env: cniArgs("IP=10.99.0.5"), code: types.ErrInvalidNetworkConfig, says: []string{"10.99.0.5", "outside"}},
		{name: "CNI_ARGS IP already taken", env: cniArgs("IP=" + taken), code: types.ErrInvalidNetworkConfig, says: []string{taken, "in use"}},
		{name: "CNI_ARGS IP the gateway", env: cniArgs("IP=10.66.0.100"),
			edit: ranges(`[[{"subnet": "10.66.0.0/24", "rangeStart": "10.66.0.1", "rangeEnd": "10.66.0.200", "gateway": "10.66.0.100"}]]`),
			code: types.ErrInvalidNetworkConfig, says: []string{"10.66.0.100", "gateway"}},
		{name: "CNI_ARGS IP not an address", env: cniArgs("IP=10.66.0.300"), code: types.ErrInvalidNetworkConfig, says: []string{"10.66.0.300"}},
		{name: "CNI_ARGS not key=value", env: cniArgs("IgnoreUnknown=1;garbage"), code: types.ErrInvalidNetworkConfig, says: []string{"garbage"}},
		{name: "runtimeConfig ips outside range", edit: set("runtimeConfig", rawJSON(`{"ips": ["10.99.0.5/24"]}`)), code: types.ErrInvalidNetworkConfig, says: []string{"10.99.0.5", "outside"}},
		{name: "runtimeConfig ips already taken", edit: set("runtimeConfig", rawJSON(fmt.Sprintf(`{"ips": ["%s/24"]}`, taken))), code: types.ErrInvalidNetworkConfig, says: []string{taken, "in use"}},
		// Other verbs.
		{name: "CHECK without prevResult", env: func(e *env) { e.command = "CHECK" }, code: types.ErrInvalidNetworkConfig, says: []string{"prevResult"}},
		{name: "GC with malformed attachments", edit: func(c map[string]any) { c["cni.dev/valid-attachments"] = "all of them" }, env: func(e *env) { e.command = "GC" }, code: types.ErrInvalidNetworkConfig, says: []string{"valid-attachments"}},
	}

	base := map[string]any{}
	if err := json.Unmarshal(f.conf, &base); err != nil {
		t.Fatal(err)
	}
	testutil.SettleDAD(t, f.node.NS)
	testutil.SettleDAD(t, holderNS)
	nodeBefore := testutil.NetSnapshot(t, f.node.NS)
	victimBefore := testutil.NetSnapshot(t, victim)
	storeBefore := testutil.TreeSnapshot(t, f.node.DataDir)
	scratchBefore := testutil.TreeSnapshot(t, scratch)
	passed := 0
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := env{command: "ADD", containerID: "victim", netns: victim.Path(), ifName: "eth0", path: filepath.Dir(f.bin)}
			if tc.env != nil {
				tc.env(&e)
			}
			stdin := tc.stdin
			if stdin == nil {
				conf := deepCopy(t, base)
				if tc.edit != nil {
					tc.edit(conf)
				}
				stdin, _ = json.Marshal(conf)
			}
			o := f.node.RunPlugin(t, f.bin, testutil.Invocation{
				Env:   testutil.CNIEnv(e.command, e.containerID, e.netns, e.ifName, e.args, e.path),
				Stdin: stdin,
			})
			if o.ExitCode != 1 || o.Signaled {
				t.Fatalf("want exit 1 with a CNI error, got %s", o)
			}
			cerr, err := o.CNIError()
			if err != nil {
				t.Fatal(err)
			}
			text := strings.ToLower(cerr.Msg + " " + cerr.Details)
			if cerr.Code != tc.code {
				t.Errorf("code %d (%q, %q), want %d", cerr.Code, cerr.Msg, cerr.Details, tc.code)
			}
			for _, s := range tc.says {
				if !strings.Contains(text, strings.ToLower(s)) {
					t.Errorf("message %q (details %q) does not mention %q", cerr.Msg, cerr.Details, s)
				}
			}
			for _, snap := range []struct{ what, before, after string }{
				{"node", nodeBefore, testutil.NetSnapshot(t, f.node.NS)},
				{"container", victimBefore, testutil.NetSnapshot(t, victim)},
				{"store", storeBefore, testutil.TreeSnapshot(t, f.node.DataDir)},
				{"scratch directory", scratchBefore, testutil.TreeSnapshot(t, scratch)},
			} {
				if snap.before != snap.after {
					t.Fatalf("the %s changed:\n%s", snap.what, testutil.DiffLines(snap.before, snap.after))
				}
			}
			if !t.Failed() {
				passed++
			}
			t.Logf("code %d: %s %s", cerr.Code, cerr.Msg, cerr.Details)
		})
	}
	t.Logf("%d hostile inputs, %d rejected with the right code and message, the node, container and store unchanged", len(cases), passed)

	// The runtime owes a DEL to every failed ADD, and it must succeed, or
	// the runtime retries forever: here for the ADD refused above for its
	// 1000-character container ID.
	long := strings.Repeat("c", 1000)
	if o := f.run(f.inv("DEL", long, victim.Path())); o.ExitCode != 0 {
		t.Errorf("DEL of a container ID that ADD refused: %s", o)
	}
	if after := testutil.TreeSnapshot(t, f.node.DataDir); after != storeBefore {
		t.Errorf("that DEL changed the store:\n%s", testutil.DiffLines(storeBefore, after))
	}
}

// rawJSON is a value that setPath stores as the JSON it spells.
type rawJSON string

// setPath sets (or, for a nil v, deletes) a dotted key in a JSON object.
func setPath(conf map[string]any, path string, v any) {
	keys := strings.Split(path, ".")
	m := conf
	for _, k := range keys[:len(keys)-1] {
		next, ok := m[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[k] = next
		}
		m = next
	}
	last := keys[len(keys)-1]
	switch x := v.(type) {
	case nil:
		delete(m, last)
	case rawJSON:
		m[last] = json.RawMessage(x)
	default:
		m[last] = v
	}
}

func deepCopy(t *testing.T, m map[string]any) map[string]any {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]any{}
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}
