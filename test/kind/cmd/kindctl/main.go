// Command kindctl brings up and removes a kind cluster with vethroute as its
// only CNI, for `make kind-up` and `make kind-down` (root, Docker).
//
//	kindctl up   -kind BIN -node-image IMG -probe-archive TAR -image IMG [-name N] [-workers 2] [-family dual]
//	kindctl down -kind BIN [-name N]
//
// up prints the kubeconfig path it wrote (~/.kube/vethroute-<name>.yaml
// unless -kubeconfig says otherwise); down removes the cluster, its Docker
// network and that file.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/vethroute/vethroute/internal/kindcluster"
	"github.com/vethroute/vethroute/internal/testutil"
)

func main() {
	if len(os.Args) < 2 || (os.Args[1] != "up" && os.Args[1] != "down") {
		fmt.Fprintln(os.Stderr, "usage: kindctl up|down [flags] (-h for the flags)")
		os.Exit(2)
	}
	verb := os.Args[1]
	fs := flag.NewFlagSet("kindctl "+verb, flag.ExitOnError)
	var o kindcluster.Options
	var family, kubeconfig, kubectl string
	fs.StringVar(&o.Name, "name", "vethroute", "kind cluster name (also its Docker network's)")
	fs.IntVar(&o.Workers, "workers", 2, "worker nodes besides the control plane")
	fs.StringVar(&family, "family", "dual", "IP family: ipv4, ipv6 or dual")
	fs.StringVar(&o.Kind, "kind", "", "the kind CLI (test/kind/build.sh's KIND_BIN)")
	fs.StringVar(&o.NodeImage, "node-image", "", "kind node image (KIND_NODE_IMAGE)")
	fs.StringVar(&o.ProbeArchive, "probe-archive", "", "probe image archive (KIND_PROBE_ARCHIVE)")
	fs.StringVar(&o.PluginImage, "image", "", "vethroute image in the local Docker (deploy/build-image.sh)")
	fs.StringVar(&kubeconfig, "kubeconfig", "", "where to write the cluster's kubeconfig (default ~/.kube/vethroute-<name>.yaml)")
	fs.StringVar(&kubectl, "kubectl", "kubectl", "kubectl to suggest in the closing line")
	_ = fs.Parse(os.Args[2:])

	f, err := kindcluster.ParseFamily(family)
	if err != nil {
		fail(err)
	}
	o.Family = f
	if kubeconfig == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			fail(fmt.Errorf("home directory: %w (set -kubeconfig)", err))
		}
		kubeconfig = filepath.Join(home, ".kube", "vethroute-"+o.Name+".yaml")
	}
	// kind merges the cluster into this file rather than the user's
	// ~/.kube/config, and removes it from there on delete.
	o.Kubeconfig = kubeconfig
	if o.RepoRoot, err = testutil.FindRepoRoot(); err != nil {
		fail(err)
	}
	o.Logf = func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "kindctl: "+format+"\n", args...)
	}
	if o.Kind == "" {
		fail(errors.New("-kind must name the kind CLI (make kind-up / kind-down set it)"))
	}
	c, err := kindcluster.New(o)
	if err != nil {
		fail(err)
	}
	if verb == "down" {
		if err := down(c); err != nil {
			fail(err)
		}
		return
	}
	if err := up(c, kubectl); err != nil {
		fail(err)
	}
}

func up(c *kindcluster.Cluster, kubectl string) (err error) {
	if c.NodeImage == "" || c.ProbeArchive == "" || c.PluginImage == "" {
		return errors.New("up needs -node-image, -probe-archive and -image (make kind-up sets them)")
	}
	exists, err := c.Exists()
	if err != nil {
		return err
	}
	if exists {
		return fmt.Errorf("kind cluster %s already exists: `make kind-down KIND_CLUSTER_NAME=%s` first, or choose another KIND_CLUSTER_NAME", c.Name, c.Name)
	}
	start := time.Now()
	defer func() {
		if err == nil {
			return
		}
		logs := filepath.Join(os.TempDir(), fmt.Sprintf("vethroute-kind-logs-%s-%d", c.Name, time.Now().Unix()))
		if lerr := c.ExportLogs(logs); lerr != nil {
			c.Logf("%v", lerr)
		} else {
			c.Logf("node logs are in %s", logs)
		}
		if derr := down(c); derr != nil {
			c.Logf("removing the failed cluster: %v", derr)
		}
	}()
	if err := c.Up(); err != nil {
		return err
	}
	if err := c.WriteKubeconfig(c.Kubeconfig); err != nil {
		return err
	}
	family := map[kindcluster.Family]string{kindcluster.IPv4: "IPv4", kindcluster.IPv6: "IPv6", kindcluster.Dual: "dual-stack"}[c.Family]
	workers := fmt.Sprintf("%d workers", c.Workers)
	if c.Workers == 1 {
		workers = "1 worker"
	}
	fmt.Printf("kind cluster %s is up in %s: 1 control plane, %s, %s, vethroute as its only CNI\n",
		c.Name, time.Since(start).Round(time.Second), workers, family)
	fmt.Printf("kubeconfig: %s\n", c.Kubeconfig)
	fmt.Printf("try:        KUBECONFIG=%s %s get nodes -o wide\n", c.Kubeconfig, kubectl)
	fmt.Printf("remove it:  make kind-down KIND_CLUSTER_NAME=%s\n", c.Name)
	return nil
}

func down(c *kindcluster.Cluster) error {
	if err := c.Delete(); err != nil {
		return err
	}
	if err := os.Remove(c.Kubeconfig); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("kubeconfig remove: %w", err)
	}
	c.Logf("kind cluster %s, its Docker network and %s are gone", c.Name, c.Kubeconfig)
	return nil
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "kindctl: %v\n", err)
	os.Exit(1)
}
