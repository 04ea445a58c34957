// Package netpol compiles Kubernetes NetworkPolicies for the pods on one node into an nftables table of vethroute's own and keeps that table in sync.
package netpol
