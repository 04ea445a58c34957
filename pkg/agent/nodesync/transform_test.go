package nodesync

import (
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
)

// fullNode is a Node as a kubelet and the control plane leave it.
func fullNode() *corev1.Node {
	return &corev1.Node{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Node"},
		ObjectMeta: metav1.ObjectMeta{
			Name: "node-a", UID: "uid-a", ResourceVersion: "42", Generation: 3,
			Labels:        map[string]string{"kubernetes.io/hostname": "node-a"},
			Annotations:   map[string]string{"node.alpha.kubernetes.io/ttl": "0"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubelet", Operation: metav1.ManagedFieldsOperationUpdate}},
			Finalizers:    []string{"example.com/keep"},
		},
		Spec: corev1.NodeSpec{
			PodCIDR: "10.0.1.0/24", PodCIDRs: []string{"10.0.1.0/24", "fd00:10:0:1::/64"},
			ProviderID: "aws:///zone/i-1", Taints: []corev1.Taint{{Key: "k", Effect: corev1.TaintEffectNoSchedule}},
		},
		Status: corev1.NodeStatus{
			Capacity:   corev1.ResourceList{"cpu": resource.MustParse("8")},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: "172.16.0.2"},
				{Type: corev1.NodeInternalIP, Address: "fd00:172:16::2"},
				{Type: corev1.NodeExternalIP, Address: "203.0.113.2"},
				{Type: corev1.NodeHostName, Address: "node-a"},
				{Type: corev1.NodeInternalDNS, Address: "node-a.internal"},
			},
			Images:   []corev1.ContainerImage{{Names: []string{"registry.example/app:v1"}, SizeBytes: 1 << 20}},
			NodeInfo: corev1.NodeSystemInfo{KubeletVersion: "v1.34.1", ContainerRuntimeVersion: "containerd://2.3.7"},
		},
	}
}

func TestStripNodeKeepsWhatTheControllerReads(t *testing.T) {
	got, err := StripNode(fullNode())
	if err != nil {
		t.Fatal(err)
	}
	want := &corev1.Node{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Node"},
		ObjectMeta: metav1.ObjectMeta{Name: "node-a", UID: "uid-a", ResourceVersion: "42"},
		Spec:       corev1.NodeSpec{PodCIDR: "10.0.1.0/24", PodCIDRs: []string{"10.0.1.0/24", "fd00:10:0:1::/64"}},
		Status: corev1.NodeStatus{
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: "172.16.0.2"},
				{Type: corev1.NodeInternalIP, Address: "fd00:172:16::2"},
				{Type: corev1.NodeExternalIP, Address: "203.0.113.2"},
			},
			NodeInfo: corev1.NodeSystemInfo{ContainerRuntimeVersion: "containerd://2.3.7"},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("StripNode =\n%+v\nwant\n%+v", got, want)
	}
	// What the controller derives from a Node is the same either way.
	full, stripped := fullNode(), got.(*corev1.Node)
	if relevantChange(full, stripped) {
		t.Error("the stripped Node differs from the full one in what the controller reads")
	}
	if a, b := nodeAddrs(full), nodeAddrs(stripped); !reflect.DeepEqual(a, b) {
		t.Errorf("node addresses: full %v, stripped %v", a, b)
	}
}

func TestStripNodeOtherObjects(t *testing.T) {
	tomb := cache.DeletedFinalStateUnknown{Key: "node-a", Obj: fullNode()}
	got, err := StripNode(tomb)
	if err != nil {
		t.Fatal(err)
	}
	gt, ok := got.(cache.DeletedFinalStateUnknown)
	if !ok || gt.Key != "node-a" {
		t.Fatalf("StripNode(tombstone) = %#v", got)
	}
	if n := gt.Obj.(*corev1.Node); n.Labels != nil || n.Status.Images != nil || n.Name != "node-a" {
		t.Errorf("tombstone's Node not stripped: %+v", n)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Labels: map[string]string{"a": "b"}}}
	if got, err := StripNode(pod); err != nil || got != pod {
		t.Errorf("StripNode(pod) = %v, %v; want it unchanged", got, err)
	}
	if got, err := StripNode(nil); err != nil || got != nil {
		t.Errorf("StripNode(nil) = %v, %v", got, err)
	}
}

// A Node written by someone hostile: huge fields the controller never reads
// are dropped whole, and address entries that are no IP are dropped.
func TestStripNodeHostile(t *testing.T) {
	n := fullNode()
	huge := strings.Repeat("x", 1<<20)
	n.Annotations["huge"] = huge
	n.Labels["l"] = huge[:63]
	for i := range 10000 {
		n.Status.Images = append(n.Status.Images, corev1.ContainerImage{Names: []string{huge[:200]}, SizeBytes: int64(i)})
		n.Status.Conditions = append(n.Status.Conditions, corev1.NodeCondition{Type: "X", Message: huge[:100]})
	}
	n.Status.Addresses = append(n.Status.Addresses,
		corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: huge},
		corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "not-an-ip"},
		corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ""},
	)
	got, err := StripNode(n)
	if err != nil {
		t.Fatal(err)
	}
	s := got.(*corev1.Node)
	if len(s.Annotations) != 0 || len(s.Labels) != 0 || len(s.Status.Images) != 0 || len(s.Status.Conditions) != 0 || len(s.ManagedFields) != 0 {
		t.Errorf("hostile fields kept: %d annotations, %d labels, %d images, %d conditions", len(s.Annotations), len(s.Labels), len(s.Status.Images), len(s.Status.Conditions))
	}
	if len(s.Status.Addresses) != 3 {
		t.Errorf("addresses = %v, want the three IPs", s.Status.Addresses)
	}
	// The input is not modified: another consumer may hold it.
	if len(n.Status.Images) != 10001 || n.Annotations["huge"] != huge {
		t.Error("StripNode modified its input")
	}
}
