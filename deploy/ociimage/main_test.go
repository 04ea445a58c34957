package main

import (
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
