// Package uplink finds the interface that carries a node address, and its
// MTU, in one network namespace.
package uplink
