package kindcluster

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKindConfig(t *testing.T) {
	tests := []struct {
		name    string
		family  Family
		workers int
		coredns bool
		want    []string
		notWant []string
	}{
		{
			name: "dual, two workers", family: Dual, workers: 2, coredns: true,
			want: []string{"ipFamily: dual\n", "podSubnet: 10.244.0.0/16,fd00:10:244::/56\n",
				"serviceSubnet: 10.96.0.0/16,fd00:10:96::/112\n", "disableDefaultCNI: true\n",
				"kubeProxyMode: nftables\n", "skipPhases: [preflight]\n"},
		},
		{
			name: "ipv4, no CoreDNS in the image", family: IPv4, workers: 1, coredns: false,
			want:    []string{"ipFamily: ipv4\n", "podSubnet: 10.244.0.0/16\n", "serviceSubnet: 10.96.0.0/16\n", "skipPhases: [preflight, addon/coredns]\n"},
			notWant: []string{"fd00:"},
		},
		{
			name: "ipv6, control plane only", family: IPv6, workers: 0, coredns: true,
			want:    []string{"ipFamily: ipv6\n", "podSubnet: fd00:10:244::/56\n", "serviceSubnet: fd00:10:96::/112\n"},
			notWant: []string{"10.244.", "role: worker"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := kindConfig(tc.family, tc.workers, tc.coredns)
			for _, w := range tc.want {
				if !strings.Contains(cfg, w) {
					t.Errorf("config lacks %q:\n%s", w, cfg)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(cfg, w) {
					t.Errorf("config has %q:\n%s", w, cfg)
				}
			}
			if got := strings.Count(cfg, "role: control-plane"); got != 1 {
				t.Errorf("%d control planes, want 1:\n%s", got, cfg)
			}
			if got := strings.Count(cfg, "role: worker"); got != tc.workers {
				t.Errorf("%d workers, want %d:\n%s", got, tc.workers, cfg)
			}
		})
	}
}

// TestManifest rewrites the real deploy/daemonset.yaml.
func TestManifest(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "deploy", "daemonset.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		family Family
		cidrs  string
	}{
		{Dual, "--cluster-cidrs=10.244.0.0/16,fd00:10:244::/56\n"},
		{IPv4, "--cluster-cidrs=10.244.0.0/16\n"},
		{IPv6, "--cluster-cidrs=fd00:10:244::/56\n"},
	}
	for _, tc := range tests {
		t.Run(string(tc.family), func(t *testing.T) {
			got, err := manifest(raw, "vethroute:kind", tc.family.PodSubnets())
			if err != nil {
				t.Fatal(err)
			}
			s := string(got)
			if strings.Contains(s, "vethroute:dev") {
				t.Errorf("image vethroute:dev left in the manifest")
			}
			if n, want := strings.Count(s, "image: vethroute:kind\n"), strings.Count(string(raw), "image: vethroute:dev\n"); n != want || n == 0 {
				t.Errorf("%d images replaced, want %d", n, want)
			}
			if strings.Count(s, "--cluster-cidrs=") != 1 || !strings.Contains(s, tc.cidrs) {
				t.Errorf("want exactly one %q in\n%s", tc.cidrs, s)
			}
			if strings.Count(s, "\n") != strings.Count(string(raw), "\n") {
				t.Errorf("rewrite changed the line count: %d -> %d", strings.Count(string(raw), "\n"), strings.Count(s, "\n"))
			}
		})
	}
	t.Run("DaemonSet without the argument", func(t *testing.T) {
		broken := strings.Replace(string(raw), "--cluster-cidrs=", "--cluster-cidr=", 1)
		if _, err := manifest([]byte(broken), "x", Dual.PodSubnets()); err == nil {
			t.Error("a DaemonSet without --cluster-cidrs= was accepted")
		}
	})
	t.Run("RBAC passes through", func(t *testing.T) {
		rbac, err := os.ReadFile(filepath.Join("..", "..", "deploy", "rbac.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		got, err := manifest(rbac, "x", Dual.PodSubnets())
		if err != nil || string(got) != string(rbac) {
			t.Errorf("rbac.yaml changed (err %v)", err)
		}
	})
}

func TestParseFamily(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Family
		ok   bool
	}{
		{"dual", Dual, true}, {"IPv4", IPv4, true}, {"ipv6", IPv6, true}, {"v4", "", false}, {"", "", false},
	} {
		got, err := ParseFamily(tc.in)
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("ParseFamily(%q) = %q, %v; want %q, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestCapsMissing(t *testing.T) {
	all := uint64(1)<<41 - 1
	tests := []struct {
		name string
		bnd  uint64
		last int
		want string
	}{
		{"everything granted", all, 40, ""},
		{"this machine: no CAP_SYS_RESOURCE", 0x000001fffeffffff, 40, "SYS_RESOURCE"},
		{"older kernel knows fewer", all &^ (1 << 24) &^ (1 << 40), 37, "SYS_RESOURCE"},
		{"two withheld", all &^ (1 << 24) &^ (1 << 25), 40, "SYS_RESOURCE SYS_TIME"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := capsMissing(tc.bnd, tc.last); got != tc.want {
				t.Errorf("capsMissing(%#x, %d) = %q, want %q", tc.bnd, tc.last, got, tc.want)
			}
		})
	}
}

func TestAnswers(t *testing.T) {
	const ok = "Server:\t\t10.96.0.10\nAddress:\t10.96.0.10:53\n\nName:\tkubernetes.default.svc.cluster.local\nAddress: 10.96.0.1\n"
	const failed = "Server:\t\t10.96.0.10\nAddress:\t10.96.0.10:53\n\n** server can't find kubernetes.default.svc.cluster.local: NXDOMAIN\n"
	const ok6 = "Server:\t\tfd00:10:96::a\nAddress:\t[fd00:10:96::a]:53\n\nName:\tkubernetes.default.svc.cluster.local\nAddress: fd00:10:96::1\n"
	tests := []struct {
		name, out, ip string
		want          bool
	}{
		{"answered", ok, "10.96.0.1", true},
		{"only the server's address", failed, "10.96.0.1", false},
		{"timed out", ";; connection timed out; no servers could be reached\n", "10.96.0.1", false},
		{"IPv6 answered", ok6, IPv6.KubernetesVIP(), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Answers(tc.out, tc.ip); got != tc.want {
				t.Errorf("Answers(%q, %s) = %v, want %v", tc.out, tc.ip, got, tc.want)
			}
		})
	}
}

// TestExtraConfig checks that the kubelet patch continues kindConfig's
// kubeadmConfigPatches list and the containerd patches form their own list.
func TestExtraConfig(t *testing.T) {
	for _, tc := range []struct {
		name       string
		maxPods    int
		containerd []string
		want       string
	}{
		{"nothing", 0, nil, ""},
		{"maxPods", 120, nil, "  - |\n    kind: KubeletConfiguration\n    maxPods: 120\n"},
		{"both", 120, []string{"[metrics]\n  address = \"127.0.0.1:1338\"\n"},
			"  - |\n    kind: KubeletConfiguration\n    maxPods: 120\ncontainerdConfigPatches:\n  - |-\n    [metrics]\n      address = \"127.0.0.1:1338\"\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := extraConfig(tc.maxPods, tc.containerd)
			if got != tc.want {
				t.Fatalf("extraConfig = %q, want %q", got, tc.want)
			}
			if cfg := kindConfig(IPv4, 1, true); !strings.HasSuffix(cfg, "skipPhases: [preflight]\n") {
				t.Fatalf("kindConfig no longer ends with its kubeadmConfigPatches item, which extraConfig continues:\n%s", cfg)
			}
		})
	}
}
