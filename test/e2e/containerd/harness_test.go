package containerd

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vethroute/vethroute/internal/ociimage"
	"github.com/vethroute/vethroute/internal/testutil"
	"golang.org/x/sys/unix"
)

const (
	// pauseRef names the locally built sandbox image; no registry is
	// reachable, so CRI must never try to pull it.
	pauseRef = "docker.io/vethroute/pause:e2e"
	// networkName is the conflist's network name, and so the directory of
	// the built-in allocator's store.
	networkName = "vethroute-e2e"
	// The pod range lives only inside the test's node namespace.
	podSubnet  = "10.244.7.0/24"
	rangeStart = "10.244.7.1"
	rangeEnd   = "10.244.7.250"
	gateway    = "10.244.7.254"
	// containerPort is what every pod's port mapping forwards to.
	containerPort = 80
)

// conflistTemplate chains vethroute with portmap, as a node's
// /etc/cni/net.d would. cniVersion 1.0.0 is the newest the CNI library in
// containerd 1.6 speaks.
const conflistTemplate = `{
  "cniVersion": "1.0.0",
  "name": %q,
  "plugins": [
    {
      "type": "vethroute",
      "logFile": %q,
      "logLevel": "debug",
      "ipam": {
        "type": "vethroute",
        "ranges": [[{ "subnet": %q, "rangeStart": %q, "rangeEnd": %q, "gateway": %q }]],
        "routes": [{ "dst": "0.0.0.0/0" }],
        "dataDir": %q
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
`

// configTemplate is the test's containerd configuration. Everything lives
// under the test's directory. The CRI settings are the ones this machine
// needs:
//   - restrict_oom_score_adj: the sandbox forbids negative oom_score_adj
//     and runc then fails with "can't get final child's PID from pipe";
//   - netns_mounts_under_state_dir: pod network namespaces are pinned under
//     the test's state dir instead of the machine's /var/run/netns;
//   - disable_apparmor: never load a profile into the machine's kernel.
//
// Snapshotters that would probe the machine (btrfs, zfs, devmapper, aufs)
// are disabled.
const configTemplate = `version = 2
root = %q
state = %q
oom_score = 0
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = %q

[debug]
  level = "info"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = %q
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = %q
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    disable_apparmor = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = %q
      conf_dir = %q
      max_conf_num = 1
`

// cluster is one containerd with the CRI plugin, private to a test: its own
// root, state and socket; a node network namespace where the node end of
// every veth lands; and a private mount namespace in which /run and
// /var/lib are the test's own directories.
//
// Why the mount namespace: Debian's containerd 1.6 puts shim sockets and
// runc state under /run/containerd whatever its config says, and libcni
// caches results under /var/lib/cni. Inside the private namespace both are
// the test's directories, so nothing of the machine's (nor the Docker
// engine's containerd) is ever seen or touched, and every mount the
// runtime makes (rootfs overlays, pod netns pins) dies with the namespace.
type cluster struct {
	t   *testing.T
	dir string
	// node is the node namespace plus the allocator's data dir, so that
	// testutil's checks (RequireClean, Reservations) apply.
	node   *testutil.Node
	crictl string
	// cgroupParent is the pods' cgroup parent, e.g. /vethroute-e2e-123.
	cgroupParent string
	spawner      *spawner

	holder *exec.Cmd
	// mntNS is the private mount namespace, as /proc/<holder>/ns/mnt.
	mntNS string
	// mntNSID is its identity (readlink of mntNS), to find every process
	// that lives in it.
	mntNSID string

	// daemon is the running containerd (nil when stopped); daemonDone is
	// closed when it has exited.
	daemon     *exec.Cmd
	daemonDone chan struct{}
	logPath    string
	pluginLg   string
}

