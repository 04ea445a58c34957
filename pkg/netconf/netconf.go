package netconf

import (
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/plugins/ipam/host-local/backend/allocator"
)

const (
	// PluginType is the type under which runtimes find the plugin.
	PluginType = "vethroute"
	// BuiltinIPAM is the ipam.type that selects the in-process allocator.
	BuiltinIPAM = "vethroute"
	// DefaultMTU matches the Ethernet MTU of a typical node uplink.
	DefaultMTU = 1500
	// DefaultLogLevel is the plugin's logLevel when none is set: a plugin
	// runs for every pod, so only what needs attention is logged.
	DefaultLogLevel = slog.LevelWarn
	// DefaultDataDir is where the built-in allocator keeps reservations.
	DefaultDataDir = "/var/lib/cni/vethroute"
	// MaxNetworkNameLen bounds the network name, which becomes a directory
	// name in the store and part of every host veth's alias.
	MaxNetworkNameLen = 100
	// MinMTU6 is the smallest MTU IPv6 allows; MinMTU is IPv4's.
	MinMTU6, MinMTU, MaxMTU = 1280, 68, 65535
)

// Route protocol numbers (`ip route show proto N`). Each owner deletes only
// routes of its own number, so the two must differ.
const (
	// PluginRouteProtocol tags the routes the plugin installs on the node:
	// the container routes and hostRoutes.
	PluginRouteProtocol = 86
	// AgentRouteProtocol is the node agent's default for its routes toward
	// other nodes' pod subnets.
	AgentRouteProtocol = 87
)

// NetConf is vethroute's network configuration. Every key is documented in
// README.md.
type NetConf struct {
	types.PluginConf
	MTU           int            `json:"mtu,omitempty"`
	IPMasq        bool           `json:"ipMasq,omitempty"`
	IPMasqBackend *string        `json:"ipMasqBackend,omitempty"`
	HostRoutes    []*types.Route `json:"hostRoutes,omitempty"`
	LogFile       string         `json:"logFile,omitempty"`
	LogLevel      string         `json:"logLevel,omitempty"`
	// ReaperSocket is the node agent's reaper (package reaper): DEL hands
	// it the host veth and returns once the node no longer lists it.
	ReaperSocket string `json:"reaperSocket,omitempty"`
	// LegacyAttachments is the GC key of CNI 1.1.0 drafts, still sent by
	// some runtimes; ValidAttachments (in PluginConf) is the final one.
	LegacyAttachments []types.GCAttachment `json:"cni.dev/attachments,omitempty"`

	// Builtin is the built-in IPAM section, nil for an external IPAM. Load
	// fills it with host-local's parser, which also applies CNI_ARGS and
	// runtimeConfig address requests (IPArgs).
	Builtin *allocator.IPAMConfig `json:"-"`
}

// Attachments returns the GC list from either key.
func (c *NetConf) Attachments() []types.GCAttachment {
	return append(append([]types.GCAttachment(nil), c.ValidAttachments...), c.LegacyAttachments...)
}

// ipamSection is the built-in IPAM's part of host-local's schema that a
// written configuration uses.
type ipamSection struct {
	Type    string               `json:"type"`
	Ranges  []allocator.RangeSet `json:"ranges,omitempty"`
	Routes  []*types.Route       `json:"routes,omitempty"`
	DataDir string               `json:"dataDir,omitempty"`
}

// MarshalJSON writes the configuration as a runtime passes it to the
// plugin. The ipam section comes from Builtin when set; for an external IPAM
// only its type is written, since NetConf keeps no other key of it. Empty
// dns and ipam sections are left out.
func (c NetConf) MarshalJSON() ([]byte, error) {
	type fields NetConf // without this method
	out := struct {
		fields
		DNS  *types.DNS `json:"dns,omitempty"`
		IPAM any        `json:"ipam,omitempty"`
	}{fields: fields(c)}
	if d := c.DNS; len(d.Nameservers)+len(d.Search)+len(d.Options) > 0 || d.Domain != "" {
		out.DNS = &d
	}
	switch {
	case c.Builtin != nil:
		out.IPAM = ipamSection{Type: BuiltinIPAM, Ranges: c.Builtin.Ranges, Routes: c.Builtin.Routes, DataDir: c.Builtin.DataDir}
	case c.IPAM.Type != "":
		out.IPAM = c.IPAM
	}
	return json.Marshal(out)
}

// ConfigError is a CNI "invalid network configuration" error naming the
// field.
func ConfigError(field, format string, a ...any) *types.Error {
	return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("invalid network config: %s: %s", field, fmt.Sprintf(format, a...)), "")
}
