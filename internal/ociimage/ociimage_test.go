package ociimage

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// readTar returns the regular files of a tar by name and all names in
// order, failing on an entry not owned by root, not dated mtime, or listed
// before its directory. A symbolic link is returned as a file whose content
// is "-> target".
func readTar(t *testing.T, data []byte, mtime time.Time) (map[string][]byte, []string) {
	t.Helper()
	files := map[string][]byte{}
	dirs := map[string]bool{}
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
		if !h.ModTime.Equal(mtime) {
			t.Errorf("%s dated %v, want %v", h.Name, h.ModTime, mtime)
		}
		if i := strings.LastIndex(strings.TrimSuffix(h.Name, "/"), "/"); i > 0 && !dirs[h.Name[:i]] {
			t.Errorf("%s comes before its directory %s", h.Name, h.Name[:i])
		}
		switch h.Typeflag {
		case tar.TypeDir:
			dirs[strings.TrimSuffix(h.Name, "/")] = true
		case tar.TypeReg:
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[h.Name] = b
		case tar.TypeSymlink:
			files[h.Name] = []byte("-> " + h.Linkname)
		default:
			t.Errorf("%s has type %c, want a file or a directory", h.Name, h.Typeflag)
		}
	}
}

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// image is an archive read back as an importer would: index -> manifest ->
// config and layer, every digest and size checked on the way.
type image struct {
	index struct {
		Manifests []descriptor `json:"manifests"`
	}
	config struct {
		Architecture string `json:"architecture"`
		OS           string `json:"os"`
		Created      string `json:"created"`
		Config       struct {
			Entrypoint []string
			Cmd        []string
			Labels     map[string]string
		} `json:"config"`
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	// dockerManifest is manifest.json, docker load's view.
	dockerManifest []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	layerFiles map[string][]byte
	layerNames []string
}

func readImage(t *testing.T, archive []byte, mtime time.Time) *image {
	t.Helper()
	files, _ := readTar(t, archive, mtime)
	if string(files["oci-layout"]) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout = %q", files["oci-layout"])
	}
	// Every blob is stored under its own digest.
	for name, data := range files {
		if strings.HasPrefix(name, "blobs/sha256/") && digestOf(data) != "sha256:"+strings.TrimPrefix(name, "blobs/sha256/") {
			t.Errorf("blob %s does not match its digest", name)
		}
	}
	blob := func(d descriptor) []byte {
		t.Helper()
		b, ok := files["blobs/sha256/"+strings.TrimPrefix(d.Digest, "sha256:")]
		if !ok {
			t.Fatalf("no blob %s", d.Digest)
		}
		if int64(len(b)) != d.Size {
			t.Fatalf("blob %s is %d bytes, descriptor says %d", d.Digest, len(b), d.Size)
		}
		return b
	}
	var img image
	mustJSON(t, files["index.json"], &img.index)
	if len(img.index.Manifests) != 1 {
		t.Fatalf("index.json = %s, want one manifest", files["index.json"])
	}
	var man struct {
		Config descriptor   `json:"config"`
		Layers []descriptor `json:"layers"`
	}
	mustJSON(t, blob(img.index.Manifests[0]), &man)
	mustJSON(t, blob(man.Config), &img.config)
	if len(man.Layers) != 1 || len(img.config.RootFS.DiffIDs) != 1 || img.config.RootFS.DiffIDs[0] != man.Layers[0].Digest {
		t.Fatalf("uncompressed layer: diff ID must equal the layer digest: %+v %+v", man.Layers, img.config.RootFS)
	}
	// manifest.json names the same config and layer.
	mustJSON(t, files["manifest.json"], &img.dockerManifest)
	if len(img.dockerManifest) != 1 || img.dockerManifest[0].Config != "blobs/sha256/"+strings.TrimPrefix(man.Config.Digest, "sha256:") ||
		len(img.dockerManifest[0].Layers) != 1 || img.dockerManifest[0].Layers[0] != "blobs/sha256/"+strings.TrimPrefix(man.Layers[0].Digest, "sha256:") {
		t.Errorf("manifest.json = %s", files["manifest.json"])
	}
	img.layerFiles, img.layerNames = readTar(t, blob(man.Layers[0]), mtime)
	return &img
}

