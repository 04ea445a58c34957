package kind_test

// The checks in this file are about the node's container runtime: which
// cniVersion the agent writes for it, and, on containerd 2, that vethroute's
// CNI STATUS reaches the Node's Ready condition through the CRI.

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path"
	"strings"
	"testing"
	"time"
)

// fillPrefix starts the container ID of every reservation the STATUS check
// plants, so that restoring the node removes those and nothing else.
const fillPrefix = "vethroute-e2e-fill-"

// nodeConflist is what the checks read from a node's conflist.
type nodeConflist struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	Plugins    []struct {
		Type string `json:"type"`
		IPAM struct {
			DataDir string `json:"dataDir"`
			Ranges  [][]struct {
				Subnet  string `json:"subnet"`
				Gateway string `json:"gateway"`
			} `json:"ranges"`
		} `json:"ipam"`
	} `json:"plugins"`
}

func (c *cluster) conflist(t *testing.T, nodeName string) nodeConflist {
	t.Helper()
	raw := c.docker(30*time.Second, "exec", nodeName, "cat", "/etc/cni/net.d/10-vethroute.conflist")
	var l nodeConflist
	if err := json.Unmarshal([]byte(raw), &l); err != nil || len(l.Plugins) == 0 || l.Plugins[0].Type != "vethroute" {
		t.Fatalf("%s's conflist does not start with the vethroute plugin (%v):\n%s", nodeName, err, raw)
	}
	return l
}

// checkRuntime checks a worker's runtime against NODE_RUNTIME (the node
// image's variant), the conflist's cniVersion against the runtime, and on
// containerd 2 the STATUS round trip.
func (c *cluster) checkRuntime(t *testing.T, n node) {
	runtime := strings.TrimSpace(c.kubectl(30*time.Second, "get", "node", n.name, "-o", "jsonpath={.status.nodeInfo.containerRuntimeVersion}"))
	t.Logf("%s runs %s", n.name, runtime)
	wantPrefix := map[string]string{"containerd2": "containerd://2.", "containerd1": "containerd://1."}[os.Getenv("NODE_RUNTIME")]
	if wantPrefix != "" && !strings.HasPrefix(strings.Replace(runtime, "://v", "://", 1), wantPrefix) {
		t.Fatalf("NODE_RUNTIME=%s but %s reports runtime %q", os.Getenv("NODE_RUNTIME"), n.name, runtime)
	}
	l := c.conflist(t, n.name)
	// libcni reads cniVersion 1.1.0 (and so calls STATUS) from containerd
	// 2.0 on; the agent's --cni-version=auto must have seen that.
	want := "1.0.0"
	if strings.HasPrefix(strings.Replace(runtime, "://v", "://", 1), "containerd://2.") {
		want = "1.1.0"
	}
	if l.CNIVersion != want {
		t.Fatalf("%s (%s) has a conflist of cniVersion %q, want %q", n.name, runtime, l.CNIVersion, want)
	}
	if want != "1.1.0" {
		t.Logf("cniVersion %s: %s's runtime calls no CNI STATUS, so there is no STATUS to check", l.CNIVersion, n.name)
		return
	}
	c.checkStatus(t, n, l)
}

