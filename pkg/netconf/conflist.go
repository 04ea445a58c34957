package netconf

import (
	"encoding/json"
	"fmt"
)

// ConfList is a CNI configuration list, the file a runtime reads from its
// configuration directory.
type ConfList struct {
	CNIVersion string     `json:"cniVersion"`
	Name       string     `json:"name"`
	Plugins    []*NetConf `json:"plugins"`
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
