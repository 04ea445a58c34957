// Package masquerade rewrites the source address of pod traffic leaving the
// cluster's pod CIDRs to the node's, in an nftables table of its own.
package masquerade
