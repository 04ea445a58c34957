//go:build linux

// Package kubeapi runs a real kube-apiserver, backed by a real etcd, for
// tests that talk to Kubernetes through client-go.
//
// A fake clientset cannot show what the project must survive in production:
// API-side validation, resourceVersion conflicts, RBAC, and the API server
// going away and coming back. The binaries are built once by
// test/k8s/build.sh (make k8s-bins) at the versions pinned in
// test/k8s/versions.env; tests that call Start fail when they are absent
// and the test runs as root (as make test does), and skip otherwise.
//
// Everything runs on 127.0.0.1 with throw-away state under t.TempDir(); the
// machine's network configuration is never touched.
package kubeapi

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"github.com/vethroute/vethroute/internal/testutil"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

const (
	// readyTimeout bounds each wait for etcd or kube-apiserver to become
	// ready; a cold kube-apiserver on 2 cores is ready in a few seconds, so
	// hitting this means it is broken, not slow.
	readyTimeout = 60 * time.Second
	// stopGrace is how long a process gets after SIGTERM before SIGKILL.
	stopGrace = 15 * time.Second
	// logTailLines is how much of each log a failed test prints.
	logTailLines = 60
)

// Server is a running kube-apiserver with its etcd, owned by one test.
// All of it is torn down by the test's Cleanup.
type Server struct {
	// Config authenticates as a cluster admin (group system:masters).
	Config *rest.Config
	// Kubeconfig is the path of a kubeconfig file with the same admin
	// credentials, for tools (kubectl) and code that loads kubeconfigs.
	Kubeconfig string
	// URL is the API server's base URL, https://127.0.0.1:<port>.
	URL string

	binDir  string
	dir     string
	apiArgs []string
	tlsConf *tls.Config

	mu   sync.Mutex
	etcd *proc
	api  *proc
}

// Start starts etcd and kube-apiserver on free loopback ports and returns
// once the API server reports /readyz. When the binaries have not been
// built it fails the test as root and skips it otherwise; it fails the test
// when they do not come up.
func Start(t testing.TB) *Server {
	t.Helper()

	binDir, explicit, err := findBinDir()
	if err != nil {
		t.Fatalf("kubeapi: %v", err)
	}
	if err := haveBinaries(binDir); err != nil {
		if explicit {
			// An explicit VETHROUTE_K8S_BIN that lacks the binaries
			// is a broken setup, not a machine without them.
			t.Fatalf("kubeapi: VETHROUTE_K8S_BIN=%s: %v", binDir, err)
		}
		if os.Geteuid() == 0 {
			// make test runs as root and builds them first (k8s-bins):
			// a root run without them would pass without its agent tests.
			t.Fatalf("kubeapi: %v: run test/k8s/build.sh (make k8s-bins); looked in %s", err, binDir)
		}
		t.Skipf("kubeapi: %v and not root: run `make test` as root, or test/k8s/build.sh (make k8s-bins) first; looked in %s", err, binDir)
	}

	// The teardown is registered before any process starts, so it runs
	// (LIFO) before t.TempDir's removal and after everything the test
	// registers later.
	s, err := launch(binDir, t.TempDir(), func(s *Server) {
		t.Cleanup(func() { s.teardown(t) })
	})
	if err != nil {
		t.Fatalf("kubeapi: %v", err)
	}
	return s
}

// Launch is Start for programs that are not tests (benchmarks): it starts
// etcd and kube-apiserver with their state under dir, which must exist and
// which the caller removes after Close. On error nothing is left running.
func Launch(dir string) (*Server, error) {
	binDir, _, err := findBinDir()
	if err != nil {
		return nil, err
	}
	if err := haveBinaries(binDir); err != nil {
		return nil, fmt.Errorf("%w: run test/k8s/build.sh (make k8s-bins); looked in %s", err, binDir)
	}
	var started *Server
	s, err := launch(binDir, dir, func(s *Server) { started = s })
	if err != nil {
		started.Close()
		return nil, err
	}
	return s, nil
}

// Close stops kube-apiserver and etcd; it is safe to call more than once.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range []*proc{s.api, s.etcd} {
		if p != nil {
			p.stop()
		}
	}
}

// haveBinaries reports a missing kube-apiserver or etcd in binDir.
func haveBinaries(binDir string) error {
	for _, name := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(binDir, name)); err != nil {
			return fmt.Errorf("%s not built", name)
		}
	}
	return nil
}