// newCluster sets everything up and starts containerd; t.Cleanup stops it
// and removes everything, whatever happens in between.
func newCluster(ctx context.Context, t *testing.T) *cluster {
	t.Helper()
	testutil.RequireRoot(t)
	crictl := setupTools(ctx, t)

	nodeNS := testutil.NewNS(t)
	// A real node's loopback is up; CRI's streaming server listens on
	// 127.0.0.1 and containerd exits at start without it.
	testutil.MustRunIn(t, nodeNS, "ip", "link", "set", "lo", "up")

	dir := t.TempDir()
	c := &cluster{
		t:            t,
		dir:          dir,
		node:         &testutil.Node{NS: nodeNS, DataDir: filepath.Join(dir, "ipam")},
		crictl:       crictl,
		cgroupParent: "/vethroute-e2e-" + strconv.Itoa(os.Getpid()) + "-" + filepath.Base(filepath.Dir(dir)),
		logPath:      filepath.Join(dir, "containerd.log"),
		pluginLg:     filepath.Join(dir, "vethroute.log"),
	}
	for _, d := range []string{"root", "state", "opt", "run/containerd", "varlib/cni", "cni/bin", "cni/net.d", "ipam", "pods"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	c.spawner = newSpawner(t)
	c.writeCNI(t)
	c.writeConfig(t)
	image := c.buildPauseImage(t)

	// Registered before anything is started: it runs last-in-first-out,
	// so after every later cleanup and before the node and dir go away.
	t.Cleanup(c.teardown)
	// containerd is the subreaper of its shims; when it stops (restart,
	// teardown) they would be re-parented to the machine's init and linger
	// as zombies until it gets round to them. As the subreaper ourselves,
	// the test reaps them in teardown.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("become child subreaper: %v", err)
	}
	c.startHolder(ctx, t)
	if err := c.start(ctx); err != nil {
		t.Fatalf("start containerd: %v", err)
	}
	if out, err := c.run(ctx, 2*time.Minute, "ctr", "--address", c.socket(), "--namespace", "k8s.io", "images", "import", image); err != nil {
		t.Fatalf("import %s: %v\n%s", pauseRef, err, out)
	}
	return c
}

// setupTools runs setup.sh, which installs containerd, runc and crictl only
// when missing, and returns the crictl path.
func setupTools(ctx context.Context, t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(testutil.RepoRoot(t), "test", "e2e", "containerd", "setup.sh"))
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("setup.sh: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	crictl := lines[len(lines)-1]
	if _, err := os.Stat(crictl); err != nil {
		t.Fatalf("setup.sh printed %q, not a crictl binary: %v\n%s", crictl, err, stderr.String())
	}
	return crictl
}

func (c *cluster) socket() string { return filepath.Join(c.dir, "containerd.sock") }

