// Package reaperhost runs the reaper server, which deletes host veths on
// the plugin's behalf, inside the agent or as a process of its own.
package reaperhost
