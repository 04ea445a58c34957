package cniconf

import (
	"os"
	"syscall"
	"testing"
)

func inode(t *testing.T, st os.FileInfo) uint64 {
	t.Helper()
	s, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		t.Fatal("no Stat_t")
	}
	return s.Ino
}
