package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/plugins/ipam/host-local/backend/allocator"
)

const (
	// builtinIPAM is the ipam.type that selects the in-process allocator.
	builtinIPAM = "vethroute"
	// defaultMTU matches the Ethernet MTU of a typical node uplink.
	defaultMTU = 1500
	// defaultDataDir is where the built-in allocator keeps reservations.
	defaultDataDir = "/var/lib/cni/vethroute"
	// maxNetworkNameLen bounds the network name, which becomes a directory
	// name in the store and part of every host veth's alias.
	maxNetworkNameLen = 100
	// minMTU6 is the smallest MTU IPv6 allows; minMTU is IPv4's.
	minMTU6, minMTU, maxMTU = 1280, 68, 65535
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

	// builtin is the parsed built-in IPAM section (nil for an external IPAM).
	builtin *allocator.IPAMConfig
}

// configError is a CNI "invalid network configuration" error naming the field.
func configError(field, format string, a ...any) *types.Error {
	return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("invalid network config: %s: %s", field, fmt.Sprintf(format, a...)), "")
}

// loadConf parses and validates stdin. envArgs is CNI_ARGS, which may carry
// a requested address (IP=) for the built-in allocator.
func loadConf(stdin []byte, envArgs string) (*NetConf, error) {
	conf := &NetConf{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, decodeError(stdin, err)
	}
	if conf.Name == "" {
		return nil, configError("name", "missing; every network needs a name")
	}
	if len(conf.Name) > maxNetworkNameLen {
		return nil, configError("name", "%d characters long; vethroute accepts at most %d (the name goes into every host veth's alias)", len(conf.Name), maxNetworkNameLen)
	}
	switch {
	case conf.MTU == 0:
		conf.MTU = defaultMTU
	case conf.MTU < minMTU || conf.MTU > maxMTU:
		return nil, configError("mtu", "%d is outside %d..%d", conf.MTU, minMTU, maxMTU)
	}
	for i, r := range conf.HostRoutes {
		if r == nil || r.Dst.IP == nil {
			return nil, configError(fmt.Sprintf("hostRoutes[%d].dst", i), "missing")
		}
		if r.GW == nil {
			return nil, configError(fmt.Sprintf("hostRoutes[%d].gw", i), "missing: a node route needs the other node's address as gateway")
		}
		if (r.Dst.IP.To4() == nil) != (r.GW.To4() == nil) {
			return nil, configError(fmt.Sprintf("hostRoutes[%d]", i), "dst %s and gw %s are of different address families", r.Dst.String(), r.GW)
		}
		if !r.Dst.IP.Mask(r.Dst.Mask).Equal(r.Dst.IP) {
			return nil, configError(fmt.Sprintf("hostRoutes[%d].dst", i), "%s has host bits set", r.Dst.String())
		}
	}
	if conf.IPMasqBackend != nil && *conf.IPMasqBackend != "iptables" && *conf.IPMasqBackend != "nftables" {
		return nil, configError("ipMasqBackend", "%q is neither \"iptables\" nor \"nftables\"", *conf.IPMasqBackend)
	}
	if _, err := parseLevel(conf.LogLevel); err != nil {
		return nil, configError("logLevel", "%v", err)
	}
	if conf.LogFile != "" && !filepath.IsAbs(conf.LogFile) {
		return nil, configError("logFile", "%q is not an absolute path", conf.LogFile)
	}
	if conf.ReaperSocket != "" && !filepath.IsAbs(conf.ReaperSocket) {
		return nil, configError("reaperSocket", "%q is not an absolute path", conf.ReaperSocket)
	}
	if conf.IPAM.Type == "" {
		return nil, configError("ipam.type", "missing; use \"vethroute\" for the built-in allocator or the name of an IPAM plugin")
	}
	if conf.IPAM.Type == builtinIPAM {
		ipamConf, _, err := allocator.LoadIPAMConfig(stdin, envArgs)
		if err != nil {
			return nil, configError("ipam", "%v", err)
		}
		if ipamConf.DataDir == "" {
			ipamConf.DataDir = defaultDataDir
		}
		if !filepath.IsAbs(ipamConf.DataDir) {
			return nil, configError("ipam.dataDir", "%q is not an absolute path", ipamConf.DataDir)
		}
		for _, rs := range ipamConf.Ranges {
			if rs[0].RangeStart.To4() == nil && conf.MTU < minMTU6 {
				return nil, configError("mtu", "%d is below %d, the minimum for IPv6 range %s", conf.MTU, minMTU6, rs.String())
			}
		}
		for i, r := range ipamConf.Routes {
			if r == nil || r.Dst.IP == nil {
				return nil, configError(fmt.Sprintf("ipam.routes[%d].dst", i), "missing")
			}
		}
		conf.builtin = ipamConf
	}
	if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("decode prevResult: %v", err), "")
	}
	return conf, nil
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
			return configError(k, "%v", err)
		}
	}
	return types.NewError(types.ErrDecodingFailure, fmt.Sprintf("decode network config from stdin: %v", err), "")
}

// attachments returns the GC list from either key.
func (c *NetConf) attachments() []types.GCAttachment {
	return append(append([]types.GCAttachment(nil), c.ValidAttachments...), c.LegacyAttachments...)
}

func parseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "":
		return slog.LevelWarn, nil
	case "info":
		return slog.LevelInfo, nil
	case "debug":
		return slog.LevelDebug, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("%q is not one of debug, info, warn, error", s)
}

// maxLogSize bounds logFile: past it the file is renamed to logFile.1
// (replacing the previous one) and a new one started, so that a busy node
// keeps at most twice this much. A var so tests can make it small.
var maxLogSize int64 = 10 << 20

// newLogger returns the plugin's logger. It writes to logFile when one is set
// (appending, mode 0600) and to stderr otherwise; stdout carries only the
// CNI result or error. A log file that cannot be opened falls back to stderr
// rather than failing the verb: logging must never break pod networking.
func newLogger(conf *NetConf, args ...any) (*slog.Logger, io.Closer) {
	level, _ := parseLevel(conf.LogLevel)
	var w io.Writer = os.Stderr
	var closer io.Closer = io.NopCloser(nil)
	if conf.LogFile != "" {
		f, err := openLogFile(conf.LogFile)
		if err != nil {
			fmt.Fprintf(os.Stderr, "vethroute: logFile: %v; logging to stderr\n", err)
		} else {
			w, closer = f, f
		}
	}
	h := slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})
	return slog.New(h).With(args...), closer
}

// openLogFile opens path for appending. It never follows a symbolic link
// at path (one planted there would have root append to any file) and
// refuses anything but a regular file. A file past maxLogSize is rotated
// first; concurrent plugins may each rotate, which loses at most one
// generation, never a line of the new file.
func openLogFile(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	open := func() (*os.File, error) {
		return os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0o600)
	}
	f, err := open()
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("open %s: not a regular file", path)
	}
	if fi.Size() < maxLogSize {
		return f, nil
	}
	f.Close()
	if err := os.Rename(path, path+".1"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("rotate %s: %w", path, err)
	}
	if f, err = open(); err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return f, nil
}
