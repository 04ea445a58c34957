package kindcluster

import (
	"fmt"
	"os"
	"strings"
)

// capNames are the capabilities by number, as docker's --cap-drop names them.
var capNames = []string{
	"CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
	"SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
	"IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
	"SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
	"LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
	"WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
}

// missingCapabilities names the capabilities this machine withholds from
// root (absent from our bounding set though the kernel has them). The
// Docker engine runs under the same limit, so a --privileged container,
// which asks for all of them, cannot start; the shim drops these instead.
func missingCapabilities() (string, error) {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "", fmt.Errorf("read capability bounding set: %w", err)
	}
	var bnd uint64
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "CapBnd:"); ok {
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%x", &bnd); err != nil {
				return "", fmt.Errorf("parse CapBnd %q: %w", v, err)
			}
		}
	}
	lastRaw, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return "", fmt.Errorf("read cap_last_cap: %w", err)
	}
	var last int
	if _, err := fmt.Sscanf(strings.TrimSpace(string(lastRaw)), "%d", &last); err != nil {
		return "", fmt.Errorf("parse cap_last_cap %q: %w", lastRaw, err)
	}
	return capsMissing(bnd, last), nil
}

// capsMissing names the capabilities 0..last that the bounding set bnd
// lacks, space-separated, as the shim's VETHROUTE_KIND_CAP_DROP takes them.
func capsMissing(bnd uint64, last int) string {
	var missing []string
	for i := 0; i <= last && i < len(capNames); i++ {
		if bnd&(1<<uint(i)) == 0 {
			missing = append(missing, capNames[i])
		}
	}
	return strings.Join(missing, " ")
}
