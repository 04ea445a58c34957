package netconf

import (
	"fmt"
	"log/slog"
	"strings"
)

// ParseLevel maps a log level name (logLevel, the agent's --log-level) to a
// slog level; the empty string is def, each program's own default.
func ParseLevel(s string, def slog.Level) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "":
		return def, nil
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("%q is not one of debug, info, warn, error", s)
}
