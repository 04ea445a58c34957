package main

import (
	"encoding/json"
	"strings"
	"testing"
)

const containerdSample = `# HELP containerd_cri_network_plugin_operations_duration_seconds_seconds latency
# TYPE containerd_cri_network_plugin_operations_duration_seconds_seconds histogram
containerd_cri_network_plugin_operations_duration_seconds_seconds_bucket{operation_type="set_up_pod",le="0.005"} 1
containerd_cri_network_plugin_operations_duration_seconds_seconds_sum{operation_type="set_up_pod"} 1.5
containerd_cri_network_plugin_operations_duration_seconds_seconds_count{operation_type="set_up_pod"} 30
containerd_cri_network_plugin_operations_duration_seconds_seconds_sum{operation_type="tear_down_pod"} 0.25 1700000000000
containerd_cri_network_plugin_operations_duration_seconds_seconds_count{operation_type="tear_down_pod"} 10
kubelet_pod_start_duration_seconds_sum 12
kubelet_pod_start_duration_seconds_count 4
kubelet_runtime_operations_duration_seconds_sum{operation_type="run_podsandbox"} 1
kubelet_runtime_operations_duration_seconds_count{operation_type="run_podsandbox"} 2
kubelet_runtime_operations_duration_seconds_sum{operation_type="list_podsandbox"} 3
kubelet_runtime_operations_duration_seconds_count{operation_type="list_podsandbox"} 2
`

func TestScrapeHistogram(t *testing.T) {
	name := findMetric(containerdSample, cniMetric)
	if name != "containerd_cri_network_plugin_operations_duration_seconds_seconds" {
		t.Fatalf("findMetric = %q", name)
	}
	for _, tc := range []struct {
		name, metric string
		labels       []string
		want         histogram
		found        bool
	}{
		{"set up", name, []string{cniSetup}, histogram{1.5, 30}, true},
		{"tear down, with a timestamp", name, []string{cniTeardown}, histogram{0.25, 10}, true},
		{"no labels", podStart, nil, histogram{12, 4}, true},
		{"series added up", runtimeOps, nil, histogram{4, 4}, true},
		{"one operation", runtimeOps, []string{runSandbox}, histogram{1, 2}, true},
		{"absent", "containerd_nothing", nil, histogram{}, false},
		{"label absent", name, []string{`="get_pod_network_status"`}, histogram{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, found, err := scrapeHistogram(containerdSample, tc.metric, tc.labels...)
			if err != nil {
				t.Fatal(err)
			}
			if h != tc.want || found != tc.found {
				t.Fatalf("got %+v found=%v, want %+v found=%v", h, found, tc.want, tc.found)
			}
		})
	}
	if _, _, err := scrapeHistogram("kubelet_pod_start_duration_seconds_sum x\n", podStart); err == nil {
		t.Fatal("a value that is not a number went unnoticed")
	}
}

func TestReferenceConfList(t *testing.T) {
	agent := `{"cniVersion":"1.0.0","name":"vethroute","plugins":[{"type":"vethroute","mtu":1450,"ipam":{"type":"vethroute"}},{"type":"portmap","capabilities":{"portMappings":true}}]}`
	out, err := referenceConfList(agent, "10.244.1.0/24")
	if err != nil {
		t.Fatal(err)
	}
	var l struct {
		CNIVersion string           `json:"cniVersion"`
		Name       string           `json:"name"`
		Plugins    []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(out, &l); err != nil {
		t.Fatal(err)
	}
	if l.CNIVersion != "1.0.0" || l.Name != "vethroute" || len(l.Plugins) != 2 {
		t.Fatalf("list changed beyond its first plugin: %s", out)
	}
	p := l.Plugins[0]
	ipam, _ := p["ipam"].(map[string]any)
	if p["type"] != "ptp" || p["mtu"] != float64(1450) || ipam["type"] != "host-local" || !strings.Contains(string(out), `"subnet": "10.244.1.0/24"`) {
		t.Fatalf("first plugin is not ptp + host-local over the pod CIDR with the MTU: %s", out)
	}
	if l.Plugins[1]["type"] != "portmap" {
		t.Fatalf("chained plugin lost: %s", out)
	}
	for _, bad := range []string{`{`, `{"plugins":[]}`, `{"plugins":[{"type":"bridge"}]}`} {
		if _, err := referenceConfList(bad, "10.244.1.0/24"); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}

func TestTarget(t *testing.T) {
	round := func(cni, start float64) roundResult {
		return roundResult{cniAdd: histogram{cni * 110, 110}, start: histogram{start * 110, 110}, cniFound: true}
	}
	for _, tc := range []struct {
		name          string
		veth, ptp     roundResult
		met, measured bool
	}{
		{"half the time", round(0.01, 1), round(0.02, 1), true, true},
		{"more than half", round(0.011, 1), round(0.02, 1), false, true},
		// A smaller fraction of a longer pod start is still more time.
		{"more time, smaller fraction", round(0.011, 3), round(0.02, 1), false, true},
		{"no containerd timings", roundResult{start: histogram{110, 110}}, round(0.02, 1), false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &report{pods: 110, rounds: 1}
			r.add(nameVeth, tc.veth)
			r.add(namePtp, tc.ptp)
			_, met, ok := r.target()
			if met != tc.met || ok != tc.measured {
				t.Fatalf("met=%v measured=%v, want %v %v", met, ok, tc.met, tc.measured)
			}
			if md := r.markdown(); !strings.HasPrefix(md, "## Pod density") {
				t.Fatalf("section does not start with its heading:\n%s", md)
			}
		})
	}
}
