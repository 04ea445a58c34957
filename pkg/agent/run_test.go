package agent

import (
	"testing"

	clientfeatures "k8s.io/client-go/features"
)

type offGates struct{}

func (offGates) Enabled(clientfeatures.Feature) bool { return false }

func TestWatchListGates(t *testing.T) {
	g := watchListGates{offGates{}}
	if !g.Enabled(clientfeatures.WatchListClient) {
		t.Error("WatchListClient is off")
	}
	if g.Enabled(clientfeatures.InformerResourceVersion) {
		t.Error("a gate other than WatchListClient was turned on")
	}
}

// An operator's KUBE_FEATURE_WatchListClient decides: the gates are left
// as client-go reads them from the environment.
func TestStreamInitialListLeavesExplicitSetting(t *testing.T) {
	before := clientfeatures.FeatureGates()
	streamInitialList(func(k string) string {
		if k == "KUBE_FEATURE_WatchListClient" {
			return "false"
		}
		return ""
	})
	if _, wrapped := clientfeatures.FeatureGates().(watchListGates); wrapped || clientfeatures.FeatureGates() != before {
		t.Error("the gates were replaced although KUBE_FEATURE_WatchListClient is set")
	}
}