func TestBuild(t *testing.T) {
	dir := t.TempDir()
	agent := filepath.Join(dir, "agent")
	plugin := filepath.Join(dir, "plugin")
	os.WriteFile(agent, []byte("agent-binary"), 0o755)
	os.WriteFile(plugin, []byte("plugin-binary"), 0o755)
	created := time.Unix(1700000000, 0).UTC()
	spec := Spec{
		Name: "vethroute:dev", Arch: "arm64", Created: created,
		Entrypoint: []string{"/vethroute-agent"},
		Labels:     map[string]string{"org.opencontainers.image.source": "vethroute"},
		Files: []File{
			{Src: plugin, Dst: "/opt/vethroute/bin/vethroute", Mode: 0o755},
			{Src: agent, Dst: "/vethroute-agent", Mode: 0o755},
			{Data: []byte("k=v"), Dst: "/etc/vethroute/conf", Mode: 0o644},
		},
	}
	var out bytes.Buffer
	if err := Build(&out, spec); err != nil {
		t.Fatal(err)
	}
	img := readImage(t, out.Bytes(), created)

	md := img.index.Manifests[0]
	if md.Annotations["io.containerd.image.name"] != "docker.io/library/vethroute:dev" || md.Annotations["org.opencontainers.image.ref.name"] != "dev" {
		t.Errorf("manifest annotations = %v", md.Annotations)
	}
	if md.Platform == nil || *md.Platform != (platform{Architecture: "arm64", OS: "linux"}) {
		t.Errorf("manifest platform = %+v, want arm64/linux", md.Platform)
	}
	cfg := img.config
	if cfg.Architecture != "arm64" || cfg.OS != "linux" || cfg.Created != "2023-11-14T22:13:20Z" ||
		!slices.Equal(cfg.Config.Entrypoint, []string{"/vethroute-agent"}) || cfg.Config.Labels["org.opencontainers.image.source"] != "vethroute" {
		t.Errorf("config = %+v", cfg)
	}
	if !slices.Equal(img.dockerManifest[0].RepoTags, []string{"vethroute:dev"}) {
		t.Errorf("manifest.json RepoTags = %v", img.dockerManifest[0].RepoTags)
	}

	// The layer holds the files, read from Src or taken from Data, after
	// their parent directories.
	want := []string{"etc/", "etc/vethroute/", "opt/", "opt/vethroute/", "opt/vethroute/bin/", "etc/vethroute/conf", "opt/vethroute/bin/vethroute", "vethroute-agent"}
	if !slices.Equal(img.layerNames, want) {
		t.Errorf("layer entries = %v, want %v", img.layerNames, want)
	}
	if string(img.layerFiles["vethroute-agent"]) != "agent-binary" || string(img.layerFiles["opt/vethroute/bin/vethroute"]) != "plugin-binary" ||
		string(img.layerFiles["etc/vethroute/conf"]) != "k=v" {
		t.Error("layer file contents differ from the sources")
	}

	// Reproducible: the same inputs give the same bytes, in any order.
	slices.Reverse(spec.Files)
	var again bytes.Buffer
	if err := Build(&again, spec); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), again.Bytes()) {
		t.Error("two builds of the same inputs differ")
	}
}

