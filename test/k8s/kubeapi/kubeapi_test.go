//go:build linux

package kubeapi

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// TestNodePodCIDRsSurviveRestart is the project's use in miniature: a
// Node's spec.podCIDRs written through client-go is read back, and read
// again by the same client after the API server has restarted.
func TestNodePodCIDRsSurviveRestart(t *testing.T) {
	s := Start(t)
	ctx := t.Context()

	cs, err := kubernetes.NewForConfig(s.Config)
	if err != nil {
		t.Fatalf("clientset: %v", err)
	}

	// The build's ldflags reached the binary: without them it reports
	// v0.0.0-master, which breaks version-gated client code.
	info, err := cs.Discovery().ServerVersion()
	if err != nil {
		t.Fatalf("server version: %v", err)
	}
	if os.Getenv("VETHROUTE_K8S_BIN") == "" {
		v, err := readVersions()
		if err != nil {
			t.Fatal(err)
		}
		if info.GitVersion != v["K8S_VERSION"] {
			t.Errorf("server gitVersion = %q, want %q (versions.env)", info.GitVersion, v["K8S_VERSION"])
		}
	} else if strings.HasPrefix(info.GitVersion, "v0.0.0") {
		t.Errorf("server gitVersion = %q: built without version ldflags", info.GitVersion)
	}

	cidrs := []string{"10.244.1.0/24", "fd00:10:244:1::/64"}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "vethroute-test-node"},
		// Validation requires podCIDR to equal podCIDRs[0] when both are set.
		Spec: corev1.NodeSpec{PodCIDR: cidrs[0], PodCIDRs: cidrs},
	}
	if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create node: %v", err)
	}

	check := func(when string) {
		t.Helper()
		got, err := cs.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("%s: get node: %v", when, err)
		}
		if !slices.Equal(got.Spec.PodCIDRs, cidrs) || got.Spec.PodCIDR != cidrs[0] {
			t.Fatalf("%s: node podCIDR=%q podCIDRs=%q, want %q", when, got.Spec.PodCIDR, got.Spec.PodCIDRs, cidrs)
		}
	}
	check("after create")

	// While stopped the server must really be gone, or the restart below
	// proves nothing about client recovery.
	s.Stop()
	downCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err = cs.CoreV1().Nodes().Get(downCtx, node.Name, metav1.GetOptions{})
	cancel()
	if err == nil {
		t.Fatal("get node succeeded while kube-apiserver was stopped")
	}

	s.Restart(t)
	check("after restart")

	// The kubeconfig file must work on its own, for tools and for code
	// that loads kubeconfigs rather than taking a rest.Config.
	cfg, err := clientcmd.BuildConfigFromFlags("", s.Kubeconfig)
	if err != nil {
		t.Fatalf("load kubeconfig: %v", err)
	}
	cs2, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("clientset from kubeconfig: %v", err)
	}
	if _, err := cs2.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{}); err != nil {
		t.Fatalf("get node via kubeconfig: %v", err)
	}

	// kubectl is built alongside; exercise it with the same kubeconfig when
	// present so a broken kubectl build is noticed here, not in an e2e.
	kubectl := filepath.Join(s.binDir, "kubectl")
	if _, err := os.Stat(kubectl); err == nil {
		out, err := exec.CommandContext(ctx, kubectl, "--kubeconfig", s.Kubeconfig,
			"get", "node", node.Name, "-o", "jsonpath={.spec.podCIDRs}").CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl get node: %v\n%s", err, out)
		}
		if want := `["10.244.1.0/24","fd00:10:244:1::/64"]`; string(out) != want {
			t.Errorf("kubectl podCIDRs = %s, want %s", out, want)
		}
	}
}
