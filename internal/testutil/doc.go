// Package testutil holds what vethroute's tests share, so that no test
// package carries its own copy:
//
//   - Namespaces: RequireRoot skips without root; NewNS makes a network
//     namespace that t.Cleanup removes, CreateNamedNS/RemoveNamedNS one
//     with a chosen name; RunIn, MustRunIn and Ping run commands inside one.
//   - Nodes and CNI invocation: NewNode is a namespace standing in for a
//     Kubernetes node with a libcni client (Add, Check, Del, GC, Status,
//     PluginGC) and views of its links, routes and reservations
//     (RequireClean); RunPlugin and StartPlugin exec a plugin directly with
//     CNIEnv and return its Outcome, CNI error included.
//   - Daemons and processes: StartDaemon runs a long-lived binary inside a
//     namespace and stops it at cleanup; StartTied starts a command that
//     dies with the test process.
//   - Networking into namespaces: ListenIn, ForwardTCP and HTTPClientIn
//     listen, forward and dial inside a namespace.
//   - Snapshots: NetSnapshot, TreeSnapshot and DiffLines compare a
//     namespace's or a directory's state before and after; SettleDAD waits
//     out IPv6 duplicate address detection first.
//   - Builds: Build and BuildStripped are the one way tests run `go build`
//     (cgo off, so the binaries are static). PluginDir and AgentBinary
//     return the binaries under test, from VETHROUTE_BIN_DIR when set;
//     ReferencePlugins the reference plugins go.mod pins; StaticBinaries
//     stripped builds for container images. A build made for one test is
//     removed by t.Cleanup; one shared by a test process, by Main, which
//     those packages call from TestMain.
//   - Benchmark commands: FindRepoRoot finds the checkout from the working
//     directory, LoadAvg reads the load averages printed beside figures.
package testutil
