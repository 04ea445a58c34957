package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"

	"github.com/vethroute/vethroute/pkg/netconf"
)

// maxLogSize bounds logFile: past it the file is renamed to logFile.1
// (replacing the previous one) and a new one started, so that a busy node
// keeps at most twice this much. A var so tests can make it small.
var maxLogSize int64 = 10 << 20

// newLogger returns the plugin's logger. It writes to logFile when one is set
// (appending, mode 0600) and to stderr otherwise; stdout carries only the
// CNI result or error. A log file that cannot be opened falls back to stderr
// rather than failing the verb: logging must never break pod networking.
func newLogger(conf *netconf.NetConf, args ...any) (*slog.Logger, io.Closer) {
	level, _ := netconf.ParseLevel(conf.LogLevel, netconf.DefaultLogLevel)
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
