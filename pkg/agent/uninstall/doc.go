// Package uninstall removes from a node what vethroute put there: its CNI
// configuration, the plugin binaries it installed, its routes, its nftables
// tables (masquerade, network policy) and its reaper socket, keeping the
// IPAM store unless asked.
package uninstall
