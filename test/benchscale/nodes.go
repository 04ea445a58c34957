package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// The simulated cluster's addressing: node i has InternalIPs uplinkV4+i+1
// and uplinkV6+i+1 on the uplink subnets (node 0, the agent's, holds the
// first on its uplink), and pod CIDRs 10.<i/256>.<i%256>.0/24 and
// fd00:10:0:<i>::/64 inside the cluster CIDRs.
var (
	uplinkV4     = netip.MustParsePrefix("172.20.0.0/16")
	uplinkV6     = netip.MustParsePrefix("fd00:172:20::/64")
	clusterCIDRs = "10.0.0.0/8,fd00:10::/48"
)

// maxNodes is how many nodes the addressing holds (the /16 uplink and the
// /8 of /24 pod CIDRs).
const maxNodes = 65000

func nodeName(i int) string { return fmt.Sprintf("node-%05d", i) }

func internalIPs(i int) (netip.Addr, netip.Addr) {
	v4 := uplinkV4.Addr().As4()
	n := uint32(v4[0])<<24 | uint32(v4[1])<<16 | uint32(v4[2])<<8 | uint32(v4[3])
	n += uint32(i + 1)
	a4 := netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
	v6 := uplinkV6.Addr().As16()
	v6[14], v6[15] = byte((i+1)>>8), byte(i+1)
	return a4, netip.AddrFrom16(v6)
}

func podCIDRs(i int) (netip.Prefix, netip.Prefix) {
	p4 := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)
	b := [16]byte{0xfd, 0x00, 0x00, 0x10, 0, 0, byte(i >> 8), byte(i)}
	return p4, netip.PrefixFrom(netip.AddrFrom16(b), 64)
}

func digest(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// nodeMeta is what a kubelet registers (metadata and spec); withCIDRs adds
// the pod CIDRs the node IPAM controller would assign.
func nodeMeta(i int, withCIDRs bool) *corev1.Node {
	name := nodeName(i)
	zone := fmt.Sprintf("zone-%c", 'a'+i%3)
	n := corev1.Node{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Node"},
		ObjectMeta: metav1.ObjectMeta{
			Name: name,
			Labels: map[string]string{
				"beta.kubernetes.io/arch":                "amd64",
				"beta.kubernetes.io/os":                  "linux",
				"kubernetes.io/arch":                     "amd64",
				"kubernetes.io/os":                       "linux",
				"kubernetes.io/hostname":                 name,
				"node.kubernetes.io/instance-type":       "m6i.2xlarge",
				"topology.kubernetes.io/region":          "region-1",
				"topology.kubernetes.io/zone":            zone,
				"failure-domain.beta.kubernetes.io/zone": zone,
				"node-role.kubernetes.io/worker":         "",
				"pool.example.com/name":                  fmt.Sprintf("pool-%d", i%7),
			},
			Annotations: map[string]string{
				"kubeadm.alpha.kubernetes.io/cri-socket":                 "unix:///run/containerd/containerd.sock",
				"node.alpha.kubernetes.io/ttl":                           "0",
				"volumes.kubernetes.io/controller-managed-attach-detach": "true",
				"csi.volume.kubernetes.io/nodeid":                        fmt.Sprintf(`{"ebs.csi.aws.com":"i-%017x"}`, i),
			},
		},
		Spec: corev1.NodeSpec{ProviderID: fmt.Sprintf("aws:///region-1%c/i-%017x", 'a'+i%3, i)},
	}
	if withCIDRs {
		p4, p6 := podCIDRs(i)
		n.Spec.PodCIDR = p4.String()
		n.Spec.PodCIDRs = []string{p4.String(), p6.String()}
	}
	return &n
}

// nodeStatus is a kubelet's status of node i, as a merge patch of the
// status subresource: addresses, capacity, the usual conditions, the
// node info and a typical list of 50 images.
func nodeStatus(i int) ([]byte, error) {
	name := nodeName(i)
	v4, v6 := internalIPs(i)
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, LastHeartbeatTime: now, LastTransitionTime: now, Reason: reason, Message: msg}
	}
	q := resource.MustParse
	res := corev1.ResourceList{
		"cpu": q("8"), "memory": q("32386544Ki"), "pods": q("110"), "ephemeral-storage": q("101430960Ki"),
		"hugepages-1Gi": q("0"), "hugepages-2Mi": q("0"), "attachable-volumes-aws-ebs": q("25"),
	}
	alloc := res.DeepCopy()
	alloc["cpu"], alloc["memory"], alloc["ephemeral-storage"] = q("7910m"), q("31371760Ki"), q("93478772582")
	var images []corev1.ContainerImage
	for k := range 50 {
		repo := fmt.Sprintf("registry.example.com/team-%02d/service-%02d", k%12, k)
		if k%5 == 0 {
			repo = fmt.Sprintf("registry.k8s.io/component-%02d", k)
		}
		tag := fmt.Sprintf("v1.%d.%d", k, i%4)
		images = append(images, corev1.ContainerImage{
			Names:     []string{repo + "@sha256:" + digest(repo+tag), repo + ":" + tag},
			SizeBytes: int64(20_000_000 + (k*7919+i)%50*9_000_000),
		})
	}
	n := corev1.Node{
		Status: corev1.NodeStatus{
			Capacity:    res,
			Allocatable: alloc,
			Conditions: []corev1.NodeCondition{
				cond(corev1.NodeNetworkUnavailable, corev1.ConditionFalse, "RouteCreated", "RouteController created a route"),
				cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
				cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
				cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
				cond(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "kubelet is posting ready status"),
			},
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: v4.String()},
				{Type: corev1.NodeInternalIP, Address: v6.String()},
				{Type: corev1.NodeHostName, Address: name},
			},
			DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: 10250}},
			NodeInfo: corev1.NodeSystemInfo{
				MachineID: digest(name)[:32], SystemUUID: digest("uuid" + name)[:32], BootID: digest("boot" + name)[:32],
				KernelVersion: "6.1.0-28-cloud-amd64", OSImage: "Debian GNU/Linux 12 (bookworm)",
				ContainerRuntimeVersion: "containerd://2.1.4", KubeletVersion: "v1.34.1", KubeProxyVersion: "v1.34.1",
				OperatingSystem: "linux", Architecture: "amd64",
			},
			Images: images,
		},
	}
	return json.Marshal(n)
}

