// Package netpoldiff checks the agent's NetworkPolicy enforcement against an
// evaluator written from the networking.k8s.io/v1 API reference alone: for
// seeded random policies, pods and packets, the kernel's verdict on real
// connections between namespaces must equal the evaluator's.
package netpoldiff
