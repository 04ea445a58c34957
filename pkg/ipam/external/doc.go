// Package external is the ipam.Allocator of an IPAM plugin found in
// CNI_PATH (host-local, dhcp, whereabouts), exec'd for each call with the
// runtime's configuration and environment.
package external
