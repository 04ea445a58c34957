package kindcluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// Family is the cluster's IP family, as kind's networking.ipFamily names it.
type Family string

const (
	IPv4 Family = "ipv4"
	IPv6 Family = "ipv6"
	Dual Family = "dual"
)

// kind's default subnets; the agent's --cluster-cidrs must match the pod
// subnets, or a node's pod CIDR gets no route.
const (
	PodSubnet4     = "10.244.0.0/16"
	PodSubnet6     = "fd00:10:244::/56"
	ServiceSubnet4 = "10.96.0.0/16"
	ServiceSubnet6 = "fd00:10:96::/112"
)

// ParseFamily accepts ipv4, ipv6 or dual.
func ParseFamily(s string) (Family, error) {
	switch f := Family(strings.ToLower(s)); f {
	case IPv4, IPv6, Dual:
		return f, nil
	}
	return "", fmt.Errorf("ip family %q: want ipv4, ipv6 or dual", s)
}

// PodSubnets returns the family's pod subnets, IPv4 first.
func (f Family) PodSubnets() []string {
	return f.pick(PodSubnet4, PodSubnet6)
}

// ServiceSubnets returns the family's service subnets, IPv4 first.
func (f Family) ServiceSubnets() []string {
	return f.pick(ServiceSubnet4, ServiceSubnet6)
}

// KubernetesVIP is the kubernetes service's address: the first of the
// primary service subnet (IPv4 in a dual-stack kind cluster).
func (f Family) KubernetesVIP() string {
	if f == IPv6 {
		return "fd00:10:96::1"
	}
	return "10.96.0.1"
}

func (f Family) pick(v4, v6 string) []string {
	switch f {
	case IPv4:
		return []string{v4}
	case IPv6:
		return []string{v6}
	}
	return []string{v4, v6}
}

// Options describe a cluster and the images it boots from.
type Options struct {
	// Name is kind's cluster name; nodes are Name-control-plane,
	// Name-worker, Name-worker2, ...
	Name string
	// Network is a Docker network of the cluster's own (not kind's shared
	// "kind"), so Delete can remove it without touching anyone else's;
	// empty means Name.
	Network string
	Workers int
	Family  Family
	// MTU, when set, is the MTU of the cluster's Docker network, which
	// Create then makes itself rather than leaving it to kind (which copies
	// the default bridge's, 1500 here).
	MTU int
	// Kind is the kind CLI; NodeImage, ProbeArchive come from
	// test/kind/build.sh, PluginImage from deploy/build-image.sh.
	Kind, NodeImage, ProbeArchive, PluginImage string
	// RepoRoot holds test/kind/shim and deploy/.
	RepoRoot string
	// Kubeconfig is the file kind merges the cluster's kubeconfig into;
	// empty means kind's default ($KUBECONFIG or ~/.kube/config).
	Kubeconfig string
	// Logf reports progress; nil is silent.
	Logf func(format string, args ...any)
	// MaxPods, when set, is every kubelet's maxPods (kubeadm's
	// KubeletConfiguration); DaemonSet pods count toward it.
	MaxPods int
	// ContainerdPatches are TOML fragments kind merges into every node's
	// containerd configuration.
	ContainerdPatches []string
}

// Cluster is one kind cluster and the environment its commands run with.
type Cluster struct {
	Options
	env []string
	// capDrop names the capabilities the shim drops from --privileged.
	capDrop string
	// snapshotter is the containerd snapshotter the nodes run.
	snapshotter string
}

