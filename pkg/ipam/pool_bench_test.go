package ipam

import (
	"fmt"
	"testing"
)

// BenchmarkAllocateRelease measures one ADD's and one DEL's worth of store
// work with a node already holding N reservations: the figures must not grow
// with N (issue: allocation does not slow down as a node fills).
func BenchmarkAllocateRelease(b *testing.B) {
	for _, held := range []int{10, 1000} {
		b.Run(fmt.Sprintf("held=%d", held), func(b *testing.B) {
			p := openPool(b, b.TempDir(), rangeSet(b, "10.20.0.0/20"))
			for i := range held {
				if _, err := p.Allocate(owner(i), nil); err != nil {
					b.Fatal(err)
				}
			}
			o := Owner{ContainerID: "bench", IfName: "eth0"}
			b.ResetTimer()
			for b.Loop() {
				if _, err := p.Allocate(o, nil); err != nil {
					b.Fatal(err)
				}
				if _, err := p.Release(o); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
