package testutil

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"strings"
	"testing"
)

func TestWriteOCIArchive(t *testing.T) {
	pause := OCIFile{Path: "pause", Mode: 0o755, Data: []byte("\x7fELF not really")}
	tests := []struct {
		name    string
		img     OCIImage
		wantErr string
		// wantFiles are the layer's regular files (path -> data).
		wantFiles map[string]string
	}{
		{
			name:      "one file",
			img:       OCIImage{Ref: "docker.io/vethroute/pause:e2e", Entrypoint: []string{"/pause"}, Files: []OCIFile{pause}},
			wantFiles: map[string]string{"pause": string(pause.Data)},
		},
		{
			name: "nested files under a registry with a port",
			img: OCIImage{Ref: "localhost:5000/x/y:v1", Entrypoint: []string{"/bin/app"}, Files: []OCIFile{
				{Path: "bin/app", Mode: 0o755, Data: []byte("app")},
				{Path: "etc/app/conf", Mode: 0o644, Data: []byte("k=v")},
			}},
			wantFiles: map[string]string{"bin/app": "app", "etc/app/conf": "k=v"},
		},
		{name: "no tag", img: OCIImage{Ref: "docker.io/vethroute/pause", Files: []OCIFile{pause}}, wantErr: "needs a name and a tag"},
		{name: "port but no tag", img: OCIImage{Ref: "localhost:5000/pause", Files: []OCIFile{pause}}, wantErr: "needs a name and a tag"},
		{name: "empty tag", img: OCIImage{Ref: "pause:", Files: []OCIFile{pause}}, wantErr: "needs a name and a tag"},
		{name: "no files", img: OCIImage{Ref: "pause:e2e"}, wantErr: "has no files"},
		{name: "absolute path", img: OCIImage{Ref: "pause:e2e", Files: []OCIFile{{Path: "/pause", Data: []byte("x")}}}, wantErr: "relative and clean"},
		{name: "escaping path", img: OCIImage{Ref: "pause:e2e", Files: []OCIFile{{Path: "../pause", Data: []byte("x")}}}, wantErr: "relative and clean"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := WriteOCIArchive(&buf, tc.img)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("WriteOCIArchive() error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var again bytes.Buffer
			if err := WriteOCIArchive(&again, tc.img); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf.Bytes(), again.Bytes()) {
				t.Error("two writes of the same image differ; digests would not be reproducible")
			}
			checkArchive(t, buf.Bytes(), tc.img, tc.wantFiles)
		})
	}
}

// checkArchive reads an archive back as an importer would: index ->
// manifest -> config and layer, verifying every digest on the way.
func checkArchive(t *testing.T, archive []byte, img OCIImage, wantFiles map[string]string) {
	t.Helper()
	files := untar(t, archive)
	if files["oci-layout"] == "" {
		t.Fatal("no oci-layout file")
	}
	for name, data := range files {
		hexDigest, ok := strings.CutPrefix(name, "blobs/sha256/")
		if !ok {
			continue
		}
		sum := sha256.Sum256([]byte(data))
		if hex.EncodeToString(sum[:]) != hexDigest {
			t.Errorf("blob %s has digest %x", name, sum)
		}
	}
	blob := func(d ociDescriptor) string {
		t.Helper()
		data, ok := files[blobPath(d)]
		if !ok {
			t.Fatalf("descriptor %s has no blob", d.Digest)
		}
		if int64(len(data)) != d.Size {
			t.Fatalf("blob %s is %d bytes, descriptor says %d", d.Digest, len(data), d.Size)
		}
		return data
	}

	var index struct {
		Manifests []ociDescriptor `json:"manifests"`
	}
	mustUnmarshal(t, files["index.json"], &index)
	if len(index.Manifests) != 1 {
		t.Fatalf("index has %d manifests, want 1", len(index.Manifests))
	}
	m := index.Manifests[0]
	if got := m.Annotations[annotationImageName]; got != img.Ref {
		t.Errorf("image name annotation = %q, want %q", got, img.Ref)
	}
	if got, want := m.Annotations[annotationRefName], img.Ref[strings.LastIndex(img.Ref, ":")+1:]; got != want {
		t.Errorf("ref name annotation = %q, want %q", got, want)
	}

	var manifest struct {
		Config ociDescriptor   `json:"config"`
		Layers []ociDescriptor `json:"layers"`
	}
	mustUnmarshal(t, blob(m), &manifest)
	if len(manifest.Layers) != 1 {
		t.Fatalf("manifest has %d layers, want 1", len(manifest.Layers))
	}
	var config struct {
		Config struct {
			Entrypoint []string `json:"Entrypoint"`
		} `json:"config"`
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	mustUnmarshal(t, blob(manifest.Config), &config)
	if strings.Join(config.Config.Entrypoint, " ") != strings.Join(img.Entrypoint, " ") {
		t.Errorf("entrypoint = %v, want %v", config.Config.Entrypoint, img.Entrypoint)
	}
	if len(config.RootFS.DiffIDs) != 1 || config.RootFS.DiffIDs[0] != manifest.Layers[0].Digest {
		t.Errorf("diff_ids = %v, want [%s] (the layer is uncompressed)", config.RootFS.DiffIDs, manifest.Layers[0].Digest)
	}

	layer := untar(t, []byte(blob(manifest.Layers[0])))
	if len(layer) != len(wantFiles) {
		t.Errorf("layer has files %v, want %v", layer, wantFiles)
	}
	for p, data := range wantFiles {
		if layer[p] != data {
			t.Errorf("layer file %s = %q, want %q", p, layer[p], data)
		}
	}
}

// untar returns the regular files of a tar stream, failing on a file whose
// directories are not listed before it.
func untar(t *testing.T, b []byte) map[string]string {
	t.Helper()
	files := map[string]string{}
	dirs := map[string]bool{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		if i := strings.LastIndex(strings.TrimSuffix(hdr.Name, "/"), "/"); i > 0 && !dirs[hdr.Name[:i]] {
			t.Errorf("%s comes before its directory %s", hdr.Name, hdr.Name[:i])
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			dirs[strings.TrimSuffix(hdr.Name, "/")] = true
		case tar.TypeReg:
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[hdr.Name] = string(data)
		}
	}
}

func mustUnmarshal(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("decode %q: %v", s, err)
	}
}
