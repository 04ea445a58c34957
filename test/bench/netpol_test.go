package main

import (
	"os"
	"strings"
	"testing"
)

// TestMain lets the test binary stand in for the bench binary when the
// NetworkPolicy section re-executes itself for the engine's own process.
func TestMain(m *testing.M) {
	if os.Getenv(netpolChildEnv) != "" {
		if err := netpolChild(); err != nil {
			os.Stderr.WriteString("bench netpol child: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestKubeRouterRules checks the baseline's ruleset for a small state: an
// isolated local pod gets a firewall chain that runs its policies and
// rejects what none marked, and a policy's chain matches its peer sets.
func TestKubeRouterRules(t *testing.T) {
	st := netpolState(netpolSizes{Pods: 100, Local: 100, Policies: 1})
	sets, rules, nSets, nRules := kubeRouterRules(st)
	for _, want := range []string{
		"-A KUBE-ROUTER-FORWARD -d 10.128.0.1 -j KUBE-POD-FW-",
		"-A KUBE-POD-FW-0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
		"-j KUBE-NWPLCY-0\n",
		"-m mark ! --mark 0x10000/0x10000 -j REJECT",
		"-A KUBE-NWPLCY-0 -m set --match-set KR-SRC-0-0 src -m set --match-set KR-TGT-0 dst -p tcp --dport 8080 -j MARK",
		"-p udp --dport 5353:5360",
		"-A KUBE-ROUTER-FORWARD -s 10.128.0.1 -j KUBE-POD-FW-", // policy 0 has egress rules
	} {
		if !strings.Contains(rules, want) {
			t.Errorf("rules lack %q:\n%s", want, rules)
		}
	}
	for _, want := range []string{"add KR-CIDR-0-0 10.0.0.0/8 -exist", "add KR-CIDR-0-0 10.128.0.0/24 nomatch -exist", "add KR-TGT-0 10.128.0.1 -exist"} {
		if !strings.Contains(sets, want) {
			t.Errorf("ipsets lack %q:\n%s", want, sets)
		}
	}
	// Policy 0 selects app a-0 in ns-0: of pods 0..99 (app a-<i%50>, ns-<i%20>) only pod 0.
	if strings.Contains(sets, "add KR-TGT-0 10.128.0.2 ") || nSets != 3 || nRules == 0 {
		t.Errorf("%d sets, %d rules:\n%s", nSets, nRules, sets)
	}
}
