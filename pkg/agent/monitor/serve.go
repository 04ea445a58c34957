package monitor

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"golang.org/x/net/netutil"
)

// HTTP limits of the health and metrics servers. Anything on the node, or
// any pod where the address is reachable, can connect: idle or slow
// connections are cut and their number capped, so that they cannot exhaust
// the agent's memory or descriptors. Health and metrics have separate
// servers, so connections to one never hold the other's slots.
const (
	maxHTTPConns      = 64
	httpHeaderTimeout = 5 * time.Second
	httpIOTimeout     = 10 * time.Second
	httpIdleTimeout   = 30 * time.Second
	httpMaxHeader     = 8 << 10
)

// Serve serves h on addr, with the limits above, until the returned
// server is shut down.
func Serve(addr string, h http.Handler, log *slog.Logger) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	srv := &http.Server{
		Addr:              ln.Addr().String(),
		Handler:           h,
		ReadHeaderTimeout: httpHeaderTimeout,
		ReadTimeout:       httpIOTimeout,
		WriteTimeout:      httpIOTimeout,
		IdleTimeout:       httpIdleTimeout,
		MaxHeaderBytes:    httpMaxHeader,
	}
	go func() {
		if err := srv.Serve(netutil.LimitListener(ln, maxHTTPConns)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("HTTP server stopped", "addr", srv.Addr, "err", err)
		}
	}()
	log.Info("serving HTTP", "addr", srv.Addr)
	return srv, nil
}
