package agent

import (
	"fmt"
	"io"
	"log/slog"

	"github.com/vethroute/vethroute/pkg/netconf"
)

// ParseLevel maps a --log-level value to a slog level with netconf's
// parser; the agent's default is info, since it runs once per node.
func ParseLevel(s string) (slog.Level, error) {
	lv, err := netconf.ParseLevel(s, slog.LevelInfo)
	if err != nil {
		return 0, fmt.Errorf("--log-level %w", err)
	}
	return lv, nil
}

// NewLogger returns the agent's structured logger writing to w in the
// given format ("text" or "json").
func NewLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	lv, err := ParseLevel(level)
	if err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}
