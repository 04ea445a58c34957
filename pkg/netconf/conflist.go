package netconf

import (
	"encoding/json"
	"fmt"
)

// ConfList is a CNI configuration list, the file a runtime reads from its
// configuration directory: vethroute first, then the plugins chained after it.
type ConfList struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	// Plugins holds vethroute's *NetConf followed by Chained entries.
	Plugins []any `json:"plugins"`
}

// Chained is a plugin a conflist runs after vethroute on vethroute's result:
// its type and the runtime capabilities it asks for (portMappings for
// portmap, bandwidth for bandwidth), through which the runtime passes the
// pod's hostPorts and bandwidth annotations.
type Chained struct {
	Type         string          `json:"type"`
	Capabilities map[string]bool `json:"capabilities,omitempty"`
}

// ChainCapabilities are the runtime capabilities of the chained plugins
// whose configuration consists of nothing else; a plugin not listed here is
// chained with its type alone.
var ChainCapabilities = map[string]string{
	"portmap":   "portMappings",
	"bandwidth": "bandwidth",
}

// NewChained returns the entry for a plugin type, with its capability when
// ChainCapabilities knows one.
func NewChained(typ string) Chained {
	c := Chained{Type: typ}
	if capability, ok := ChainCapabilities[typ]; ok {
		c.Capabilities = map[string]bool{capability: true}
	}
	return c
}

// LoadConfList runs Load on each vethroute entry of a configuration list
// as a runtime would pass it to the plugin: with the list's name and
// cniVersion injected. Entries of other plugins are skipped.
func LoadConfList(b []byte) ([]*NetConf, error) {
	var l struct {
		CNIVersion string                       `json:"cniVersion"`
		Name       string                       `json:"name"`
		Plugins    []map[string]json.RawMessage `json:"plugins"`
	}
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("decode configuration list: %w", err)
	}
	var out []*NetConf
	for i, p := range l.Plugins {
		var typ string
		if json.Unmarshal(p["type"], &typ) != nil || typ != PluginType {
			continue
		}
		p["name"], _ = json.Marshal(l.Name)
		p["cniVersion"], _ = json.Marshal(l.CNIVersion)
		stdin, err := json.Marshal(p)
		if err != nil {
			return nil, fmt.Errorf("plugins[%d]: %w", i, err)
		}
		c, err := Load(stdin, "")
		if err != nil {
			return nil, fmt.Errorf("plugins[%d]: %w", i, err)
		}
		out = append(out, c)
	}
	return out, nil
}
