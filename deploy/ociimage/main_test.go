package main

import (
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/vethroute/vethroute/internal/ociimage"
)

func TestParseFile(t *testing.T) {
	tests := []struct {
		in      string
		want    ociimage.File
		wantErr bool
	}{
		{in: "bin/a=/a", want: ociimage.File{Src: "bin/a", Dst: "/a", Mode: 0o755}},
		{in: "bin/a=/etc/a:0644", want: ociimage.File{Src: "bin/a", Dst: "/etc/a", Mode: 0o644}},
		{in: "bin/a=a", wantErr: true},
		{in: "bin/a", wantErr: true},
		{in: "bin/a=/a:rw", wantErr: true},
	}
	for _, tc := range tests {
		got, err := parseFile(tc.in)
		if (err != nil) != tc.wantErr || (!tc.wantErr && (got.Src != tc.want.Src || got.Dst != tc.want.Dst || got.Mode != tc.want.Mode || got.Data != nil)) {
			t.Errorf("parseFile(%q) = %+v, %v", tc.in, got, err)
		}
	}
}

// TestWalkRoot: a staged root keeps its files, links, empty directories and
// modes, and refuses what an image must not hold.
func TestWalkRoot(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"bin", "tmp", "var/empty"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(dir, "tmp"), 0o1777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin/busybox"), []byte("bb"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("busybox", filepath.Join(dir, "bin/sh")); err != nil {
		t.Fatal(err)
	}
	files, err := walkRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]ociimage.File{}
	var names []string
	for _, f := range files {
		got[f.Dst] = f
		names = append(names, f.Dst)
	}
	slices.Sort(names)
	if want := []string{"/bin", "/bin/busybox", "/bin/sh", "/tmp", "/var", "/var/empty"}; !slices.Equal(names, want) {
		t.Fatalf("entries %v, want %v", names, want)
	}
	if f := got["/bin/busybox"]; f.Src != filepath.Join(dir, "bin/busybox") || f.Mode != 0o755 || f.Dir || f.Link != "" {
		t.Errorf("/bin/busybox = %+v", f)
	}
	if f := got["/bin/sh"]; f.Link != "busybox" || f.Src != "" {
		t.Errorf("/bin/sh = %+v, want a link to busybox", f)
	}
	if f := got["/tmp"]; !f.Dir || f.Mode != 0o1777 {
		t.Errorf("/tmp = %+v, want a directory with mode 1777", f)
	}
	if f := got["/var/empty"]; !f.Dir || f.Mode != 0o755 {
		t.Errorf("/var/empty = %+v, want a directory with mode 755", f)
	}

	// A named pipe has no place in an image.
	if err := syscall.Mkfifo(filepath.Join(dir, "var/fifo"), 0o644); err != nil {
		t.Fatalf("make a named pipe: %v", err)
	}
	if _, err := walkRoot(dir); err == nil {
		t.Error("walkRoot accepted a named pipe")
	}
}
