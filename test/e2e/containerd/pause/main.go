// Command pause is the pod sandbox's process for the containerd end-to-end
// test: it holds the pod's namespaces open by sleeping until SIGTERM or
// SIGINT, and reaps any child re-parented to it, as PID 1 of a pod must.
// It stands in for registry.k8s.io/pause, which cannot be pulled here; it is
// built static (CGO_ENABLED=0) so the image needs no libc.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		reap()
	}
}

// reap collects every exited child without blocking; one SIGCHLD may stand
// for several exits, so it loops until none is left.
func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
