// Package agent wires together vethroute-agent, the per-node daemon that
// turns the cluster's Node objects into what the vethroute plugin needs on
// each node: the node's CNI configuration (its pod subnets as the plugin's
// address ranges) and the routes toward every other node's pod subnets
// through that node's InternalIP, as the article's routers have by hand.
//
// Run creates the agent's parts from its Options, starts them and stops
// them when its context ends. Each part is a package of its own:
//
//   - nodesync: the Node controller, which computes the desired routes,
//     conflist and masquerade set from the informer's cache and applies
//     them;
//   - cniconf: renders and atomically writes the conflist, and installs
//     the plugin binary (vethroute-agent install-cni);
//   - masquerade: the nftables table that masquerades traffic leaving the
//     cluster's pod CIDRs;
//   - monitor: Prometheus metrics and the health and readiness endpoints;
//   - reaperhost: the reaper server that deletes host veths for the
//     plugin.
package agent
