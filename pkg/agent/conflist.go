package agent

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"text/template"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/utils"
	corev1 "k8s.io/api/core/v1"
)

// DefaultConfTemplate is the built-in conflist template: the vethroute
// plugin with its built-in IPAM, one range per pod CIDR of the node and a
// default route per address family.
//
//go:embed conflist.tmpl
var DefaultConfTemplate string

// ConfData is what a conflist template is executed with.
type ConfData struct {
	// NodeName is the node the configuration is for.
	NodeName string
	// CNIVersion and Network are the conflist's cniVersion and name.
	CNIVersion string
	Network    string
	// MTU is the pods' MTU; 0 leaves the plugin's default.
	MTU int
	// DataDir is the built-in IPAM's reservation directory.
	DataDir string
	// LogFile is the plugin's log file; empty logs to the runtime's stderr.
	LogFile string
	// ReaperSocket is the agent's reaper socket, which DEL hands host veths
	// to; empty when the agent runs no reaper.
	ReaperSocket string
	// Ranges holds one entry per pod CIDR of the node, in spec order.
	Ranges []ConfRange
}

// ConfRange is one pod CIDR of the node as the plugin's IPAM range.
type ConfRange struct {
	// Subnet is the pod CIDR.
	Subnet string
	// Gateway is the node's address in it, which the plugin puts on every
	// host veth: the last usable address of the subnet.
	Gateway string
	// DefaultRoute is the family's default destination, 0.0.0.0/0 or ::/0.
	DefaultRoute string
}

// ParseConfTemplate parses a conflist template. Templates get one function
// besides the built-ins: json, which quotes a value as JSON.
func ParseConfTemplate(text string) (*template.Template, error) {
	t, err := template.New("conflist").Option("missingkey=error").Funcs(template.FuncMap{
		"json": func(v any) (string, error) {
			b, err := json.Marshal(v)
			return string(b), err
		},
	}).Parse(text)
	if err != nil {
		return nil, fmt.Errorf("parse conflist template: %w", err)
	}
	return t, nil
}

// Gateway returns the address the node takes in a pod CIDR: the last usable
// one, as host-local's default range end (the broadcast address minus one
// for IPv4, the last address for IPv6). For 192.168.0.0/24 that is
// 192.168.0.254, the article's gateway. The plugin's allocator never hands
// the gateway to a pod. Subnets too small to hold a gateway and one pod
// (IPv4 longer than /30, IPv6 longer than /126) are refused.
func Gateway(p netip.Prefix) (netip.Addr, error) {
	p = p.Masked()
	a := p.Addr()
	if (a.Is4() && p.Bits() > 30) || (a.Is6() && p.Bits() > 126) {
		return netip.Addr{}, fmt.Errorf("pod CIDR %s is too small for a gateway and a pod", p)
	}
	b := a.AsSlice()
	host := a.BitLen() - p.Bits()
	for i := len(b) - 1; host > 0; i-- {
		n := min(host, 8)
		b[i] |= byte(1<<n - 1)
		host -= n
	}
	last, _ := netip.AddrFromSlice(b)
	if last.Is4() {
		last = last.Prev()
	}
	return last, nil
}

// AutoCNIVersion is the --cni-version value that lets the agent choose the
// conflist's cniVersion from the node's container runtime.
const AutoCNIVersion = "auto"

// CNIVersionFor picks the newest cniVersion the node's container runtime is
// known to read, from the version the kubelet reports in
// status.nodeInfo.containerRuntimeVersion. A runtime rejects a conflist
// whose cniVersion its libcni does not know ("unsupported CNI result
// version") and every pod on the node then fails to start: libcni learned
// 1.1.0 (GC, STATUS) in v1.2.0, which containerd ships from 2.0; containerd
// 1.6 and 1.7 stop at 1.0.0. Runtimes not recognised here get 1.0.0, which
// every libcni since v1.0.0 reads; --cni-version overrides the choice.
func CNIVersionFor(node *corev1.Node) string {
	name, ver, ok := strings.Cut(node.Status.NodeInfo.ContainerRuntimeVersion, "://")
	if ok && name == "containerd" {
		major, _, _ := strings.Cut(strings.TrimPrefix(ver, "v"), ".")
		if n, err := strconv.Atoi(major); err == nil && n >= 2 {
			return "1.1.0"
		}
	}
	return "1.0.0"
}

// NewConfData builds the template data for a node from its pod CIDRs.
func NewConfData(node *corev1.Node, base ConfData) (ConfData, error) {
	d := base
	d.NodeName = node.Name
	d.Ranges = nil
	if d.CNIVersion == AutoCNIVersion {
		d.CNIVersion = CNIVersionFor(node)
	}
	cidrs := PodCIDRs(node)
	if len(cidrs) == 0 {
		return d, fmt.Errorf("node %s has no spec.podCIDRs yet", node.Name)
	}
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return d, fmt.Errorf("node %s: pod CIDR %q: %w", node.Name, c, err)
		}
		gw, err := Gateway(p)
		if err != nil {
			return d, fmt.Errorf("node %s: %w", node.Name, err)
		}
		def := "0.0.0.0/0"
		if p.Addr().Is6() {
			def = "::/0"
		}
		d.Ranges = append(d.Ranges, ConfRange{Subnet: p.Masked().String(), Gateway: gw.String(), DefaultRoute: def})
	}
	return d, nil
}

// RenderConfList executes the template with data and checks that the result
// is a conflist libcni accepts. The output is re-indented, so a template's
// whitespace never causes a rewrite.
func RenderConfList(t *template.Template, data ConfData) ([]byte, error) {
	var buf bytes.Buffer
	if err := t.Execute(&buf, data); err != nil {
		return nil, fmt.Errorf("render conflist: %w", err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, buf.Bytes(), "", "  "); err != nil {
		return nil, fmt.Errorf("rendered conflist is not JSON: %w\n%s", err, buf.Bytes())
	}
	out.WriteByte('\n')
	l, err := libcni.ConfListFromBytes(out.Bytes())
	if err != nil {
		return nil, fmt.Errorf("rendered conflist is not a valid CNI configuration list: %w", err)
	}
	// libcni parses leniently; a runtime would fail on these later.
	if err := utils.ValidateNetworkName(l.Name); err != nil {
		return nil, fmt.Errorf("rendered conflist is not a valid CNI configuration list: %w", err)
	}
	if l.CNIVersion == "" || len(l.Plugins) == 0 {
		return nil, fmt.Errorf("rendered conflist is not a valid CNI configuration list: no cniVersion or no plugins")
	}
	return out.Bytes(), nil
}
