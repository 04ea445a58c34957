// Package delegate runs an IPAM plugin from CNI_PATH for vethroute's
// external IPAM, as the invoke package of containernetworking/cni does for
// plugins/pkg/ipam's ExecAdd, ExecDel, ExecCheck and ExecStatus and for
// invoke.DelegateGC: the same search of CNI_PATH, the same environment (the
// plugin's own with CNI_COMMAND replaced), the same retry on "text file
// busy", the same error and result decoding.
//
// It exists because invoke imports OpenTelemetry, whose propagation package
// imports net/http and so crypto/tls: linked into vethroute they added 44 of
// its 104 package init()s, 0.23 million of the 1.79 million instructions of a
// start-up (callgrind, CNI_COMMAND=VERSION) and 1.4 MiB of its stripped
// binary to every invocation, while only an external IPAM ever delegates.
// The one thing invoke does that this package does not, passing an
// OpenTelemetry span of the context on as TRACEPARENT, never happened in
// vethroute: it called invoke with context.TODO(), which carries no span.
package delegate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/types/create"
	"github.com/containernetworking/cni/pkg/version"
)

// Stderr receives what a plugin that succeeded wrote to its stderr, as
// invoke's default executor passes it on. A failed plugin's stderr goes
// into the returned error instead.
var Stderr io.Writer = os.Stderr

// busyRetries and busyWait are invoke's: a plugin binary that is still
// being written by an installer fails with "text file busy", and invoke
// tries again up to five times, a second apart.
const (
	busyRetries = 5
	busyWait    = time.Second
)

// Add runs plugin's ADD with netconf on stdin and returns its result,
// converted to the version it reports (or, when it reports none, the
// version netconf declares).
func Add(plugin string, netconf []byte) (types.Result, error) {
	out, err := run(plugin, "ADD", netconf)
	if err != nil {
		return nil, err
	}
	resultVersion, fixed, err := fixupResultVersion(netconf, out)
	if err != nil {
		return nil, err
	}
	return create.Create(resultVersion, fixed)
}

// Del runs plugin's DEL.
func Del(plugin string, netconf []byte) error { return runNoResult(plugin, "DEL", netconf) }

// Check runs plugin's CHECK.
func Check(plugin string, netconf []byte) error { return runNoResult(plugin, "CHECK", netconf) }

// Status runs plugin's STATUS.
func Status(plugin string, netconf []byte) error { return runNoResult(plugin, "STATUS", netconf) }

// GC runs plugin's GC.
func GC(plugin string, netconf []byte) error { return runNoResult(plugin, "GC", netconf) }

func runNoResult(plugin, command string, netconf []byte) error {
	_, err := run(plugin, command, netconf)
	return err
}

// run finds plugin in CNI_PATH and executes it with this process's
// environment, CNI_COMMAND set to command, returning its stdout.
func run(plugin, command string, netconf []byte) ([]byte, error) {
	path, err := FindInPath(plugin, filepath.SplitList(os.Getenv("CNI_PATH")))
	if err != nil {
		return nil, err
	}
	env := withEnv(os.Environ(), "CNI_COMMAND", command)
	var stdout, stderr bytes.Buffer
	for i := 0; ; i++ {
		stdout.Reset()
		stderr.Reset()
		c := exec.Command(path)
		c.Env, c.Stdin, c.Stdout, c.Stderr = env, bytes.NewReader(netconf), &stdout, &stderr
		err := c.Run()
		if err == nil {
			break
		}
		if i < busyRetries && strings.Contains(err.Error(), "text file busy") {
			time.Sleep(busyWait)
			continue
		}
		return nil, pluginErr(err, stdout.Bytes(), stderr.Bytes())
	}
	if Stderr != nil && stderr.Len() > 0 {
		_, _ = stderr.WriteTo(Stderr)
	}
	return stdout.Bytes(), nil
}

// FindInPath returns the first regular file named plugin in paths.
func FindInPath(plugin string, paths []string) (string, error) {
	if plugin == "" {
		return "", fmt.Errorf("no plugin name provided")
	}
	if strings.ContainsRune(plugin, os.PathSeparator) {
		return "", fmt.Errorf("invalid plugin name: %s", plugin)
	}
	if len(paths) == 0 {
		return "", fmt.Errorf("no paths provided")
	}
	for _, dir := range paths {
		full := filepath.Join(dir, plugin)
		if fi, err := os.Stat(full); err == nil && fi.Mode().IsRegular() {
			return full, nil
		}
	}
	return "", fmt.Errorf("failed to find plugin %q in path %s", plugin, paths)
}

// withEnv returns env with key set to value, replacing every earlier
// setting of key, so that the plugin never sees two CNI_COMMANDs.
func withEnv(env []string, key, value string) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if k, _, ok := strings.Cut(kv, "="); ok && k == key {
			continue
		}
		out = append(out, kv)
	}
	return append(out, key+"="+value)
}

// pluginErr turns a failed run into a CNI error: the plugin's own JSON error
// from stdout when it wrote one (keeping its code), otherwise a message with
// its stderr.
func pluginErr(err error, stdout, stderr []byte) error {
	emsg := types.Error{}
	switch {
	case len(stdout) == 0 && len(stderr) == 0:
		emsg.Msg = fmt.Sprintf("netplugin failed with no error message: %v", err)
	case len(stdout) == 0:
		emsg.Msg = fmt.Sprintf("netplugin failed: %q: %v", string(stderr), err)
	default:
		if perr := json.Unmarshal(stdout, &emsg); perr != nil {
			emsg.Msg = fmt.Sprintf("netplugin failed but error parsing its diagnostic message %q: %v", string(stdout), perr)
		}
	}
	return &emsg
}

// fixupResultVersion returns the version of result and result itself; a
// result without a cniVersion is given the one of netconf.
func fixupResultVersion(netconf, result []byte) (string, []byte, error) {
	confVersion, err := (&version.ConfigDecoder{}).Decode(netconf)
	if err != nil {
		return "", nil, err
	}
	var raw map[string]any
	if err := json.Unmarshal(result, &raw); err != nil {
		return "", nil, fmt.Errorf("failed to unmarshal raw result: %w", err)
	}
	if raw == nil {
		raw = map[string]any{}
	}
	if v, ok := raw["cniVersion"].(string); ok && v != "" {
		return v, result, nil
	}
	raw["cniVersion"] = confVersion
	fixed, err := json.Marshal(raw)
	if err != nil {
		return "", nil, fmt.Errorf("failed to remarshal fixed result: %w", err)
	}
	return confVersion, fixed, nil
}
