// Package monitor serves the agent's Prometheus metrics and its health and
// readiness endpoints over HTTP, with limits against idle and slow clients.
package monitor
