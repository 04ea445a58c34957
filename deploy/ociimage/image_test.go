package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// readTar returns the regular files of a tar by name, and all names in order.
func readTar(t *testing.T, data []byte) (map[string][]byte, []string) {
	t.Helper()
	files := map[string][]byte{}
	var names []string
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files, names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s owned by %d:%d, want root", h.Name, h.Uid, h.Gid)
		}
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[h.Name] = b
		}
	}
}

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func TestBuild(t *testing.T) {
	dir := t.TempDir()
	agent := filepath.Join(dir, "agent")
	plugin := filepath.Join(dir, "plugin")
	os.WriteFile(agent, []byte("agent-binary"), 0o755)
	os.WriteFile(plugin, []byte("plugin-binary"), 0o755)
	spec := Spec{
		Name: "vethroute:dev", Arch: "amd64", Created: time.Unix(1700000000, 0).UTC(),
		Entrypoint: []string{"/vethroute-agent"},
		Labels:     map[string]string{"org.opencontainers.image.source": "vethroute"},
		Files: []File{
			{Src: plugin, Dst: "/opt/vethroute/bin/vethroute", Mode: 0o755},
			{Src: agent, Dst: "/vethroute-agent", Mode: 0o755},
		},
	}
	var out bytes.Buffer
	if err := Build(&out, spec); err != nil {
		t.Fatal(err)
	}
	files, _ := readTar(t, out.Bytes())

	// Every blob is stored under its own digest.
	for name, data := range files {
		if strings.HasPrefix(name, "blobs/sha256/") && digestOf(data) != "sha256:"+strings.TrimPrefix(name, "blobs/sha256/") {
			t.Errorf("blob %s does not match its digest", name)
		}
	}
	var index struct {
		Manifests []descriptor `json:"manifests"`
	}
	mustJSON(t, files["index.json"], &index)
	if len(index.Manifests) != 1 || index.Manifests[0].Annotations["io.containerd.image.name"] != "docker.io/library/vethroute:dev" ||
		index.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "dev" {
		t.Fatalf("index.json = %s", files["index.json"])
	}
	var man struct {
		Config descriptor   `json:"config"`
		Layers []descriptor `json:"layers"`
	}
	mustJSON(t, blobAt(t, files, index.Manifests[0].Digest), &man)
	var cfg struct {
		Architecture string `json:"architecture"`
		OS           string `json:"os"`
		Config       struct {
			Entrypoint []string
			Labels     map[string]string
		} `json:"config"`
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	mustJSON(t, blobAt(t, files, man.Config.Digest), &cfg)
	if cfg.Architecture != "amd64" || cfg.OS != "linux" || !slices.Equal(cfg.Config.Entrypoint, []string{"/vethroute-agent"}) || cfg.Config.Labels["org.opencontainers.image.source"] != "vethroute" {
		t.Errorf("config = %+v", cfg)
	}
	if len(man.Layers) != 1 || len(cfg.RootFS.DiffIDs) != 1 || cfg.RootFS.DiffIDs[0] != man.Layers[0].Digest {
		t.Fatalf("uncompressed layer: diff ID must equal the layer digest: %+v %+v", man.Layers, cfg.RootFS)
	}

	// docker load's view: manifest.json names the same config and layer.
	var dm []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	mustJSON(t, files["manifest.json"], &dm)
	if len(dm) != 1 || dm[0].Config != "blobs/sha256/"+strings.TrimPrefix(man.Config.Digest, "sha256:") ||
		!slices.Equal(dm[0].RepoTags, []string{"vethroute:dev"}) || len(dm[0].Layers) != 1 ||
		dm[0].Layers[0] != "blobs/sha256/"+strings.TrimPrefix(man.Layers[0].Digest, "sha256:") {
		t.Errorf("manifest.json = %s", files["manifest.json"])
	}

	// The layer holds the files with parent directories.
	layerFiles, layerNames := readTar(t, blobAt(t, files, man.Layers[0].Digest))
	if want := []string{"opt/", "opt/vethroute/", "opt/vethroute/bin/", "opt/vethroute/bin/vethroute", "vethroute-agent"}; !slices.Equal(layerNames, want) {
		t.Errorf("layer entries = %v, want %v", layerNames, want)
	}
	if string(layerFiles["vethroute-agent"]) != "agent-binary" || string(layerFiles["opt/vethroute/bin/vethroute"]) != "plugin-binary" {
		t.Error("layer file contents differ from the sources")
	}

	// Reproducible: the same inputs give the same bytes.
	var again bytes.Buffer
	if err := Build(&again, spec); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), again.Bytes()) {
		t.Error("two builds of the same inputs differ")
	}
}

func TestBuildRejects(t *testing.T) {
	f := filepath.Join(t.TempDir(), "f")
	os.WriteFile(f, nil, 0o644)
	tests := []struct {
		name string
		spec Spec
	}{
		{"missing source", Spec{Name: "x:y", Files: []File{{Src: "/nonexistent/x", Dst: "/x"}}}},
		{"duplicate destination", Spec{Name: "x:y", Files: []File{{Src: f, Dst: "/x"}, {Src: f, Dst: "/x"}}}},
		{"bad name", Spec{Name: "x@sha256:00", Files: []File{{Src: f, Dst: "/x"}}}},
	}
	for _, tc := range tests {
		if err := Build(io.Discard, tc.spec); err == nil {
			t.Errorf("%s: Build succeeded", tc.name)
		}
	}
}

func TestNames(t *testing.T) {
	tests := []struct{ in, repo, tag, full string }{
		{"vethroute:dev", "vethroute", "dev", "docker.io/library/vethroute"},
		{"vethroute", "vethroute", "latest", "docker.io/library/vethroute"},
		{"example/vethroute:v1", "example/vethroute", "v1", "docker.io/example/vethroute"},
		{"localhost:5000/vethroute:v1", "localhost:5000/vethroute", "v1", "localhost:5000/vethroute"},
		{"registry.local/team/vethroute", "registry.local/team/vethroute", "latest", "registry.local/team/vethroute"},
	}
	for _, tc := range tests {
		repo, tag, err := splitName(tc.in)
		if err != nil || repo != tc.repo || tag != tc.tag || fullName(repo) != tc.full {
			t.Errorf("%s: %s %s %s (%v), want %s %s %s", tc.in, repo, tag, fullName(repo), err, tc.repo, tc.tag, tc.full)
		}
	}
}

func TestParseFile(t *testing.T) {
	tests := []struct {
		in      string
		want    File
		wantErr bool
	}{
		{in: "bin/a=/a", want: File{Src: "bin/a", Dst: "/a", Mode: 0o755}},
		{in: "bin/a=/etc/a:0644", want: File{Src: "bin/a", Dst: "/etc/a", Mode: 0o644}},
		{in: "bin/a=a", wantErr: true},
		{in: "bin/a", wantErr: true},
		{in: "bin/a=/a:rw", wantErr: true},
	}
	for _, tc := range tests {
		got, err := parseFile(tc.in)
		if (err != nil) != tc.wantErr || (!tc.wantErr && got != tc.want) {
			t.Errorf("parseFile(%q) = %+v, %v", tc.in, got, err)
		}
	}
}

func mustJSON(t *testing.T, data []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%v: %s", err, data)
	}
}

func blobAt(t *testing.T, files map[string][]byte, digest string) []byte {
	t.Helper()
	b, ok := files["blobs/sha256/"+strings.TrimPrefix(digest, "sha256:")]
	if !ok {
		t.Fatalf("no blob %s", digest)
	}
	return b
}