// New checks the options and prepares kind's environment: the docker shim
// for --privileged, the snapshotter and the cluster's own Docker network.
func New(o Options) (*Cluster, error) {
	if o.Name == "" || o.Kind == "" || o.RepoRoot == "" {
		return nil, errors.New("kind cluster: Name, Kind and RepoRoot must be set")
	}
	if o.Workers < 0 {
		return nil, fmt.Errorf("kind cluster %s: %d workers: want 0 or more", o.Name, o.Workers)
	}
	if _, err := ParseFamily(string(o.Family)); err != nil {
		return nil, fmt.Errorf("kind cluster %s: %w", o.Name, err)
	}
	if o.Network == "" {
		o.Network = o.Name
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	snapshotter := os.Getenv("KIND_EXPERIMENTAL_CONTAINERD_SNAPSHOTTER")
	if snapshotter == "" {
		// native works on any filesystem under the node's /var; the
		// overlayfs default fails where Docker's storage is itself an
		// overlay (overlay-on-overlay), and kind would pick fuse-overlayfs,
		// which the node image does not carry, on a FUSE-backed root.
		snapshotter = "native"
	}
	realDocker, err := exec.LookPath("docker")
	if err != nil {
		return nil, fmt.Errorf("kind cluster needs the docker CLI: %w", err)
	}
	drop, err := missingCapabilities()
	if err != nil {
		return nil, err
	}
	return &Cluster{
		Options:     o,
		capDrop:     drop,
		snapshotter: snapshotter,
		env: append(os.Environ(),
			// kind runs "docker" from PATH: the shim first, which hands
			// everything to the real one and rewrites only --privileged.
			"PATH="+filepath.Join(o.RepoRoot, "test", "kind", "shim")+string(os.PathListSeparator)+os.Getenv("PATH"),
			"VETHROUTE_REAL_DOCKER="+realDocker,
			"VETHROUTE_KIND_CAP_DROP="+drop,
			"KIND_EXPERIMENTAL_DOCKER_NETWORK="+o.Network,
			"KIND_EXPERIMENTAL_CONTAINERD_SNAPSHOTTER="+snapshotter),
	}, nil
}

// createNetwork makes the cluster's Docker network as kind would (IPv4
// masqueraded by Docker, an IPv6 ULA /64 derived from the name), with MTU;
// kind uses a network that exists.
func (c *Cluster) createNetwork() error {
	if c.MTU < 1280 || c.MTU > 65535 {
		return fmt.Errorf("kind cluster %s: network MTU %d: want 1280..65535", c.Name, c.MTU)
	}
	args := []string{"network", "create", "-d", "bridge",
		"-o", "com.docker.network.bridge.enable_ip_masquerade=true",
		"-o", fmt.Sprintf("com.docker.network.driver.mtu=%d", c.MTU)}
	if c.Family != IPv4 {
		h := sha256.Sum256([]byte(c.Network))
		args = append(args, "--ipv6", "--subnet", fmt.Sprintf("fc00:%x:%x:%x::/64", h[0:2], h[2:4], h[4:6]))
	}
	args = append(args, c.Network)
	if out, err := c.Run(nil, time.Minute, "docker", args...); err != nil {
		return fmt.Errorf("docker network create %s: %w\n%s", c.Network, err, out)
	}
	return nil
}

// ControlPlane is the control-plane node's container.
func (c *Cluster) ControlPlane() string { return c.Name + "-control-plane" }

// ProbeImage is the name inside the probe archive (test/kind/build.sh
// names the archive probe-<tag>.tar).
func (c *Cluster) ProbeImage() string {
	tag := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(c.ProbeArchive), "probe-"), ".tar")
	return "vethroute-kind/probe:" + tag
}

