// Package kindcluster creates, waits for and deletes a kind cluster whose only CNI is vethroute, from the images test/kind/build.sh makes on this machine.
package kindcluster