// checkStatus fills the node's IPv4 pool with reservations of containers
// that do not exist, which makes vethroute's STATUS fail ("pool
// exhausted"), and waits for containerd's CRI to report NetworkReady=false
// with that message and the kubelet to put it into the Node's Ready
// condition; then frees the pool and waits for Ready to come back.
func (c *cluster) checkStatus(t *testing.T, n node, l nodeConflist) {
	ipam := l.Plugins[0].IPAM
	var subnet netip.Prefix
	var gw netip.Addr
	for _, set := range ipam.Ranges {
		for _, r := range set {
			if p, err := netip.ParsePrefix(r.Subnet); err == nil && p.Addr().Is4() {
				subnet, gw = p.Masked(), netip.MustParseAddr(r.Gateway)
			}
		}
	}
	if !subnet.IsValid() {
		// A /64 cannot be filled; the STATUS path is the same in every
		// family, and the dual-stack run shows it.
		t.Logf("%s has no IPv4 pod range to fill: STATUS is checked in the dual-stack and IPv4 runs", n.name)
		return
	}
	if subnet.Bits() < 20 {
		t.Fatalf("%s's IPv4 pod range %s is too large to fill in a test", n.name, subnet)
	}
	store := path.Join(ipam.DataDir, l.Name)
	// Every address of the subnet but the network, broadcast and gateway
	// addresses, each reserved (pkg/ipam's layout: ips/<address> names its
	// owner, owners/<owner> its addresses) unless a pod holds it already.
	var script strings.Builder
	script.WriteString("set -e\ncd " + store + "\nmkdir -p ips owners\n")
	planted := 0
	last := lastAddr(subnet)
	for a := subnet.Addr().Next(); a.IsValid() && a.Less(last); a = a.Next() {
		if a == gw {
			continue
		}
		owner := fmt.Sprintf("%s%d:eth0", fillPrefix, planted)
		fmt.Fprintf(&script, "[ -L ips/%[1]s ] || { ln -s %[2]s ips/%[1]s; ln -s %[1]s owners/%[2]s; }\n", a, owner)
		planted++
	}
	unplant := "cd " + store + " && for f in ips/*; do case \"$(readlink \"$f\")\" in " + fillPrefix + "*) rm -f \"$f\";; esac; done; rm -f owners/" + fillPrefix + "*"
	restored := false
	restore := func() error {
		if restored {
			return nil
		}
		if out, err := c.Run(nil, time.Minute, "docker", "exec", n.name, "flock", path.Join(store, "lock"), "sh", "-c", unplant); err != nil {
			return fmt.Errorf("remove the planted reservations on %s: %w\n%s", n.name, err, out)
		}
		restored = true
		return nil
	}
	t.Cleanup(func() {
		if err := restore(); err != nil {
			t.Error(err)
		}
		if cond := c.waitReady(n.name, "True", 2*time.Minute); !strings.HasPrefix(cond, "True") {
			t.Errorf("%s is not Ready again after the test: %s", n.name, cond)
		}
	})
	if cond := c.waitReady(n.name, "True", time.Minute); !strings.HasPrefix(cond, "True") {
		t.Fatalf("%s is not Ready before the STATUS check: %s", n.name, cond)
	}
	// Under the store's lock, as the plugin changes it.
	if out, err := c.Run([]byte(script.String()), 2*time.Minute, "docker", "exec", "-i", n.name, "flock", path.Join(store, "lock"), "sh"); err != nil {
		t.Fatalf("plant reservations in %s on %s: %v\n%s", store, n.name, err, out)
	}
	t.Logf("%s: %s filled (up to %d reservations planted in %s)", n.name, subnet, planted, store)

	start := time.Now()
	cond := c.waitReady(n.name, "False", 2*time.Minute)
	if !strings.HasPrefix(cond, "False") {
		t.Fatalf("%s stays Ready with its pool full: %s", n.name, cond)
	}
	for _, want := range []string{"NetworkReady=false", "NetworkPluginNotReady", "pool exhausted"} {
		if !strings.Contains(cond, want) {
			t.Errorf("%s's Ready condition lacks %q: %s", n.name, want, cond)
		}
	}
	t.Logf("%s NotReady %s after its pool filled: %s", n.name, time.Since(start).Round(time.Second), cond)

	if err := restore(); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if cond := c.waitReady(n.name, "True", 2*time.Minute); !strings.HasPrefix(cond, "True") {
		t.Fatalf("%s does not get Ready again once its pool is free: %s", n.name, cond)
	}
	t.Logf("%s Ready again %s after the planted reservations went", n.name, time.Since(start).Round(time.Second))
}

// waitReady polls the node's Ready condition until its status is want or
// the time is up, and returns the last "status reason: message".
func (c *cluster) waitReady(nodeName, want string, limit time.Duration) string {
	var cond string
	for end := time.Now().Add(limit); ; {
		out, err := c.Kubectl(nil, 30*time.Second, "get", "node", nodeName, "-o",
			`jsonpath={.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Ready")].reason}: {.status.conditions[?(@.type=="Ready")].message}`)
		if err == nil {
			cond = strings.TrimSpace(out)
			if strings.HasPrefix(cond, want+" ") {
				return cond
			}
		} else {
			cond = fmt.Sprintf("kubectl get node: %v: %s", err, out)
		}
		if time.Now().After(end) {
			return cond
		}
		time.Sleep(2 * time.Second)
	}
}

// lastAddr is the last address of p (the IPv4 broadcast address).
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	host := p.Addr().BitLen() - p.Bits()
	for i := len(b) - 1; host > 0; i-- {
		n := min(host, 8)
		b[i] |= byte(1<<n - 1)
		host -= n
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}