// TestBuildDefaults builds an image from memory alone, as the containerd
// e2e harness does for its pause image.
func TestBuildDefaults(t *testing.T) {
	tests := []struct {
		name     string
		spec     Spec
		fullName string
	}{
		{"one file", Spec{Name: "docker.io/vethroute/pause:e2e", Entrypoint: []string{"/pause"},
			Files: []File{{Dst: "/pause", Mode: 0o755, Data: []byte("\x7fELF not really")}}}, "docker.io/vethroute/pause:e2e"},
		{"nested and empty files under a registry with a port", Spec{Name: "localhost:5000/x/y:v1", Entrypoint: []string{"/bin/app"},
			Files: []File{{Dst: "/bin/app", Mode: 0o755, Data: []byte("app")}, {Dst: "/etc/app/empty", Mode: 0o644}}}, "localhost:5000/x/y:v1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := Build(&out, tc.spec); err != nil {
				t.Fatal(err)
			}
			// A zero Created is the Unix epoch, an empty Arch this machine's.
			img := readImage(t, out.Bytes(), time.Unix(0, 0))
			md := img.index.Manifests[0]
			if got := md.Annotations["io.containerd.image.name"]; got != tc.fullName {
				t.Errorf("image name annotation = %q, want %q", got, tc.fullName)
			}
			if md.Platform == nil || *md.Platform != (platform{Architecture: runtime.GOARCH, OS: "linux"}) {
				t.Errorf("manifest platform = %+v, want %s/linux", md.Platform, runtime.GOARCH)
			}
			if img.config.Architecture != runtime.GOARCH || img.config.Created != "1970-01-01T00:00:00Z" {
				t.Errorf("config architecture %q, created %q", img.config.Architecture, img.config.Created)
			}
			if !slices.Equal(img.config.Config.Entrypoint, tc.spec.Entrypoint) {
				t.Errorf("entrypoint = %v, want %v", img.config.Config.Entrypoint, tc.spec.Entrypoint)
			}
			if len(img.layerFiles) != len(tc.spec.Files) {
				t.Errorf("layer has files %v, want %d", img.layerNames, len(tc.spec.Files))
			}
			for _, f := range tc.spec.Files {
				if got, ok := img.layerFiles[strings.TrimPrefix(f.Dst, "/")]; !ok || !bytes.Equal(got, f.Data) {
					t.Errorf("layer file %s = %q (present %v), want %q", f.Dst, got, ok, f.Data)
				}
			}
			var again bytes.Buffer
			if err := Build(&again, tc.spec); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), again.Bytes()) {
				t.Error("two builds of the same inputs differ")
			}
		})
	}
}

// TestBuildLinksAndDirs builds a busybox-like image: links to one binary,
// an empty directory with its own mode, and default arguments.
func TestBuildLinksAndDirs(t *testing.T) {
	spec := Spec{
		Name: "busybox:test", Cmd: []string{"sh"},
		Files: []File{
			{Dst: "/bin/busybox", Mode: 0o755, Data: []byte("busybox")},
			{Dst: "/bin/sh", Link: "busybox"},
			{Dst: "/usr/bin/nc", Link: "/bin/busybox"},
			{Dst: "/tmp", Dir: true, Mode: 0o1777},
			{Dst: "/etc", Dir: true, Mode: 0o700},
			{Dst: "/etc/passwd", Mode: 0o644, Data: []byte("root:x:0:0::/:/bin/sh\n")},
		},
	}
	var out bytes.Buffer
	if err := Build(&out, spec); err != nil {
		t.Fatal(err)
	}
	img := readImage(t, out.Bytes(), time.Unix(0, 0))
	if !slices.Equal(img.config.Config.Cmd, []string{"sh"}) || img.config.Config.Entrypoint != nil {
		t.Errorf("config entrypoint %v, cmd %v; want none and [sh]", img.config.Config.Entrypoint, img.config.Config.Cmd)
	}
	want := []string{"bin/", "etc/", "tmp/", "usr/", "usr/bin/", "bin/busybox", "bin/sh", "etc/passwd", "usr/bin/nc"}
	if !slices.Equal(img.layerNames, want) {
		t.Errorf("layer entries = %v, want %v", img.layerNames, want)
	}
	if got := string(img.layerFiles["bin/sh"]); got != "-> busybox" {
		t.Errorf("bin/sh is %q, want a link to busybox", got)
	}
	if got := string(img.layerFiles["usr/bin/nc"]); got != "-> /bin/busybox" {
		t.Errorf("usr/bin/nc is %q, want a link to /bin/busybox", got)
	}
	modes := map[string]int64{}
	tr := tar.NewReader(bytes.NewReader(layerOf(t, out.Bytes())))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		modes[h.Name] = h.Mode
	}
	for name, mode := range map[string]int64{"tmp/": 0o1777, "etc/": 0o700, "bin/": 0o755, "bin/busybox": 0o755} {
		if modes[name] != mode {
			t.Errorf("%s has mode %o, want %o", name, modes[name], mode)
		}
	}
}

// layerOf returns the layer blob of a one-layer archive.
func layerOf(t *testing.T, archive []byte) []byte {
	t.Helper()
	files, _ := readTar(t, archive, time.Unix(0, 0))
	var dm []struct{ Layers []string }
	mustJSON(t, files["manifest.json"], &dm)
	return files[dm[0].Layers[0]]
}