// launch starts etcd and kube-apiserver with their state under dir. It hands
// the Server to registered before starting any process, so that the caller
// can arrange its teardown whatever happens next.
func launch(binDir, dir string, registered func(*Server)) (*Server, error) {
	s := &Server{binDir: binDir, dir: dir}
	registered(s)

	p, err := newPKI(dir)
	if err != nil {
		return nil, err
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peerURL := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	s.URL = "https://127.0.0.1:" + strconv.Itoa(ports[2])

	etcdArgs := []string{
		"--name=default",
		"--data-dir=" + filepath.Join(dir, "etcd-data"),
		"--listen-client-urls=" + etcdURL,
		"--advertise-client-urls=" + etcdURL,
		"--listen-peer-urls=" + peerURL,
		"--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=default=" + peerURL,
		// The data is thrown away with the test; fsync would only make
		// every write wait on the disk.
		"--unsafe-no-fsync=true",
	}
	s.mu.Lock()
	s.etcd, err = startProc("etcd", filepath.Join(binDir, "etcd"), etcdArgs, filepath.Join(dir, "etcd.log"))
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if err := waitReady(s.etcd, func(ctx context.Context) error {
		return httpOK(ctx, http.DefaultClient, etcdURL+"/health")
	}); err != nil {
		return nil, fmt.Errorf("etcd on %s: %w", etcdURL, err)
	}

	s.apiArgs = []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(ports[2]),
		// Only used if a serving cert were missing; keeps it from
		// defaulting to /var/run/kubernetes.
		"--cert-dir=" + filepath.Join(dir, "apiserver-certs"),
		"--tls-cert-file=" + p.servingCert,
		"--tls-private-key-file=" + p.servingKey,
		"--client-ca-file=" + p.caCert,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + p.saPub,
		"--service-account-signing-key-file=" + p.saKey,
		"--authorization-mode=Node,RBAC",
		// Only a string in the API server's config: it allocates Service
		// IPs from it in etcd, nothing is configured on the host.
		"--service-cluster-ip-range=10.96.0.0/16",
		// The reconciler would publish 127.0.0.1 as the kubernetes
		// Service endpoint, which Endpoints validation rejects, filling
		// the log with errors that hide real ones.
		"--endpoint-reconciler-type=none",
	}

	s.tlsConf = &tls.Config{
		RootCAs:      x509.NewCertPool(),
		Certificates: []tls.Certificate{p.adminPair},
		MinVersion:   tls.VersionTLS12,
	}
	s.tlsConf.RootCAs.AppendCertsFromPEM(p.caPEM)

	if err := s.startAPI(); err != nil {
		return nil, err
	}

	s.Config = &rest.Config{
		Host: s.URL,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   p.caPEM,
			CertData: p.adminCertPEM,
			KeyData:  p.adminKeyPEM,
		},
		// client-go's default 5 QPS throttles test setup for no benefit
		// against a server nobody else uses.
		QPS:   100,
		Burst: 200,
	}
	s.Kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := writeKubeconfig(s.Kubeconfig, s.URL, p); err != nil {
		return nil, err
	}
	return s, nil
}

// Stop stops kube-apiserver (SIGTERM, then SIGKILL after a grace period)
// and keeps etcd and its data, so a test can observe how clients behave
// while the API server is down. It is a no-op when already stopped.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.api != nil {
		s.api.stop()
	}
}

// Restart stops kube-apiserver if it is running and starts it again on the
// same port with the same certificates and etcd, so existing clients (and
// s.Config) stay valid; it returns once /readyz passes again.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	if err := s.startAPI(); err != nil {
		t.Fatalf("kubeapi: restart: %v", err)
	}
}

// startAPI starts kube-apiserver with s.apiArgs and waits for /readyz.
func (s *Server) startAPI() error {
	s.mu.Lock()
	api, err := startProc("kube-apiserver", filepath.Join(s.binDir, "kube-apiserver"), s.apiArgs, filepath.Join(s.dir, "kube-apiserver.log"))
	if err == nil {
		s.api = api
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: s.tlsConf}}
	defer client.CloseIdleConnections()
	if err := waitReady(api, func(ctx context.Context) error {
		return httpOK(ctx, client, s.URL+"/readyz")
	}); err != nil {
		return fmt.Errorf("kube-apiserver on %s: %w", s.URL, err)
	}
	return nil
}

// teardown stops both processes and, if the test failed, prints the end of
// their logs, which is usually where the reason is.
func (s *Server) teardown(t testing.TB) {
	s.Close()
	if !t.Failed() {
		return
	}
	for _, name := range []string{"etcd.log", "kube-apiserver.log"} {
		path := filepath.Join(s.dir, name)
		tail, err := tailFile(path, logTailLines)
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				t.Logf("kubeapi: reading %s: %v", path, err)
			}
			continue
		}
		t.Logf("kubeapi: last %d lines of %s:\n%s", logTailLines, name, tail)
	}
}