// Up creates the cluster, loads the images, applies deploy/ and waits
// until the cluster is usable. On failure the cluster stays for the
// caller to inspect and Delete.
func (c *Cluster) Up() error {
	for _, step := range []func() error{c.Create, c.Load, c.Deploy, c.Wait} {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

// Exists reports whether kind knows a cluster of this name.
func (c *Cluster) Exists() (bool, error) {
	out, err := c.Run(nil, time.Minute, c.Kind, "get", "clusters")
	if err != nil {
		return false, fmt.Errorf("kind get clusters: %w\n%s", err, out)
	}
	for _, l := range strings.Fields(out) {
		if l == c.Name {
			return true, nil
		}
	}
	return false, nil
}

// Create runs kind create cluster with the generated config.
func (c *Cluster) Create() error {
	if c.capDrop != "" {
		c.Logf("this machine withholds %s: kind's --privileged nodes start through test/kind/shim/docker without it", c.capDrop)
	}
	coredns := c.imageHasCoreDNS()
	if !coredns {
		c.Logf("node image %s carries no CoreDNS image: kubeadm skips addon/coredns", c.NodeImage)
	}
	dir, err := os.MkdirTemp("", "vethroute-kind-")
	if err != nil {
		return fmt.Errorf("kind config dir create: %w", err)
	}
	defer os.RemoveAll(dir)
	cfgPath := filepath.Join(dir, "kind.yaml")
	cfg := kindConfig(c.Family, c.Workers, coredns) + extraConfig(c.MaxPods, c.ContainerdPatches)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return fmt.Errorf("kind config write: %w", err)
	}
	args := []string{"create", "cluster", "--name", c.Name, "--image", c.NodeImage, "--config", cfgPath, "--retain", "-v", "1"}
	if c.Kubeconfig != "" {
		args = append(args, "--kubeconfig", c.Kubeconfig)
	}
	if c.MTU != 0 {
		if err := c.createNetwork(); err != nil {
			return err
		}
	}
	c.Logf("creating kind cluster %s: 1 control plane, %d workers, %s, on Docker network %s", c.Name, c.Workers, c.Family, c.Network)
	start := time.Now()
	if out, err := c.Run(nil, 12*time.Minute, c.Kind, args...); err != nil {
		return fmt.Errorf("kind create cluster %s: %w\n%s", c.Name, err, out)
	}
	c.Logf("kind create cluster took %s", time.Since(start).Round(time.Second))
	return nil
}

// kindConfig is kind's cluster config: vethroute is the only CNI and
// kube-proxy runs in nftables mode.
func kindConfig(f Family, workers int, coredns bool) string {
	skip := "preflight"
	if !coredns {
		skip += ", addon/coredns"
	}
	var b strings.Builder
	fmt.Fprintf(&b, `kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  ipFamily: %s
  disableDefaultCNI: true
  kubeProxyMode: nftables
  podSubnet: %s
  serviceSubnet: %s
nodes:
  - role: control-plane
`, f, strings.Join(f.PodSubnets(), ","), strings.Join(f.ServiceSubnets(), ","))
	for range workers {
		b.WriteString("  - role: worker\n")
	}
	fmt.Fprintf(&b, `kubeadmConfigPatches:
  - |
    kind: InitConfiguration
    skipPhases: [%s]
`, skip)
	return b.String()
}

// extraConfig continues kindConfig: a kubelet patch for maxPods (one more
// item of the kubeadmConfigPatches list kindConfig ends with) and the
// containerd patches.
func extraConfig(maxPods int, containerd []string) string {
	var b strings.Builder
	if maxPods > 0 {
		fmt.Fprintf(&b, "  - |\n    kind: KubeletConfiguration\n    maxPods: %d\n", maxPods)
	}
	if len(containerd) > 0 {
		b.WriteString("containerdConfigPatches:\n")
		for _, p := range containerd {
			b.WriteString("  - |-\n")
			for _, line := range strings.Split(strings.TrimRight(p, "\n"), "\n") {
				b.WriteString("    " + line + "\n")
			}
		}
	}
	return b.String()
}

// Load puts the vethroute image and the probe image into every node.
func (c *Cluster) Load() error {
	if err := c.LoadImage(c.PluginImage); err != nil {
		return err
	}
	return c.LoadArchive(c.ProbeArchive)
}

// LoadImage puts an image of the local Docker into every node, as
// `kind load docker-image` would.
func (c *Cluster) LoadImage(image string) error {
	dir, err := os.MkdirTemp("", "vethroute-kind-image-")
	if err != nil {
		return fmt.Errorf("image archive dir create: %w", err)
	}
	defer os.RemoveAll(dir)
	archive := filepath.Join(dir, "image.tar")
	if out, err := c.Run(nil, 3*time.Minute, "docker", "save", "-o", archive, image); err != nil {
		return fmt.Errorf("docker save %s: %w\n%s", image, err, out)
	}
	return c.LoadArchive(archive)
}

// LoadArchive imports an image archive into every node's containerd, in
// the CRI's namespace and unpacked with the nodes' snapshotter: what
// `kind load image-archive` runs. kind's own command is not used because
// kind v0.30 first reads the node's `containerd config dump` to find the
// snapshotter and knows config versions 2 and 3 only, while containerd 2.3
// dumps version 4.
func (c *Cluster) LoadArchive(archive string) error {
	data, err := os.ReadFile(archive)
	if err != nil {
		return fmt.Errorf("image archive read: %w", err)
	}
	out, err := c.run(time.Minute, c.Kind, "get", "nodes", "--name", c.Name)
	if err != nil {
		return fmt.Errorf("kind get nodes: %w\n%s", err, out)
	}
	nodes := strings.Fields(out)
	if len(nodes) == 0 {
		return fmt.Errorf("kind cluster %s has no nodes to load %s into", c.Name, archive)
	}
	for _, n := range nodes {
		args := []string{"exec", "-i", n, "ctr", "--namespace=k8s.io", "images", "import", "--all-platforms", "--digests", "--snapshotter=" + c.snapshotter}
		// containerd 2's ctr imports through the transfer service by
		// default, which unpacks only for the snapshotters of its own
		// unpack configuration (overlayfs) and refuses the nodes' native
		// one ("no unpack platforms defined"); --local imports as ctr 1.x
		// always did. ctr 1.x does not know the flag.
		version, err := c.Run(nil, 30*time.Second, "docker", "exec", n, "ctr", "--version")
		if err != nil {
			return fmt.Errorf("ctr --version in node %s: %w\n%s", n, err, version)
		}
		if strings.Contains(version, "containerd/v2 ") {
			args = append(args, "--local")
		}
		if out, err := c.Run(data, 3*time.Minute, "docker", append(args, "-")...); err != nil {
			return fmt.Errorf("image import of %s into node %s: %w\n%s", filepath.Base(archive), n, err, out)
		}
	}
	return nil
}

// Deploy applies deploy/rbac.yaml and deploy/daemonset.yaml, unchanged but
// for the image and the agent's --cluster-cidrs.
func (c *Cluster) Deploy() error {
	for _, f := range []string{"rbac.yaml", "daemonset.yaml"} {
		raw, err := os.ReadFile(filepath.Join(c.RepoRoot, "deploy", f))
		if err != nil {
			return fmt.Errorf("manifest read: %w", err)
		}
		m, err := manifest(raw, c.PluginImage, c.Family.PodSubnets())
		if err != nil {
			return fmt.Errorf("manifest deploy/%s: %w", f, err)
		}
		if out, err := c.Kubectl(m, time.Minute, "apply", "-f", "-"); err != nil {
			return fmt.Errorf("kubectl apply deploy/%s: %w\n%s", f, err, out)
		}
	}
	return nil
}

var (
	imageLine        = regexp.MustCompile(`(?m)^([ \t]*image:[ \t]*)vethroute:dev[ \t]*$`)
	clusterCIDRsLine = regexp.MustCompile(`(?m)^([ \t]*-[ \t]*--cluster-cidrs=)\S+[ \t]*$`)
)

// manifest replaces the image vethroute:dev and the --cluster-cidrs
// argument, wherever they are; a DaemonSet without them is an error, so a
// changed manifest fails here rather than deploying the wrong thing.
func manifest(raw []byte, image string, podSubnets []string) ([]byte, error) {
	isDS := bytes.Contains(raw, []byte("kind: DaemonSet"))
	if isDS && !imageLine.Match(raw) {
		return nil, errors.New("no `image: vethroute:dev` line to replace")
	}
	if isDS && !clusterCIDRsLine.Match(raw) {
		return nil, errors.New("no `- --cluster-cidrs=` argument to replace")
	}
	raw = imageLine.ReplaceAll(raw, []byte("${1}"+image))
	return clusterCIDRsLine.ReplaceAll(raw, []byte("${1}"+strings.Join(podSubnets, ","))), nil
}

// Wait waits until the agent DaemonSet has rolled out, every node is
// Ready, and CoreDNS (when the node image carries it) answers a pod.
func (c *Cluster) Wait() error {
	for _, args := range [][]string{
		{"-n", "kube-system", "rollout", "status", "daemonset/vethroute-agent", "--timeout=280s"},
		{"wait", "--for=condition=Ready", "node", "--all", "--timeout=280s"},
	} {
		if out, err := c.Kubectl(nil, 5*time.Minute, args...); err != nil {
			return fmt.Errorf("kubectl %s: %w\n%s\n%s", strings.Join(args, " "), err, out, c.Describe())
		}
	}
	out, err := c.Kubectl(nil, 30*time.Second, "get", "nodes", "-o", "name")
	if err != nil {
		return fmt.Errorf("kubectl get nodes: %w\n%s", err, out)
	}
	if n := len(strings.Fields(out)); n != 1+c.Workers {
		return fmt.Errorf("cluster %s has %d nodes, want %d:\n%s", c.Name, n, 1+c.Workers, out)
	}
	if !c.HasCoreDNS() {
		c.Logf("no CoreDNS in cluster %s (the node image carries none): not waiting for DNS", c.Name)
		return nil
	}
	// CoreDNS is the first pod that gets its address from vethroute.
	args := []string{"-n", "kube-system", "rollout", "status", "deployment/coredns", "--timeout=230s"}
	if out, err := c.Kubectl(nil, 4*time.Minute, args...); err != nil {
		return fmt.Errorf("kubectl %s: %w\n%s\n%s", strings.Join(args, " "), err, out, c.Describe())
	}
	return c.waitDNS()
}

// dnsCheckPod runs on the control plane, so it never changes what is on
// the workers that a caller may be counting.
const dnsCheckPod = "vethroute-dns-check"

// waitDNS asks CoreDNS, through the kube-dns service, for the kubernetes
// service from a pod, until it answers (bounded).
func (c *Cluster) waitDNS() (err error) {
	pod := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
  namespace: default
spec:
  nodeName: %s
  tolerations: [{operator: Exists}]
  terminationGracePeriodSeconds: 1
  containers:
    - name: probe
      image: %s
      imagePullPolicy: Never
      command: [/bin/busybox, sleep, "600"]
`, dnsCheckPod, c.ControlPlane(), c.ProbeImage())
	if out, err := c.Kubectl([]byte(pod), time.Minute, "apply", "-f", "-"); err != nil {
		return fmt.Errorf("dns check pod apply: %w\n%s", err, out)
	}
	defer func() {
		out, derr := c.Kubectl(nil, 2*time.Minute, "delete", "pod", dnsCheckPod, "--wait=true", "--timeout=100s")
		if derr != nil && err == nil {
			err = fmt.Errorf("dns check pod delete: %w\n%s", derr, out)
		}
	}()
	if out, err := c.Kubectl(nil, 3*time.Minute, "wait", "--for=condition=Ready", "pod/"+dnsCheckPod, "--timeout=170s"); err != nil {
		return fmt.Errorf("dns check pod wait: %w\n%s\n%s", err, out, c.Describe())
	}
	vip := c.Family.KubernetesVIP()
	var out string
	for range 30 {
		out, _ = c.Kubectl(nil, time.Minute, "exec", dnsCheckPod, "--", "/bin/busybox", "nslookup", "kubernetes.default.svc.cluster.local")
		if Answers(out, vip) {
			c.Logf("CoreDNS answers: kubernetes.default.svc.cluster.local is %s", vip)
			return nil
		}
		time.Sleep(2 * time.Second)
	}
	return fmt.Errorf("coredns: nslookup kubernetes.default.svc.cluster.local from a pod did not answer %s:\n%s", vip, out)
}

// Answers reports whether busybox nslookup output carries ip as an answer
// ("Address: 10.96.0.1"), not merely as part of the server's own address
// ("Address: 10.96.0.10:53").
func Answers(nslookup, ip string) bool {
	for _, line := range strings.Split(nslookup, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == "Address:" && f[1] == ip {
			return true
		}
	}
	return false
}

// HasCoreDNS reports whether the cluster runs CoreDNS.
func (c *Cluster) HasCoreDNS() bool {
	_, err := c.Kubectl(nil, 30*time.Second, "-n", "kube-system", "get", "deployment", "coredns")
	return err == nil
}

// imageHasCoreDNS reads the label test/kind/build.sh sets on the node image.
func (c *Cluster) imageHasCoreDNS() bool {
	out, err := c.Run(nil, 30*time.Second, "docker", "image", "inspect", "-f", `{{index .Config.Labels "vethroute.kind.coredns"}}`, c.NodeImage)
	return err == nil && strings.TrimSpace(out) == "yes"
}

// WriteKubeconfig writes kind's kubeconfig for the cluster to path (mode
// 0600). Its server is 127.0.0.1 and a port Docker publishes on loopback,
// not a node's address.
func (c *Cluster) WriteKubeconfig(path string) error {
	out, err := c.run(time.Minute, c.Kind, "get", "kubeconfig", "--name", c.Name)
	if err != nil {
		return fmt.Errorf("kind get kubeconfig: %w\n%s", err, out)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("kubeconfig dir create: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(out), 0o600); err != nil {
		return fmt.Errorf("kubeconfig write: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("kubeconfig rename: %w", err)
	}
	return nil
}

// ExportLogs runs kind export logs into dir.
func (c *Cluster) ExportLogs(dir string) error {
	if out, err := c.Run(nil, 3*time.Minute, c.Kind, "export", "logs", dir, "--name", c.Name); err != nil {
		return fmt.Errorf("kind export logs: %w\n%s", err, out)
	}
	return nil
}

// Delete removes the cluster, any node container kind left behind, and
// the cluster's Docker network. Deleting what is not there succeeds.
func (c *Cluster) Delete() error {
	var errs []error
	if _, err := os.Stat(c.Kind); err == nil {
		args := []string{"delete", "cluster", "--name", c.Name}
		if c.Kubeconfig != "" {
			args = append(args, "--kubeconfig", c.Kubeconfig)
		}
		if out, err := c.Run(nil, 3*time.Minute, c.Kind, args...); err != nil {
			errs = append(errs, fmt.Errorf("kind delete cluster %s: %w\n%s", c.Name, err, out))
		}
	}
	// Without the kind CLI (or after a half-failed delete) the node
	// containers go by kind's label.
	out, err := c.run(time.Minute, "docker", "ps", "-aq", "--filter", "label=io.x-k8s.kind.cluster="+c.Name)
	if err != nil {
		errs = append(errs, fmt.Errorf("docker ps: %w\n%s", err, out))
	} else if ids := strings.Fields(out); len(ids) > 0 {
		if out, err := c.run(2*time.Minute, "docker", append([]string{"rm", "-f", "-v"}, ids...)...); err != nil {
			errs = append(errs, fmt.Errorf("docker rm of cluster %s's nodes: %w\n%s", c.Name, err, out))
		}
	}
	if out, err := c.Run(nil, time.Minute, "docker", "network", "rm", c.Network); err != nil && !strings.Contains(out, "not found") {
		errs = append(errs, fmt.Errorf("docker network rm %s: %w\n%s", c.Network, err, out))
	}
	return errors.Join(errs...)
}

// Describe gathers what explains most failures: nodes, pods, the agent's
// recent log and events.
func (c *Cluster) Describe() string {
	var b strings.Builder
	for _, args := range [][]string{
		{"get", "nodes", "-o", "wide"},
		{"get", "pods", "-A", "-o", "wide"},
		{"-n", "kube-system", "logs", "daemonset/vethroute-agent", "--tail=30", "--all-containers"},
		{"get", "events", "-A", "--sort-by=.lastTimestamp"},
	} {
		out, _ := c.Kubectl(nil, 30*time.Second, args...)
		fmt.Fprintf(&b, "--- kubectl %s\n%s\n", strings.Join(args, " "), LastLines(out, 40))
	}
	return b.String()
}

// LastLines returns the last n lines of s.
func LastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Kubectl runs kubectl inside the control-plane node (kind sets its
// KUBECONFIG there), so nothing on this machine sends a packet to the
// nodes' private addresses.
func (c *Cluster) Kubectl(stdin []byte, timeout time.Duration, args ...string) (string, error) {
	return c.Run(stdin, timeout, "docker", append([]string{"exec", "-i", c.ControlPlane(), "kubectl"}, args...)...)
}

// Run runs a command with the cluster's environment and a bound on its
// time, and returns its combined output.
func (c *Cluster) Run(stdin []byte, timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = c.env
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s %s: timed out after %s", name, strings.Join(args, " "), timeout)
	}
	return string(out), err
}

// run is Run without stdin, for stdout only (kubeconfig, container ids).
func (c *Cluster) run(timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = c.env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s %s: timed out after %s", name, strings.Join(args, " "), timeout)
	}
	if err != nil {
		return string(out) + stderr.String(), err
	}
	return string(out), nil
}
