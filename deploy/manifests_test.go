package deploy

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/vethroute/vethroute/pkg/agent"
)

func load(t *testing.T) map[string]Manifest {
	t.Helper()
	ms, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	byKind := map[string]Manifest{}
	for _, m := range ms {
		if _, dup := byKind[m.GVK.Kind]; dup {
			t.Fatalf("two %s objects; the tests expect one of each", m.GVK.Kind)
		}
		byKind[m.GVK.Kind] = m
	}
	return byKind
}

func TestManifestsDecodeStrictly(t *testing.T) {
	ms := load(t)
	var kinds []string
	for k := range ms {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	if want := []string{"ClusterRole", "ClusterRoleBinding", "DaemonSet", "ServiceAccount"}; !slices.Equal(kinds, want) {
		t.Fatalf("kinds = %v, want %v", kinds, want)
	}
}

// rules flattens RBAC rules to "group/resource:verbs" and refuses rules by
// resource name or URL.
func rules(t *testing.T, rs []rbacv1.PolicyRule) []string {
	t.Helper()
	var got []string
	for _, r := range rs {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				got = append(got, g+"/"+res+":"+strings.Join(r.Verbs, ","))
			}
		}
		if len(r.ResourceNames) > 0 || len(r.NonResourceURLs) > 0 {
			t.Errorf("unexpected rule %+v", r)
		}
	}
	slices.Sort(got)
	return got
}

// TestRBACIsMinimal pins the agent's permissions to what it uses: read
// Nodes cluster-wide, watch Pods, Namespaces and NetworkPolicies for
// NetworkPolicy, write Events (about Nodes in "default", about
// NetworkPolicies in their namespaces).
func TestRBACIsMinimal(t *testing.T) {
	ms := load(t)
	role := ms["ClusterRole"].Object.(*rbacv1.ClusterRole)
	if got, want := rules(t, role.Rules), []string{"/events:create,patch", "/namespaces:list,watch", "/nodes:get,list,watch", "/pods:list,watch", "networking.k8s.io/networkpolicies:list,watch"}; !slices.Equal(got, want) {
		t.Errorf("ClusterRole rules = %v, want %v", got, want)
	}
	crb := ms["ClusterRoleBinding"].Object.(*rbacv1.ClusterRoleBinding)
	sa := ms["ServiceAccount"].Object.(*corev1.ServiceAccount)
	ds := ms["DaemonSet"].Object.(*appsv1.DaemonSet)
	bindsSA := func(s []rbacv1.Subject) bool {
		return len(s) == 1 && s[0].Kind == "ServiceAccount" && s[0].Name == sa.Name && s[0].Namespace == sa.Namespace
	}
	if crb.RoleRef.Kind != "ClusterRole" || crb.RoleRef.Name != role.Name || !bindsSA(crb.Subjects) {
		t.Errorf("binding %+v does not bind ClusterRole %s to ServiceAccount %s/%s", crb, role.Name, sa.Namespace, sa.Name)
	}
	if ds.Spec.Template.Spec.ServiceAccountName != sa.Name || ds.Namespace != sa.Namespace {
		t.Errorf("DaemonSet runs as %s/%s, want %s/%s", ds.Namespace, ds.Spec.Template.Spec.ServiceAccountName, sa.Namespace, sa.Name)
	}
}

// TestDaemonSetMatchesAgent checks the DaemonSet against the agent itself:
// every argument is a flag the agent accepts and validates, the node name
// comes from the downward API, and the init container installs the plugin.
func TestDaemonSetMatchesAgent(t *testing.T) {
	ds := load(t)["DaemonSet"].Object.(*appsv1.DaemonSet)
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork {
		t.Error("the agent must use the node's network namespace (hostNetwork)")
	}
	if len(spec.Containers) != 1 || len(spec.InitContainers) != 1 {
		t.Fatalf("want one init container and one container, got %d and %d", len(spec.InitContainers), len(spec.Containers))
	}
	c := spec.Containers[0]
	var o agent.Options
	fs := flag.NewFlagSet("vethroute-agent", flag.ContinueOnError)
	o.AddFlags(fs)
	if err := fs.Parse(c.Args); err != nil {
		t.Fatalf("agent args %v: %v", c.Args, err)
	}
	if err := o.Validate(func(k string) string {
		if k == "NODE_NAME" {
			return "node-from-downward-api"
		}
		return ""
	}); err != nil {
		t.Fatalf("agent args %v: %v", c.Args, err)
	}
	var nodeEnv *corev1.EnvVar
	for i := range c.Env {
		if c.Env[i].Name == "NODE_NAME" {
			nodeEnv = &c.Env[i]
		}
	}
	if nodeEnv == nil || nodeEnv.ValueFrom == nil || nodeEnv.ValueFrom.FieldRef == nil || nodeEnv.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("NODE_NAME must come from spec.nodeName, got %+v", nodeEnv)
	}
	mounted := func(c corev1.Container, path string) bool {
		for _, m := range c.VolumeMounts {
			if m.MountPath == path {
				return true
			}
		}
		return false
	}
	if !mounted(c, o.CNIConfDir) {
		t.Errorf("--cni-conf-dir %s is not a mounted volume", o.CNIConfDir)
	}
	ic := spec.InitContainers[0]
	if len(ic.Command) < 2 || ic.Command[1] != "install-cni" {
		t.Fatalf("init container command %v does not run install-cni", ic.Command)
	}
	ifs := flag.NewFlagSet("install-cni", flag.ContinueOnError)
	from := ifs.String("from", "", "")
	to := ifs.String("to", "", "")
	if err := ifs.Parse(ic.Command[2:]); err != nil {
		t.Fatal(err)
	}
	if !mounted(ic, *to) || *from == "" {
		t.Errorf("install-cni --from=%q --to=%q: target not mounted", *from, *to)
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" ||
		c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Error("probes must use /readyz and /healthz")
	}
	if !strings.HasSuffix(o.HealthAddr, ":"+c.ReadinessProbe.HTTPGet.Port.String()) {
		t.Errorf("probe port %s is not --health-addr %s", c.ReadinessProbe.HTTPGet.Port.String(), o.HealthAddr)
	}
}