// proc is one child process, in its own process group.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd.Wait returns
	err  error         // cmd.Wait's result, valid after done
}

// startProc starts bin with args, appending its output to logPath (appended
// rather than truncated so a restart keeps the previous run's log).
func startProc(name, bin string, args []string, logPath string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s log: %w", name, err)
	}
	fmt.Fprintf(logf, "==== kubeapi: starting %s at %s\n", name, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(bin, args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own group, so stop can signal anything it spawned too.
		Setpgid: true,
		// If the test binary dies without running Cleanup (go test's
		// timeout panic, a SIGKILL), the kernel kills the child rather
		// than leaving it holding ports and the temp dir.
		Pdeathsig: syscall.SIGKILL,
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	err = testutil.StartTied(cmd, func(err error) {
		p.err = err
		logf.Close()
		close(p.done)
	})
	if err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return p, nil
}

// stop terminates the process group and waits for the process to exit.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	// Errors are ignored: ESRCH only means it already exited, and the
	// wait below is what guarantees it is gone.
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopGrace):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// waitReady polls check until it succeeds, the process exits, or
// readyTimeout passes.
func waitReady(p *proc, check func(ctx context.Context) error) error {
	deadline := time.Now().Add(readyTimeout)
	var last error
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		last = check(ctx)
		cancel()
		if last == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before becoming ready: %v (last check: %v)", p.name, p.err, last)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s: %w", p.name, readyTimeout, last)
		}
	}
}

// httpOK returns nil when GET url answers 200.
func httpOK(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, bytes.TrimSpace(body))
	}
	return nil
}

// freePorts returns n distinct free loopback TCP ports. All listeners are
// held until every port is chosen so the kernel cannot hand one out twice;
// another process could still take a port before our child binds it, which
// on a test machine is rare enough not to retry for.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// writeKubeconfig writes an admin kubeconfig for url with embedded
// credentials, so the file is usable on its own.
func writeKubeconfig(path, url string, p *pki) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kubeapi"] = &clientcmdapi.Cluster{Server: url, CertificateAuthorityData: p.caPEM}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: p.adminCertPEM, ClientKeyData: p.adminKeyPEM}
	cfg.Contexts["kubeapi"] = &clientcmdapi.Context{Cluster: "kubeapi", AuthInfo: "admin"}
	cfg.CurrentContext = "kubeapi"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return nil
}

// tailFile returns the last n lines of path.
func tailFile(path string, n int) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	// Only the end matters; an apiserver log can be megabytes.
	const window = 64 << 10
	if st, err := f.Stat(); err == nil && st.Size() > window {
		if _, err := f.Seek(-window, io.SeekEnd); err != nil {
			return "", fmt.Errorf("seek %s: %w", path, err)
		}
	}
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	return strings.Join(lines, "\n"), nil
}

// findBinDir returns the directory holding the binaries: $VETHROUTE_K8S_BIN
// (explicit=true) or build.sh's cache directory for the pinned versions.
func findBinDir() (dir string, explicit bool, err error) {
	if d := os.Getenv("VETHROUTE_K8S_BIN"); d != "" {
		return d, true, nil
	}
	v, err := readVersions()
	if err != nil {
		return "", false, err
	}
	cache := os.Getenv("VETHROUTE_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", false, fmt.Errorf("locate cache dir: %w", err)
		}
		cache = filepath.Join(home, ".cache", "vethroute")
	}
	// Must match build.sh's key: <K8S_VERSION>-etcd<ETCD_VERSION>.
	return filepath.Join(cache, "k8s", v["K8S_VERSION"]+"-etcd"+v["ETCD_VERSION"], "bin"), false, nil
}

// readVersions parses test/k8s/versions.env, the single place the pinned
// versions live, shared with build.sh.
func readVersions() (map[string]string, error) {
	path, err := versionsFile()
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read versions: %w", err)
	}
	v := map[string]string{}
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s:%d: want KEY=value, got %q", path, i+1, line)
		}
		v[key] = val
	}
	for _, key := range []string{"K8S_VERSION", "ETCD_VERSION"} {
		if v[key] == "" {
			return nil, fmt.Errorf("%s: %s not set", path, key)
		}
	}
	return v, nil
}

// versionsFile locates test/k8s/versions.env: next to this source file, or,
// when the source path is unknown (-trimpath), above the working directory,
// which go test sets to the package directory inside the repo.
func versionsFile() (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok {
		p := filepath.Join(filepath.Dir(file), "..", "versions.env")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("locate versions.env: %w", err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		p := filepath.Join(dir, "test", "k8s", "versions.env")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("locate versions.env: no test/k8s/versions.env above %s", wd)
		}
	}
}
