package testutil

import (
	"os/exec"
	"runtime"
)

// StartTied starts cmd, which must set SysProcAttr.Pdeathsig, so that the
// signal follows the death of the test binary and nothing else, and calls
// exited with cmd.Wait's error once the process is gone.
//
// The kernel sends Pdeathsig when the thread that forked the child ends, not
// the process, and Go ends threads (testutils.NewNS ends one on purpose). So
// the fork happens on a thread locked to a goroutine that lives until the
// child exits.
func StartTied(cmd *exec.Cmd, exited func(error)) error {
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		exited(cmd.Wait())
	}()
	return <-started
}
