// Package buildinfo holds what the build stamps into vethroute's binaries.
package buildinfo

// Version is the release the binary was built from, set at link time:
//
//	-ldflags '-X github.com/vethroute/vethroute/internal/buildinfo.Version=v1.2.3'
var Version = "dev"
