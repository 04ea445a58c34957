// Package cniconf renders a node's CNI configuration list for the vethroute
// plugin from its Node's pod CIDRs, writes it atomically into the CNI
// configuration directory and installs the plugin binary beside the
// runtime's other plugins.
package cniconf