// TestDaemonSetMemoryLimit checks the agent's Go soft memory limit
// against its container's hard one: the soft limit must leave the
// container room for what the Go runtime does not count (the binary's
// pages, thread stacks), or the kernel kills the agent before its garbage
// collector is asked to work harder.
func TestDaemonSetMemoryLimit(t *testing.T) {
	c := load(t)["DaemonSet"].Object.(*appsv1.DaemonSet).Spec.Template.Spec.Containers[0]
	var soft string
	for _, e := range c.Env {
		if e.Name == "GOMEMLIMIT" {
			soft = e.Value
		}
	}
	limit, err := goMemLimit(soft)
	if err != nil {
		t.Fatalf("GOMEMLIMIT %q: %v", soft, err)
	}
	hard, ok := c.Resources.Limits[corev1.ResourceMemory]
	if !ok {
		t.Fatal("the agent container has no memory limit")
	}
	if limit < 16<<20 || limit > hard.Value()*3/4 {
		t.Errorf("GOMEMLIMIT %s (%d bytes) must lie between 16 MiB and three quarters of the container's memory limit %s", soft, limit, hard.String())
	}
}

// goMemLimit parses a GOMEMLIMIT value as the Go runtime does: a number of
// bytes with an optional B, KiB, MiB, GiB or TiB suffix.
func goMemLimit(s string) (int64, error) {
	units := []struct {
		suffix string
		shift  uint
	}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}, {"B", 0}}
	shift := uint(0)
	for _, u := range units {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			s, shift = n, u.shift
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("not a positive number of bytes with a B, KiB, MiB, GiB or TiB suffix")
	}
	return n << shift, nil
}

func TestDecodeRejects(t *testing.T) {
	good := `apiVersion: v1
kind: ServiceAccount
metadata:
  name: x
  namespace: kube-system
`
	tests := []struct {
		name, doc, wantErr string
	}{
		{name: "unknown field", doc: strings.Replace(good, "  name: x", "  name: x\n  nmae: y", 1), wantErr: "unknown field"},
		{name: "duplicate key", doc: strings.Replace(good, "  name: x", "  name: x\n  name: y", 1), wantErr: "already set"},
		{name: "wrong type", doc: strings.Replace(good, "  name: x", "  name: [x]", 1), wantErr: "name"},
		{name: "unknown kind", doc: strings.Replace(good, "ServiceAccount", "ServiceAcount", 1), wantErr: "ServiceAcount"},
		{name: "typo in a nested DaemonSet field", doc: `apiVersion: apps/v1
kind: DaemonSet
metadata: {name: x}
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      hostNetwrok: true
      containers: [{name: c, image: i}]
`, wantErr: "hostNetwrok"},
	}
	if ms, err := Decode("good.yaml", []byte("# comment\n---\n"+good)); err != nil || len(ms) != 1 {
		t.Fatalf("Decode(good) = %d objects, %v", len(ms), err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode("bad.yaml", []byte(good+"---\n"+tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "document 1") {
				t.Fatalf("Decode() = %v, want an error about %q in document 1", err, tc.wantErr)
			}
		})
	}
}

// TestUninstallDaemonSet checks deploy/uninstall/daemonset.yaml strictly
// and that every path its command names is a mounted host directory.
func TestUninstallDaemonSet(t *testing.T) {
	data, err := os.ReadFile("uninstall/daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ms, err := Decode("uninstall/daemonset.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 {
		t.Fatalf("%d objects, want one DaemonSet", len(ms))
	}
	ds, ok := ms[0].Object.(*appsv1.DaemonSet)
	if !ok {
		t.Fatalf("object is a %s, want a DaemonSet", ms[0].GVK.Kind)
	}
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork || len(spec.Containers) != 1 {
		t.Fatal("uninstall must run one container in the node's network namespace")
	}
	c := spec.Containers[0]
	if len(c.Command) < 2 || c.Command[1] != "uninstall" {
		t.Fatalf("command %v does not run uninstall", c.Command)
	}
	fs := flag.NewFlagSet("uninstall", flag.ContinueOnError)
	confDir := fs.String("cni-conf-dir", "", "")
	binDir := fs.String("cni-bin-dir", "", "")
	socket := fs.String("reaper-socket", "", "")
	wait := fs.Bool("wait", false, "")
	if err := fs.Parse(c.Command[2:]); err != nil {
		t.Fatal(err)
	}
	mounted := map[string]bool{}
	for _, m := range c.VolumeMounts {
		mounted[m.MountPath] = true
	}
	for _, dir := range []string{*confDir, *binDir, filepath.Dir(*socket)} {
		if !mounted[dir] {
			t.Errorf("%s is not a mounted volume", dir)
		}
	}
	if !*wait {
		t.Error("without --wait the kubelet restarts a finished uninstall forever")
	}
	caps := c.SecurityContext.Capabilities
	if caps == nil || !slices.Equal(caps.Add, []corev1.Capability{"NET_ADMIN"}) || !slices.Equal(caps.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("capabilities %+v, want NET_ADMIN alone", caps)
	}
}
