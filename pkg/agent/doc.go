// Package agent is the logic of vethroute-agent, the per-node daemon that
// turns the cluster's Node objects into what the vethroute plugin needs on
// each node: the node's CNI configuration (its pod subnets as the plugin's
// address ranges) and the routes toward every other node's pod subnets
// through that node's InternalIP, as the article's routers have by hand.
//
// It watches Nodes with a client-go shared informer and reconciles one level-
// triggered key: every change, and a periodic resync against drift, computes
// the whole desired state from the informer's cache and applies it. The
// cache keeps serving while the API server is away, so routes are kept (and
// repaired) through an API outage.
package agent