// writeCNI fills the CNI bin dir (containerd 1.6 takes a single one) with
// the freshly built vethroute, the reference portmap and loopback (CRI
// always sets up the pod's lo through the loopback plugin), and writes the
// conflist.
func (c *cluster) writeCNI(t *testing.T) {
	t.Helper()
	bins := map[string]string{
		"vethroute": testutil.PluginDir(t),
		"portmap":   testutil.ReferencePlugins(t, "portmap"),
		"loopback":  testutil.StaticBinaries(t, "github.com/containernetworking/plugins/plugins/main/loopback"),
	}
	for name, dir := range bins {
		if err := os.Symlink(filepath.Join(dir, name), filepath.Join(c.dir, "cni", "bin", name)); err != nil {
			t.Fatal(err)
		}
	}
	conf := fmt.Sprintf(conflistTemplate, networkName, c.pluginLg, podSubnet, rangeStart, rangeEnd, gateway, c.node.DataDir)
	if err := os.WriteFile(filepath.Join(c.dir, "cni", "net.d", "10-vethroute.conflist"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (c *cluster) writeConfig(t *testing.T) {
	t.Helper()
	conf := fmt.Sprintf(configTemplate,
		filepath.Join(c.dir, "root"), filepath.Join(c.dir, "state"), c.socket(),
		filepath.Join(c.dir, "opt"), pauseRef,
		filepath.Join(c.dir, "cni", "bin"), filepath.Join(c.dir, "cni", "net.d"))
	if err := os.WriteFile(filepath.Join(c.dir, "config.toml"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	crictlConf := fmt.Sprintf("runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 60\n", c.socket(), c.socket())
	if err := os.WriteFile(filepath.Join(c.dir, "crictl.yaml"), []byte(crictlConf), 0o600); err != nil {
		t.Fatal(err)
	}
}

// buildPauseImage builds the pause program and packs it into an OCI image
// archive, returning the archive's path.
func (c *cluster) buildPauseImage(t *testing.T) string {
	t.Helper()
	bin, err := os.ReadFile(filepath.Join(testutil.StaticBinaries(t, "./test/e2e/containerd/pause"), "pause"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(c.dir, "pause.tar")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img := ociimage.Spec{Name: pauseRef, Entrypoint: []string{"/pause"}, Files: []ociimage.File{{Dst: "/pause", Mode: 0o755, Data: bin}}}
	if err := ociimage.Build(f, img); err != nil {
		t.Fatalf("write pause image: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// startHolder starts the process that owns the private mount namespace:
// unshare makes the namespace (every mount private, so nothing propagates
// back to the machine), bind-mounts the test's run/ and varlib/ over /run
// and /var/lib, and sleeps until killed. containerd (each start) joins it
// with nsenter; shims and runc inherit it.
func (c *cluster) startHolder(ctx context.Context, t *testing.T) {
	t.Helper()
	script := `mount --bind "$1" /run && mount --bind "$2" /var/lib && echo ready && exec sleep infinity`
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "--",
		"sh", "-c", script, "vethroute-e2e-holder", filepath.Join(c.dir, "run"), filepath.Join(c.dir, "varlib"))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := c.spawner.start(cmd); err != nil {
		t.Fatalf("start mount namespace holder: %v", err)
	}
	c.holder = cmd
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- line
	}()
	select {
	case line := <-ready:
		if strings.TrimSpace(line) != "ready" {
			t.Fatalf("mount namespace holder failed: %q %s", line, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("mount namespace holder not ready after 30s: %s", stderr.String())
	case <-ctx.Done():
		t.Fatalf("mount namespace holder: %v", ctx.Err())
	}
	c.mntNS = fmt.Sprintf("/proc/%d/ns/mnt", cmd.Process.Pid)
	id, err := os.Readlink(c.mntNS)
	if err != nil {
		t.Fatal(err)
	}
	own, _ := os.Readlink("/proc/self/ns/mnt")
	if id == own {
		t.Fatalf("holder shares the test's mount namespace %s", id)
	}
	c.mntNSID = id
}

// start starts containerd inside the node's network namespace and the
// private mount namespace and waits until CRI reports the network ready,
// i.e. it has loaded the conflist.
func (c *cluster) start(ctx context.Context) error {
	logf, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "=== vethroute e2e: starting containerd at %s\n", time.Now().Format(time.RFC3339Nano))
	// nsenter, not `ip netns exec`: the latter remounts /sys, and runc then
	// finds no cgroup mount.
	cmd := exec.Command("nsenter", "--mount="+c.mntNS, "--net="+c.node.NS.Path(),
		"containerd", "--config", filepath.Join(c.dir, "config.toml"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	if err := c.spawner.start(cmd); err != nil {
		return fmt.Errorf("start containerd: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	c.daemon, c.daemonDone = cmd, done

	deadline := time.Now().Add(time.Minute)
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("containerd exited during start: %s", cmd.ProcessState)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
		if lastErr = c.networkReady(ctx); lastErr == nil {
			return nil
		}
	}
	return fmt.Errorf("containerd not ready after 1m: %w", lastErr)
}

// networkReady asks CRI for its NetworkReady condition.
func (c *cluster) networkReady(ctx context.Context) error {
	out, err := c.crictlRun(ctx, 10*time.Second, "info")
	if err != nil {
		return err
	}
	var info struct {
		Status struct {
			Conditions []struct {
				Type    string `json:"type"`
				Status  bool   `json:"status"`
				Message string `json:"message"`
			} `json:"conditions"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		return fmt.Errorf("decode crictl info: %w", err)
	}
	for _, cond := range info.Status.Conditions {
		if cond.Type == "NetworkReady" {
			if !cond.Status {
				return fmt.Errorf("network not ready: %s", cond.Message)
			}
			return nil
		}
	}
	return errors.New("crictl info reports no NetworkReady condition")
}

// stop sends containerd SIGTERM and waits for it, killing it after a
// bounded grace period. Shims and pods keep running, as on a real node.
func (c *cluster) stop() error {
	if c.daemon == nil {
		return nil
	}
	defer func() { c.daemon = nil }()
	_ = c.daemon.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.daemonDone:
		return nil
	case <-time.After(20 * time.Second):
	}
	_ = c.daemon.Process.Kill()
	select {
	case <-c.daemonDone:
		return errors.New("containerd ignored SIGTERM for 20s and was killed")
	case <-time.After(10 * time.Second):
		return errors.New("containerd survived SIGKILL for 10s")
	}
}

// restart stops containerd and starts it again in the same namespaces.
func (c *cluster) restart(ctx context.Context) error {
	if err := c.stop(); err != nil {
		return err
	}
	return c.start(ctx)
}

// run runs a command on the machine, bounded by timeout, and returns its
// stdout; stderr is folded into the error.
func (c *cluster) run(ctx context.Context, timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// crictlRun runs crictl against the test's containerd.
func (c *cluster) crictlRun(ctx context.Context, timeout time.Duration, args ...string) (string, error) {
	return c.run(ctx, timeout, c.crictl, append([]string{"--config", filepath.Join(c.dir, "crictl.yaml")}, args...)...)
}

// pod is a sandbox as the test knows it.
type pod struct {
	Name string
	ID   string
	IP   net.IP
	// NetNS is the pod's network namespace as CRI reports it: a pin
	// under containerd's state dir, visible inside the private mount
	// namespace only.
	NetNS    string
	HostPort int
}

// runPod writes a pod config and runs `crictl runp`. Each pod maps a
// distinct host port to containerPort, so portmap has work on every ADD
// and DEL.
func (c *cluster) runPod(ctx context.Context, name string, hostPort int) (*pod, error) {
	cfg := map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": "vethroute-e2e", "uid": name + "-uid", "attempt": 0},
		"hostname":      name,
		"log_directory": filepath.Join(c.dir, "pods", name),
		"port_mappings": []map[string]any{{"protocol": 0, "container_port": containerPort, "host_port": hostPort}},
		"linux":         map[string]any{"cgroup_parent": c.cgroupParent},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(c.dir, "pods", name+".json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return nil, err
	}
	out, err := c.crictlRun(ctx, 2*time.Minute, "runp", path)
	if err != nil {
		return nil, fmt.Errorf("run pod %s: %w", name, err)
	}
	p, err := c.inspect(ctx, strings.TrimSpace(out))
	if err != nil {
		return nil, err
	}
	if p.Name != name {
		return nil, fmt.Errorf("crictl runp %s returned pod %s (%s)", name, p.ID, p.Name)
	}
	p.HostPort = hostPort
	return p, nil
}

// inspect reads a pod's state, address and network namespace from
// `crictl inspectp`, failing unless the sandbox is ready.
func (c *cluster) inspect(ctx context.Context, id string) (*pod, error) {
	out, err := c.crictlRun(ctx, time.Minute, "inspectp", "--output", "json", id)
	if err != nil {
		return nil, fmt.Errorf("inspect pod %s: %w", id, err)
	}
	var v struct {
		Status struct {
			ID       string `json:"id"`
			State    string `json:"state"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
			Network struct {
				IP string `json:"ip"`
			} `json:"network"`
		} `json:"status"`
		Info struct {
			RuntimeSpec struct {
				Linux struct {
					Namespaces []struct {
						Type string `json:"type"`
						Path string `json:"path"`
					} `json:"namespaces"`
				} `json:"linux"`
			} `json:"runtimeSpec"`
		} `json:"info"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		return nil, fmt.Errorf("decode inspectp of %s: %w", id, err)
	}
	if v.Status.State != "SANDBOX_READY" {
		return nil, fmt.Errorf("pod %s is %s, not SANDBOX_READY", id, v.Status.State)
	}
	p := &pod{ID: v.Status.ID, Name: v.Status.Metadata.Name, IP: net.ParseIP(v.Status.Network.IP)}
	if p.IP == nil {
		return nil, fmt.Errorf("pod %s reports no address (%q)", id, v.Status.Network.IP)
	}
	for _, n := range v.Info.RuntimeSpec.Linux.Namespaces {
		if n.Type == "network" {
			p.NetNS = n.Path
		}
	}
	if !strings.HasPrefix(p.NetNS, filepath.Join(c.dir, "state")+"/") {
		return nil, fmt.Errorf("pod %s has network namespace %q, not a pin under the test's state dir", id, p.NetNS)
	}
	return p, nil
}

// removePod stops and removes a pod, as the kubelet does on deletion.
func (c *cluster) removePod(ctx context.Context, id string) error {
	if _, err := c.crictlRun(ctx, 2*time.Minute, "stopp", id); err != nil {
		return err
	}
	_, err := c.crictlRun(ctx, 2*time.Minute, "rmp", id)
	return err
}

// inPod runs a command inside a pod's network namespace. The pin CRI
// reports exists inside the private mount namespace only, so the command
// first joins that (outer nsenter), then opens the pin there (inner).
func (c *cluster) inPod(ctx context.Context, p *pod, timeout time.Duration, args ...string) (string, error) {
	full := append([]string{"--mount=" + c.mntNS, "--", "nsenter", "--net=" + p.NetNS, "--"}, args...)
	return c.run(ctx, timeout, "nsenter", full...)
}

// inNode runs a command in the node's network namespace.
func (c *cluster) inNode(ctx context.Context, timeout time.Duration, args ...string) (string, error) {
	full := append([]string{"--net=" + c.node.NS.Path(), "--"}, args...)
	return c.run(ctx, timeout, "nsenter", full...)
}

// teardown removes every trace of the cluster: pods (through CRI while
// containerd runs, so CNI DEL cleans the node), containerd, then whatever
// process is left in the private mount namespace or the pods' cgroup, then
// the cgroups. On failure it first prints containerd's and the plugin's
// logs.
func (c *cluster) teardown() {
	t := c.t
	if t.Failed() {
		c.dumpLogs()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if c.daemon != nil {
		if out, err := c.crictlRun(ctx, 30*time.Second, "pods", "--quiet"); err == nil {
			for _, id := range strings.Fields(out) {
				if err := c.removePod(ctx, id); err != nil {
					t.Logf("teardown: remove pod %s: %v", id, err)
				}
			}
		}
	}
	if err := c.stop(); err != nil {
		t.Errorf("teardown: %v", err)
	}
	// With containerd gone nothing restarts them: kill the pods'
	// processes, then the shims and the holder (all in the private
	// mount namespace). The namespace, and every mount in it, goes with
	// its last process.
	c.killAll(func() []int { return c.cgroupProcs() }, "pod")
	if c.mntNSID != "" {
		c.killAll(func() []int { return procsInMountNS(c.mntNSID) }, "mount namespace")
	}
	if c.holder != nil {
		_ = c.holder.Wait()
	}
	c.reapOrphans()
	_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	c.removeCgroups()
}

// reapOrphans waits for the exited processes re-parented to the test (the
// shims and pods of a stopped containerd), for at most 10s. Only zombies
// are reaped, by PID: a running child may be an exec.Cmd whose Wait is
// still due.
func (c *cluster) reapOrphans() {
	deadline := time.Now().Add(10 * time.Second)
	for {
		zombies, orphans := children()
		for _, pid := range zombies {
			var ws syscall.WaitStatus
			_, _ = syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		}
		if len(zombies) == 0 && len(orphans) == 0 {
			return
		}
		if time.Now().After(deadline) {
			c.t.Errorf("teardown: children left: zombies %v, running %v", zombies, orphans)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// children lists the test process's children that are not the go tool's
// helpers: zombies, and running processes that were started by containerd
// (shims, pods) rather than by the test.
func children() (zombies, running []int) {
	self := os.Getpid()
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces, so split
		// after the last ')'.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		comm := s[strings.IndexByte(s, '(')+1 : i]
		f := strings.Fields(s[i+1:])
		if len(f) < 2 || f[1] != strconv.Itoa(self) {
			continue
		}
		switch {
		case f[0] == "Z":
			zombies = append(zombies, pid)
		case strings.HasPrefix(comm, "containerd-shim") || comm == "pause":
			running = append(running, pid)
		}
	}
	return zombies, running
}

// killAll SIGKILLs the processes list returns until it returns none, for
// at most 20s.
func (c *cluster) killAll(list func() []int, what string) {
	deadline := time.Now().Add(20 * time.Second)
	for {
		pids := list()
		if len(pids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			c.t.Errorf("teardown: %s processes %v survive SIGKILL", what, pids)
			return
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// cgroupDirs returns the pods' cgroup parent in every mounted hierarchy
// (each v1 controller and the v2 one) where it exists.
func (c *cluster) cgroupDirs() []string {
	roots := []string{"/sys/fs/cgroup"}
	entries, _ := os.ReadDir("/sys/fs/cgroup")
	for _, e := range entries {
		if e.IsDir() {
			roots = append(roots, filepath.Join("/sys/fs/cgroup", e.Name()))
		}
	}
	var dirs []string
	for _, r := range roots {
		d := filepath.Join(r, c.cgroupParent)
		if st, err := os.Stat(filepath.Join(d, "cgroup.procs")); err == nil && !st.IsDir() {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

// cgroupProcs lists every process under the pods' cgroup parent.
func (c *cluster) cgroupProcs() []int {
	seen := map[int]bool{}
	var pids []int
	for _, d := range c.cgroupDirs() {
		_ = filepath.WalkDir(d, func(path string, e fs.DirEntry, err error) error {
			if err != nil || e.Name() != "cgroup.procs" {
				return nil
			}
			b, _ := os.ReadFile(path)
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && !seen[pid] {
					seen[pid] = true
					pids = append(pids, pid)
				}
			}
			return nil
		})
	}
	return pids
}

// removeCgroups removes the pods' cgroup parent and anything runc left
// below it, deepest first, retrying while the kernel still counts exited
// tasks.
func (c *cluster) removeCgroups() {
	deadline := time.Now().Add(20 * time.Second)
	for {
		var left []string
		for _, d := range c.cgroupDirs() {
			var sub []string
			_ = filepath.WalkDir(d, func(path string, e fs.DirEntry, err error) error {
				if err == nil && e.IsDir() {
					sub = append(sub, path)
				}
				return nil
			})
			for i := len(sub) - 1; i >= 0; i-- {
				if err := syscall.Rmdir(sub[i]); err != nil && !errors.Is(err, fs.ErrNotExist) {
					left = append(left, fmt.Sprintf("%s: %v", sub[i], err))
				}
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			c.t.Errorf("teardown: cannot remove cgroups: %s", strings.Join(left, "; "))
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// procsInMountNS lists the processes whose mount namespace is id (the
// readlink form, "mnt:[4026532246]"), except the test itself.
func procsInMountNS(id string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if link, err := os.Readlink(filepath.Join("/proc", e.Name(), "ns", "mnt")); err == nil && link == id {
			pids = append(pids, pid)
		}
	}
	return pids
}

// dumpLogs prints containerd's log and the plugin's log, the last lines of
// each, to explain a failure.
func (c *cluster) dumpLogs() {
	for _, f := range []string{c.logPath, c.pluginLg} {
		b, err := os.ReadFile(f)
		if err != nil {
			c.t.Logf("%s: %v", f, err)
			continue
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		const keep = 300
		if len(lines) > keep {
			lines = append([]string{fmt.Sprintf("... (%d earlier lines)", len(lines)-keep)}, lines[len(lines)-keep:]...)
		}
		c.t.Logf("==== %s ====\n%s", f, strings.Join(lines, "\n"))
	}
}

// spawner starts processes from one goroutine locked to its OS thread for
// the life of the test. Linux ties Pdeathsig to the thread that forked, not
// to the process, so children started from an arbitrary Go thread could be
// killed whenever the runtime retires that thread; from this thread they are
// killed exactly when the test process dies (e.g. `go test` timing out),
// instead of outliving it.
type spawner struct {
	reqs chan spawnReq
}

type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

func newSpawner(t *testing.T) *spawner {
	s := &spawner{reqs: make(chan spawnReq)}
	go func() {
		runtime.LockOSThread()
		// Never unlocked: when this goroutine returns, the thread exits,
		// and the children get their Pdeathsig. That happens only after
		// t.Cleanup below, when they must be gone anyway.
		for r := range s.reqs {
			r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			r.done <- r.cmd.Start()
		}
	}()
	t.Cleanup(func() { close(s.reqs) })
	return s
}

func (s *spawner) start(cmd *exec.Cmd) error {
	done := make(chan error, 1)
	s.reqs <- spawnReq{cmd: cmd, done: done}
	return <-done
}