// apply registers node i as a kubelet does: it creates the Node, then
// patches its status subresource, both as field manager "kubelet", so the
// stored object carries the managedFields a real node has.
func apply(ctx context.Context, cs kubernetes.Interface, i int, withCIDRs bool) error {
	if _, err := cs.CoreV1().Nodes().Create(ctx, nodeMeta(i, withCIDRs), metav1.CreateOptions{FieldManager: "kubelet"}); err != nil {
		return fmt.Errorf("create node %s: %w", nodeName(i), err)
	}
	status, err := nodeStatus(i)
	if err != nil {
		return err
	}
	// A merge patch replaces the address list whole: a strategic merge or
	// an apply keys it by type, which two InternalIPs (dual stack) break.
	if _, err := cs.CoreV1().Nodes().Patch(ctx, nodeName(i), types.MergePatchType, status, metav1.PatchOptions{FieldManager: "kubelet"}, "status"); err != nil {
		return fmt.Errorf("patch node %s status: %w", nodeName(i), err)
	}
	return nil
}

// assignCIDRs gives node i its pod CIDRs as the node IPAM controller does
// (a patch of spec, the one change of pod CIDRs the API allows).
func assignCIDRs(ctx context.Context, cs kubernetes.Interface, i int) error {
	p4, p6 := podCIDRs(i)
	body := fmt.Sprintf(`{"spec":{"podCIDR":%q,"podCIDRs":[%q,%q]}}`, p4, p4, p6)
	_, err := cs.CoreV1().Nodes().Patch(ctx, nodeName(i), types.StrategicMergePatchType, []byte(body), metav1.PatchOptions{FieldManager: "kube-controller-manager"})
	if err != nil {
		return fmt.Errorf("assign pod CIDRs to %s: %w", nodeName(i), err)
	}
	return nil
}

// createNodes registers nodes [from, to) with workers in parallel.
func createNodes(ctx context.Context, cs kubernetes.Interface, from, to int, withCIDRs bool, progress func(string)) error {
	const workers = 16
	next := make(chan int)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := apply(ctx, cs, i, withCIDRs); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	start := time.Now()
	var err error
feed:
	for i := from; i < to; i++ {
		select {
		case next <- i:
		case err = <-errs:
			break feed
		case <-ctx.Done():
			err = ctx.Err()
			break feed
		}
		if (i-from+1)%1000 == 0 {
			progress(fmt.Sprintf("created %d nodes in %.1fs", i-from+1, time.Since(start).Seconds()))
		}
	}
	close(next)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errs:
		default:
		}
	}
	return err
}
