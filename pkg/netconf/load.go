package netconf

import (
	"encoding/json"
	"fmt"
	"maps"
	"path/filepath"
	"slices"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/plugins/ipam/host-local/backend/allocator"
)

// Load decodes and validates the configuration a runtime passes on stdin,
// with the defaults applied. envArgs is CNI_ARGS, which may carry a
// requested address (IP=) for the built-in allocator. Its errors are CNI
// errors: code 6 for bytes that are not a configuration, 7 naming the field
// for one that is wrong.
func Load(stdin []byte, envArgs string) (*NetConf, error) {
	conf := &NetConf{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, decodeError(stdin, err)
	}
	if conf.MTU == 0 {
		conf.MTU = DefaultMTU
	}
	if err := conf.validatePlugin(); err != nil {
		return nil, err
	}
	if conf.IPAM.Type == BuiltinIPAM {
		ipamConf, _, err := allocator.LoadIPAMConfig(stdin, envArgs)
		if err != nil {
			return nil, ConfigError("ipam", "%v", err)
		}
		if ipamConf.DataDir == "" {
			ipamConf.DataDir = DefaultDataDir
		}
		conf.Builtin = ipamConf
		if err := conf.validateBuiltin(); err != nil {
			return nil, err
		}
	}
	if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("decode prevResult: %v", err), "")
	}
	return conf, nil
}

// Validate checks a configuration with its defaults applied, as Load
// returns it, and returns the CNI error Load would.
func (c *NetConf) Validate() error {
	if err := c.validatePlugin(); err != nil {
		return err
	}
	if c.IPAM.Type == BuiltinIPAM && c.Builtin == nil {
		return ConfigError("ipam", "the built-in allocator's section is missing")
	}
	return c.validateBuiltin()
}

// validatePlugin checks the plugin's own keys and ipam.type.
func (c *NetConf) validatePlugin() error {
	if c.Name == "" {
		return ConfigError("name", "missing; every network needs a name")
	}
	if len(c.Name) > MaxNetworkNameLen {
		return ConfigError("name", "%d characters long; vethroute accepts at most %d (the name goes into every host veth's alias)", len(c.Name), MaxNetworkNameLen)
	}
	if c.MTU < MinMTU || c.MTU > MaxMTU {
		return ConfigError("mtu", "%d is outside %d..%d", c.MTU, MinMTU, MaxMTU)
	}
	for i, r := range c.HostRoutes {
		if r == nil || r.Dst.IP == nil {
			return ConfigError(fmt.Sprintf("hostRoutes[%d].dst", i), "missing")
		}
		if r.GW == nil {
			return ConfigError(fmt.Sprintf("hostRoutes[%d].gw", i), "missing: a node route needs the other node's address as gateway")
		}
		if (r.Dst.IP.To4() == nil) != (r.GW.To4() == nil) {
			return ConfigError(fmt.Sprintf("hostRoutes[%d]", i), "dst %s and gw %s are of different address families", r.Dst.String(), r.GW)
		}
		if !r.Dst.IP.Mask(r.Dst.Mask).Equal(r.Dst.IP) {
			return ConfigError(fmt.Sprintf("hostRoutes[%d].dst", i), "%s has host bits set", r.Dst.String())
		}
	}
	if c.IPMasqBackend != nil && *c.IPMasqBackend != "iptables" && *c.IPMasqBackend != "nftables" {
		return ConfigError("ipMasqBackend", "%q is neither \"iptables\" nor \"nftables\"", *c.IPMasqBackend)
	}
	if _, err := ParseLevel(c.LogLevel, DefaultLogLevel); err != nil {
		return ConfigError("logLevel", "%v", err)
	}
	if c.LogFile != "" && !filepath.IsAbs(c.LogFile) {
		return ConfigError("logFile", "%q is not an absolute path", c.LogFile)
	}
	if c.ReaperSocket != "" && !filepath.IsAbs(c.ReaperSocket) {
		return ConfigError("reaperSocket", "%q is not an absolute path", c.ReaperSocket)
	}
	if c.IPAM.Type == "" {
		return ConfigError("ipam.type", "missing; use \"vethroute\" for the built-in allocator or the name of an IPAM plugin")
	}
	return nil
}

// validateBuiltin checks what the built-in allocator relies on beyond
// host-local's own parser.
func (c *NetConf) validateBuiltin() error {
	b := c.Builtin
	if b == nil {
		return nil
	}
	if !filepath.IsAbs(b.DataDir) {
		return ConfigError("ipam.dataDir", "%q is not an absolute path", b.DataDir)
	}
	for _, rs := range b.Ranges {
		if rs[0].RangeStart.To4() == nil && c.MTU < MinMTU6 {
			return ConfigError("mtu", "%d is below %d, the minimum for IPv6 range %s", c.MTU, MinMTU6, rs.String())
		}
	}
	for i, r := range b.Routes {
		if r == nil || r.Dst.IP == nil {
			return ConfigError(fmt.Sprintf("ipam.routes[%d].dst", i), "missing")
		}
	}
	return nil
}

// decodeError classifies a failure to decode stdin. Bytes that are not a
// JSON object cannot be decoded at all (code 6); a JSON object whose values
// do not fit the schema (a string for the MTU, "10.0.0.0/99" for a CIDR) is
// an invalid configuration (code 7), reported under the key that holds the
// bad value, which the decoder's own message does not always name.
func decodeError(stdin []byte, err error) *types.Error {
	var top map[string]json.RawMessage
	if json.Unmarshal(stdin, &top) != nil {
		return types.NewError(types.ErrDecodingFailure, fmt.Sprintf("decode network config from stdin: %v", err), "")
	}
	for _, k := range slices.Sorted(maps.Keys(top)) {
		one, _ := json.Marshal(map[string]json.RawMessage{k: top[k]})
		if json.Unmarshal(one, &NetConf{}) != nil {
			return ConfigError(k, "%v", err)
		}
	}
	return types.NewError(types.ErrDecodingFailure, fmt.Sprintf("decode network config from stdin: %v", err), "")
}
