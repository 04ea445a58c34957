package testutil

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

// pluginTimeout bounds every plugin process a test starts: a hung plugin is
// killed and reported instead of stalling the suite.
const pluginTimeout = 2 * time.Minute

// Invocation is one execution of a CNI plugin binary exactly as a runtime
// performs it, without libcni in between: the whole environment and the
// bytes on stdin are the test's to choose, malformed ones included.
type Invocation struct {
	// Env is the plugin's entire environment; CNIEnv builds the usual one.
	Env []string
	// Stdin is the network configuration, or whatever the test sends instead.
	Stdin []byte
}

// CNIEnv returns the environment of a CNI invocation. Empty values are left
// out, as they are when a runtime does not set them.
func CNIEnv(command, containerID, netnsPath, ifName, args, path string) []string {
	var env []string
	for _, kv := range [][2]string{
		{"CNI_COMMAND", command}, {"CNI_CONTAINERID", containerID}, {"CNI_NETNS", netnsPath},
		{"CNI_IFNAME", ifName}, {"CNI_ARGS", args}, {"CNI_PATH", path},
	} {
		if kv[1] != "" {
			env = append(env, kv[0]+"="+kv[1])
		}
	}
	return env
}

// Outcome is what one plugin process left: its output and how it ended.
type Outcome struct {
	Stdout, Stderr []byte
	// ExitCode is the exit status, or -1 when a signal ended the process.
	ExitCode int
	// Signaled reports that a signal (the test's SIGKILL, or the timeout's)
	// ended the process.
	Signaled bool
	// Duration is the wall time from start to exit.
	Duration time.Duration
	// Err is set when the process could not be waited for at all.
	Err error
}

// CNIError decodes the CNI error structure a failed plugin prints on stdout.
func (o Outcome) CNIError() (*types.Error, error) {
	var e types.Error
	dec := json.NewDecoder(bytes.NewReader(o.Stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return nil, fmt.Errorf("stdout is not a CNI error: %v\nstdout: %q", err, o.Stdout)
	}
	if dec.More() {
		return nil, fmt.Errorf("stdout holds more than one JSON value: %q", o.Stdout)
	}
	return &e, nil
}

// String summarises the outcome for failure messages.
func (o Outcome) String() string {
	return fmt.Sprintf("exit %d (signaled %v) after %s\nstdout: %s\nstderr: %s", o.ExitCode, o.Signaled, o.Duration.Round(time.Millisecond), o.Stdout, o.Stderr)
}

// Running is a plugin process started by StartPlugin.
type Running struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
	start          time.Time
	timer          *time.Timer
	once           sync.Once
	outcome        Outcome
}

// StartPlugin starts the plugin binary bin inside the node's namespace and
// returns at once. The process is forked from the thread Do has moved into
// the node's namespace, so it starts there, as it would on a real node.
func (n *Node) StartPlugin(bin string, inv Invocation) (*Running, error) {
	r := &Running{}
	r.cmd = exec.Command(bin)
	r.cmd.Env = inv.Env
	if r.cmd.Env == nil {
		r.cmd.Env = []string{} // nil would mean "inherit the test's environment"
	}
	r.cmd.Stdin = bytes.NewReader(inv.Stdin)
	r.cmd.Stdout, r.cmd.Stderr = &r.stdout, &r.stderr
	err := n.Do(func() error {
		r.start = time.Now()
		return r.cmd.Start()
	})
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	r.timer = time.AfterFunc(pluginTimeout, func() { _ = r.Kill() })
	return r, nil
}

// Pid returns the process ID.
func (r *Running) Pid() int { return r.cmd.Process.Pid }

// Kill sends SIGKILL: the process ends at whatever instruction it is on,
// exactly as when a runtime's timeout or the OOM killer strikes.
func (r *Running) Kill() error {
	err := r.cmd.Process.Signal(syscall.SIGKILL)
	if errors.Is(err, os.ErrProcessDone) {
		return nil
	}
	return err
}

// Wait waits for the process to end and returns its outcome. It may be
// called more than once.
func (r *Running) Wait() Outcome {
	r.once.Do(func() {
		err := r.cmd.Wait()
		r.timer.Stop()
		o := Outcome{Stdout: r.stdout.Bytes(), Stderr: r.stderr.Bytes(), Duration: time.Since(r.start)}
		if ps := r.cmd.ProcessState; ps != nil {
			o.ExitCode = ps.ExitCode()
			if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				o.Signaled = true
			}
		}
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			o.Err = err
		}
		r.outcome = o
	})
	return r.outcome
}

// RunPlugin runs the plugin binary bin inside the node to completion.
func (n *Node) RunPlugin(t testing.TB, bin string, inv Invocation) Outcome {
	t.Helper()
	r, err := n.StartPlugin(bin, inv)
	if err != nil {
		t.Fatal(err)
	}
	o := r.Wait()
	if o.Err != nil {
		t.Fatalf("wait for %s: %v", bin, o.Err)
	}
	return o
}
