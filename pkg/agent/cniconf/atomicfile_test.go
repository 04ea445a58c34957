package cniconf

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFileAtomic(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "net.d")
	path := filepath.Join(dir, "10-vethroute.conflist")
	steps := []struct {
		content   string
		wantWrite bool
	}{
		{"one\n", true},  // creates the directory and the file
		{"one\n", false}, // same content: untouched
		{"two\n", true},
		{"two\n", false},
	}
	var lastIno uint64
	for i, s := range steps {
		wrote, err := WriteFileAtomic(path, []byte(s.content), 0o644)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if wrote != s.wantWrite {
			t.Errorf("step %d: wrote = %v, want %v", i, wrote, s.wantWrite)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != s.content {
			t.Fatalf("step %d: file = %q (%v), want %q", i, got, err, s.content)
		}
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o644 {
			t.Errorf("step %d: mode %v, want 0644", i, st.Mode().Perm())
		}
		ino := inode(t, st)
		// A write replaces the file by rename (new inode); no write
		// keeps the very same file.
		if i > 0 && (ino != lastIno) != s.wantWrite {
			t.Errorf("step %d: inode changed = %v, want %v", i, ino != lastIno, s.wantWrite)
		}
		lastIno = ino
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %v, want only the conflist (no temporary files)", names)
	}
}

func TestWriteFileAtomicUnwritableDir(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// A regular file where the directory should be.
	if _, err := WriteFileAtomic(filepath.Join(f, "x.conflist"), []byte("x"), 0o644); err == nil {
		t.Fatal("write under a regular file succeeded")
	}
}
