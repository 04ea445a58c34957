package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"
	"time"
)

// Media types of the OCI image spec.
const (
	mediaIndex    = "application/vnd.oci.image.index.v1+json"
	mediaManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaConfig   = "application/vnd.oci.image.config.v1+json"
	mediaLayer    = "application/vnd.oci.image.layer.v1.tar"
)

// File is one file of the image: read from Src, stored at Dst with Mode.
type File struct {
	Src, Dst string
	Mode     int64
}

// Spec describes the image to build.
type Spec struct {
	// Name is name:tag; a name without a registry is Docker Hub's
	// (docker.io/library/...), as docker and containerd read it.
	Name       string
	Arch       string
	Created    time.Time
	Entrypoint []string
	Labels     map[string]string
	Files      []File
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

type blob struct {
	digest string
	data   []byte
}

func newBlob(data []byte) blob {
	sum := sha256.Sum256(data)
	return blob{digest: "sha256:" + hex.EncodeToString(sum[:]), data: data}
}

func (b blob) path() string { return "blobs/sha256/" + strings.TrimPrefix(b.digest, "sha256:") }

func (b blob) descriptor(mediaType string) descriptor {
	return descriptor{MediaType: mediaType, Digest: b.digest, Size: int64(len(b.data))}
}

// Build writes the image archive to w.
func Build(w io.Writer, spec Spec) error {
	repo, tag, err := splitName(spec.Name)
	if err != nil {
		return err
	}
	layerData, err := layer(spec)
	if err != nil {
		return err
	}
	lay := newBlob(layerData)
	// The layer is stored uncompressed, so its digest is also its diff ID.
	cfgData, err := json.Marshal(map[string]any{
		"created":      spec.Created.Format(time.RFC3339),
		"architecture": spec.Arch,
		"os":           "linux",
		"config": map[string]any{
			"Entrypoint": spec.Entrypoint,
			"Env":        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			"Labels":     spec.Labels,
		},
		"rootfs":  map[string]any{"type": "layers", "diff_ids": []string{lay.digest}},
		"history": []map[string]string{{"created": spec.Created.Format(time.RFC3339), "created_by": "vethroute deploy/ociimage"}},
	})
	if err != nil {
		return err
	}
	cfg := newBlob(cfgData)
	manData, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaManifest,
		"config":        cfg.descriptor(mediaConfig),
		"layers":        []descriptor{lay.descriptor(mediaLayer)},
	})
	if err != nil {
		return err
	}
	man := newBlob(manData)
	md := man.descriptor(mediaManifest)
	md.Annotations = map[string]string{
		"io.containerd.image.name":          fullName(repo) + ":" + tag,
		"org.opencontainers.image.ref.name": tag,
	}
	index, err := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": mediaIndex, "manifests": []descriptor{md}})
	if err != nil {
		return err
	}
	dockerManifest, err := json.Marshal([]map[string]any{{
		"Config":   cfg.path(),
		"RepoTags": []string{repo + ":" + tag},
		"Layers":   []string{lay.path()},
	}})
	if err != nil {
		return err
	}

	tw := tar.NewWriter(w)
	entries := []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", index},
		{"manifest.json", dockerManifest},
		{lay.path(), lay.data},
		{cfg.path(), cfg.data},
		{man.path(), man.data},
	}
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: spec.Created, Format: tar.FormatPAX}); err != nil {
			return err
		}
	}
	for _, e := range entries {
		if err := writeEntry(tw, e.name, e.data, 0o644, spec.Created); err != nil {
			return err
		}
	}
	return tw.Close()
}

// layer builds the single layer: parent directories, then the files,
// sorted, owned by root, dated spec.Created.
func layer(spec Spec) ([]byte, error) {
	files := slices.Clone(spec.Files)
	slices.SortFunc(files, func(a, b File) int { return strings.Compare(a.Dst, b.Dst) })
	dirs := map[string]bool{}
	var dirList []string
	for i, f := range files {
		if i > 0 && files[i-1].Dst == f.Dst {
			return nil, fmt.Errorf("two files at %s", f.Dst)
		}
		for d := path.Dir(f.Dst); d != "/"; d = path.Dir(d) {
			if !dirs[d] {
				dirs[d] = true
				dirList = append(dirList, d)
			}
		}
	}
	slices.Sort(dirList)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range dirList {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/", Mode: 0o755, ModTime: spec.Created, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
	}
	for _, f := range files {
		data, err := os.ReadFile(f.Src)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", f.Src, err)
		}
		if err := writeEntry(tw, strings.TrimPrefix(f.Dst, "/"), data, f.Mode, spec.Created); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func writeEntry(tw *tar.Writer, name string, data []byte, mode int64, mtime time.Time) error {
	h := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: mtime, Format: tar.FormatPAX}
	if err := tw.WriteHeader(h); err != nil {
		return fmt.Errorf("tar %s: %w", name, err)
	}
	if _, err := tw.Write(data); err != nil {
		return fmt.Errorf("tar %s: %w", name, err)
	}
	return nil
}

// splitName splits name:tag; the tag defaults to latest.
func splitName(name string) (repo, tag string, err error) {
	if name == "" || strings.ContainsAny(name, " @") {
		return "", "", fmt.Errorf("image name %q is not name[:tag]", name)
	}
	repo, tag = name, "latest"
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		repo, tag = name[:i], name[i+1:]
	}
	if repo == "" || tag == "" {
		return "", "", fmt.Errorf("image name %q is not name[:tag]", name)
	}
	return repo, tag, nil
}

// fullName expands a short repository name as docker and containerd do.
func fullName(repo string) string {
	first, _, hasSlash := strings.Cut(repo, "/")
	if hasSlash && (strings.ContainsAny(first, ".:") || first == "localhost") {
		return repo
	}
	if !hasSlash {
		return "docker.io/library/" + repo
	}
	return "docker.io/" + repo
}
