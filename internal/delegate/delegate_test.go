package delegate

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// fakePlugin writes a shell script named name into a new directory, puts
// that directory on CNI_PATH and returns it.
func fakePlugin(t *testing.T, name, script string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CNI_PATH", t.TempDir()+string(os.PathListSeparator)+dir)
	return dir
}

const netconf = `{"cniVersion": "1.0.0", "name": "n", "ipam": {"type": "fake"}}`

func TestAddDecodesResultAndFillsVersion(t *testing.T) {
	// No cniVersion in the result: the one of the configuration applies.
	fakePlugin(t, "fake", `cat >/dev/null; echo '{"ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1"}]}'`)
	r, err := Add("fake", []byte(netconf))
	if err != nil {
		t.Fatal(err)
	}
	if r.Version() != "1.0.0" {
		t.Errorf("result version %q, want 1.0.0", r.Version())
	}
	res, err := current.NewResultFromResult(r)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.IPs) != 1 || res.IPs[0].Address.String() != "10.1.0.5/24" || res.IPs[0].Gateway.String() != "10.1.0.1" {
		t.Errorf("result %+v", res)
	}
}

func TestAddKeepsResultVersion(t *testing.T) {
	fakePlugin(t, "fake", `echo '{"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.1.0.5/24"}]}'`)
	r, err := Add("fake", []byte(netconf))
	if err != nil {
		t.Fatal(err)
	}
	if r.Version() != "0.4.0" {
		t.Errorf("result version %q, want 0.4.0", r.Version())
	}
}

func TestEnvironmentAndStdin(t *testing.T) {
	// The plugin sees the caller's environment with CNI_COMMAND replaced,
	// once, and the configuration on stdin.
	dir := fakePlugin(t, "fake", `env > "$(dirname "$0")/env"; cat > "$(dirname "$0")/stdin"`)
	t.Setenv("CNI_COMMAND", "ADD")
	t.Setenv("CNI_CONTAINERID", "c1")
	if err := Del("fake", []byte(netconf)); err != nil {
		t.Fatal(err)
	}
	env, err := os.ReadFile(filepath.Join(dir, "env"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(env), "CNI_COMMAND="); n != 1 || !strings.Contains(string(env), "CNI_COMMAND=DEL\n") {
		t.Errorf("plugin environment has %d CNI_COMMANDs, want one CNI_COMMAND=DEL:\n%s", n, env)
	}
	if !strings.Contains(string(env), "CNI_CONTAINERID=c1\n") {
		t.Errorf("plugin environment lacks the caller's CNI_CONTAINERID:\n%s", env)
	}
	stdin, err := os.ReadFile(filepath.Join(dir, "stdin"))
	if err != nil {
		t.Fatal(err)
	}
	if string(stdin) != netconf {
		t.Errorf("plugin stdin %q, want %q", stdin, netconf)
	}
}

func TestVerbs(t *testing.T) {
	dir := fakePlugin(t, "fake", `echo "$CNI_COMMAND" >> "$(dirname "$0")/verbs"`)
	for _, f := range []func(string, []byte) error{Del, Check, Status, GC} {
		if err := f("fake", []byte(netconf)); err != nil {
			t.Fatal(err)
		}
	}
	verbs, err := os.ReadFile(filepath.Join(dir, "verbs"))
	if err != nil {
		t.Fatal(err)
	}
	if string(verbs) != "DEL\nCHECK\nSTATUS\nGC\n" {
		t.Errorf("verbs run: %q", verbs)
	}
}

func TestPluginErrors(t *testing.T) {
	for _, tc := range []struct {
		name, script string
		code         uint
		says         string
	}{
		{"CNI error on stdout", `echo '{"cniVersion": "1.0.0", "code": 11, "msg": "try later", "details": "d"}'; exit 1`, types.ErrTryAgainLater, "try later"},
		{"stderr only", `echo 'it broke' >&2; exit 3`, 0, `netplugin failed: "it broke\n": exit status 3`},
		{"nothing", `exit 4`, 0, "netplugin failed with no error message: exit status 4"},
		{"garbage on stdout", `echo 'not json'; exit 1`, 0, "error parsing its diagnostic message"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fakePlugin(t, "fake", tc.script)
			_, err := Add("fake", []byte(netconf))
			var te *types.Error
			if !errors.As(err, &te) {
				t.Fatalf("error %v (%T) is not a *types.Error", err, err)
			}
			if te.Code != tc.code || !strings.Contains(te.Msg, tc.says) {
				t.Errorf("error code %d %q, want code %d containing %q", te.Code, te.Msg, tc.code, tc.says)
			}
		})
	}
}

func TestStderrOfSuccessIsPassedOn(t *testing.T) {
	fakePlugin(t, "fake", `echo 'a warning' >&2`)
	var buf bytes.Buffer
	old := Stderr
	Stderr = &buf
	t.Cleanup(func() { Stderr = old })
	if err := Del("fake", []byte(netconf)); err != nil {
		t.Fatal(err)
	}
	if buf.String() != "a warning\n" {
		t.Errorf("stderr passed on: %q", buf.String())
	}
}

func TestFindInPath(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "p"), nil, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got, err := FindInPath("p", []string{t.TempDir(), dir}); err != nil || got != filepath.Join(dir, "p") {
		t.Errorf("FindInPath(p) = %q, %v", got, err)
	}
	for _, tc := range []struct {
		plugin string
		paths  []string
		says   string
	}{
		{"", []string{dir}, "no plugin name"},
		{"../p", []string{dir}, "invalid plugin name"},
		{"p", nil, "no paths"},
		{"d", []string{dir}, "failed to find plugin"}, // a directory is no plugin
		{"q", []string{dir}, "failed to find plugin"},
	} {
		if _, err := FindInPath(tc.plugin, tc.paths); err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("FindInPath(%q, %v) = %v, want an error saying %q", tc.plugin, tc.paths, err, tc.says)
		}
	}
}
