// Package nodesync is the Node controller of vethroute-agent: it watches
// the cluster's Nodes and keeps one node's CNI configuration, its routes
// toward every other node's pod CIDRs and its masquerade rules in line with
// them, reporting each pod CIDR it refuses as an Event on that Node.
package nodesync
