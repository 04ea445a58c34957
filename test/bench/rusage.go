package main

import (
	"fmt"

	"github.com/containernetworking/plugins/pkg/ns"
)

// usage is the resource use of direct (no libcni) invocations of a plugin.
type usage struct {
	name             string
	addWall, delWall durations
	addCPU, delCPU   durations
	addUser, addSys  durations
	addRSS, delRSS   []int64
	errors           int
	firstErr         string
}

// runUsage executes each plugin's binary directly, n ADDs each followed by
// its DEL, alternating plugins, and records wait4's rusage of every process
// (wall and CPU time), then does the same under GNU time for the peak RSS.
func runUsage(drivers []*driver, conts []ns.NetNS, n int) []*usage {
	out := make([]*usage, len(drivers))
	for k, d := range drivers {
		out[k] = &usage{name: d.name}
	}
	for i := range n {
		for j := range drivers {
			k := (i + j) % len(drivers)
			d, u := drivers[k], out[k]
			cid := fmt.Sprintf("rusage-%d", i)
			a, err := d.exec("ADD", cid, conts[k])
			if err != nil {
				u.fail(err)
				_, _ = d.exec("DEL", cid, conts[k])
				continue
			}
			dl, err := d.exec("DEL", cid, conts[k])
			if err != nil {
				u.fail(err)
				continue
			}
			u.addWall, u.delWall = append(u.addWall, a.wall), append(u.delWall, dl.wall)
			u.addCPU, u.delCPU = append(u.addCPU, a.user+a.sys), append(u.delCPU, dl.user+dl.sys)
			u.addUser, u.addSys = append(u.addUser, a.user), append(u.addSys, a.sys)
			// Peak RSS needs a run of its own, under GNU time (see peakRSS).
			cid = fmt.Sprintf("rusage-rss-%d", i)
			ra, err := peakRSS(d.node, d.bin, d.cniEnv("ADD", cid, conts[k]), d.netconf)
			if err != nil {
				u.fail(err)
				_, _ = d.exec("DEL", cid, conts[k])
				continue
			}
			rd, err := peakRSS(d.node, d.bin, d.cniEnv("DEL", cid, conts[k]), d.netconf)
			if err != nil {
				u.fail(err)
				continue
			}
			u.addRSS, u.delRSS = append(u.addRSS, ra), append(u.delRSS, rd)
		}
	}
	return out
}

func (u *usage) fail(err error) {
	u.errors++
	if u.firstErr == "" {
		u.firstErr = err.Error()
	}
}

// maxInt64 returns the largest sample.
func maxInt64(v []int64) int64 {
	var m int64
	for _, x := range v {
		m = max(m, x)
	}
	return m
}
