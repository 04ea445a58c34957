// Package netpolicy enforces Kubernetes NetworkPolicy for the pods on the agent's node, feeding pkg/netpol from informers.
package netpolicy
