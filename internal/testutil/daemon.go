package testutil

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// Daemon is a long-running process started inside a network namespace with
// nsenter, as a node's daemon would run there.
type Daemon struct {
	// LogPath is the file holding the daemon's stdout and stderr.
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
}

// StartDaemon runs bin with args inside netns (nsenter --net=) and returns
// at once. The process dies with the test binary (Pdeathsig); t.Cleanup
// stops it if the test has not, and prints its log if the test failed.
func StartDaemon(t testing.TB, netns ns.NetNS, bin string, args ...string) *Daemon {
	t.Helper()
	logf, err := os.CreateTemp(t.TempDir(), "daemon-*.log")
	if err != nil {
		t.Fatal(err)
	}
	full := append([]string{"--net=" + netns.Path(), bin}, args...)
	cmd := exec.Command("nsenter", full...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	d := &Daemon{LogPath: logf.Name(), cmd: cmd, done: make(chan struct{})}
	err = StartTied(cmd, func(err error) {
		d.err = err
		logf.Close()
		close(d.done)
	})
	if err != nil {
		logf.Close()
		t.Fatalf("start %s in %s: %v", bin, netns.Path(), err)
	}
	t.Cleanup(func() {
		if _, err := d.Stop(15 * time.Second); err != nil {
			t.Errorf("stop %s: %v", bin, err)
		}
		if t.Failed() {
			t.Logf("log of %s %s:\n%s", bin, strings.Join(args, " "), d.Log())
		}
	})
	return d
}

// Pid is the process ID (nsenter execs the daemon, so it is the daemon's).
func (d *Daemon) Pid() int { return d.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (d *Daemon) Exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// Log returns what the daemon has written so far.
func (d *Daemon) Log() string {
	b, _ := os.ReadFile(d.LogPath)
	return string(b)
}

// Stop sends SIGTERM and waits up to grace for the process to exit, then
// kills it. It returns the exit code (-1 when killed by a signal); calling
// it again returns the first result.
func (d *Daemon) Stop(grace time.Duration) (int, error) {
	if !d.Exited() {
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(grace):
			_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
			<-d.done
			return -1, fmt.Errorf("did not exit within %s of SIGTERM; killed", grace)
		}
	}
	var exit *exec.ExitError
	if errors.As(d.err, &exit) {
		return exit.ExitCode(), nil
	}
	if d.err != nil {
		return -1, d.err
	}
	return 0, nil
}