func TestBuildRejects(t *testing.T) {
	f := filepath.Join(t.TempDir(), "f")
	os.WriteFile(f, nil, 0o644)
	tests := []struct {
		name    string
		spec    Spec
		wantErr string
	}{
		{"missing source", Spec{Name: "x:y", Files: []File{{Src: "/nonexistent/x", Dst: "/x"}}}, "read /nonexistent/x"},
		{"duplicate destination", Spec{Name: "x:y", Files: []File{{Src: f, Dst: "/x"}, {Data: []byte("x"), Dst: "/x"}}}, "two files at /x"},
		{"file and directory", Spec{Name: "x:y", Files: []File{{Src: f, Dst: "/x"}, {Src: f, Dst: "/x/y"}}}, "both a file and a directory"},
		{"bad name", Spec{Name: "x@sha256:00", Files: []File{{Src: f, Dst: "/x"}}}, "not name[:tag]"},
		{"empty tag", Spec{Name: "pause:", Files: []File{{Src: f, Dst: "/x"}}}, "not name[:tag]"},
		{"no files", Spec{Name: "pause:e2e"}, "no files"},
		{"relative destination", Spec{Name: "x:y", Files: []File{{Data: []byte("x"), Dst: "pause"}}}, "absolute, clean"},
		{"escaping destination", Spec{Name: "x:y", Files: []File{{Data: []byte("x"), Dst: "/../pause"}}}, "absolute, clean"},
		{"root destination", Spec{Name: "x:y", Files: []File{{Data: []byte("x"), Dst: "/"}}}, "absolute, clean"},
		{"both Src and Data", Spec{Name: "x:y", Files: []File{{Src: f, Data: []byte("x"), Dst: "/x"}}}, "both Src and Data"},
		{"link with data", Spec{Name: "x:y", Files: []File{{Data: []byte("x"), Link: "y", Dst: "/x"}}}, "a link or directory"},
		{"directory with source", Spec{Name: "x:y", Files: []File{{Src: f, Dir: true, Dst: "/x"}}}, "a link or directory"},
		{"link and directory", Spec{Name: "x:y", Files: []File{{Link: "y", Dir: true, Dst: "/x"}}}, "a link or directory"},
		{"directory and file", Spec{Name: "x:y", Files: []File{{Dir: true, Dst: "/x"}, {Data: []byte("x"), Dst: "/x"}}}, "two files at /x"},
		{"link above a file", Spec{Name: "x:y", Files: []File{{Link: "/bin", Dst: "/x"}, {Data: []byte("x"), Dst: "/x/y"}}}, "both a file and a directory"},
	}
	for _, tc := range tests {
		var out bytes.Buffer
		err := Build(&out, tc.spec)
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: Build() error = %v, want one containing %q", tc.name, err, tc.wantErr)
		}
		if out.Len() != 0 {
			t.Errorf("%s: Build wrote %d bytes before failing", tc.name, out.Len())
		}
	}
}

func TestNames(t *testing.T) {
	tests := []struct{ in, repo, tag, full string }{
		{"vethroute:dev", "vethroute", "dev", "docker.io/library/vethroute"},
		{"vethroute", "vethroute", "latest", "docker.io/library/vethroute"},
		{"example/vethroute:v1", "example/vethroute", "v1", "docker.io/example/vethroute"},
		{"docker.io/vethroute/pause:e2e", "docker.io/vethroute/pause", "e2e", "docker.io/vethroute/pause"},
		{"localhost:5000/vethroute:v1", "localhost:5000/vethroute", "v1", "localhost:5000/vethroute"},
		{"localhost:5000/vethroute", "localhost:5000/vethroute", "latest", "localhost:5000/vethroute"},
		{"registry.local/team/vethroute", "registry.local/team/vethroute", "latest", "registry.local/team/vethroute"},
	}
	for _, tc := range tests {
		repo, tag, err := splitName(tc.in)
		if err != nil || repo != tc.repo || tag != tc.tag || fullName(repo) != tc.full {
			t.Errorf("%s: %s %s %s (%v), want %s %s %s", tc.in, repo, tag, fullName(repo), err, tc.repo, tc.tag, tc.full)
		}
	}
}

func mustJSON(t *testing.T, data []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%v: %s", err, data)
	}
}
