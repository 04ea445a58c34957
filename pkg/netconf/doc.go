// Package netconf is vethroute's network configuration schema: the NetConf
// type the plugin reads and the agent writes, its defaults and limits, and
// the Load that decodes and validates it for both.
package netconf
