// Package ociimage packs files into a single-layer container image without a
// registry, a daemon or a base image. The archive is one tar that is both an
// OCI image layout (index.json, for `ctr images import`, skopeo, podman) and
// a `docker save` archive (manifest.json, for `docker load`), so one file
// serves every runtime the deploy scripts and the tests load images into.
//
// The output is reproducible: entries are sorted, owned by root and dated
// Spec.Created, so the same inputs give the same image digest and a build
// cache keyed on the inputs stays valid.
package ociimage

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Media types of the OCI image spec. The layer is stored uncompressed: the
// images are loaded from a local file, so compression would only cost time,
// and an uncompressed layer's digest is also its diff ID.
const (
	mediaIndex    = "application/vnd.oci.image.index.v1+json"
	mediaManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaConfig   = "application/vnd.oci.image.config.v1+json"
	mediaLayer    = "application/vnd.oci.image.layer.v1.tar"
)

// File is one regular file of the image's layer. Its content comes from
// exactly one place: Src, a path on the build machine read when Build runs
// (so large binaries need not be held in memory by the caller), or Data,
// bytes the caller already has (a binary a test just built, a generated
// config). With Src empty the content is Data, which may be empty.
type File struct {
	Src  string
	Data []byte
	// Dst is the absolute, clean path inside the image; the directories
	// above it are added to the layer, since extractors do not create them.
	Dst string
	// Mode holds the permission bits; the file is owned by root whatever
	// the source's owner, so the image does not depend on who built it.
	Mode int64
	// Link, when set, makes Dst a symbolic link to Link instead of a
	// file (Src and Data must be empty): multi-call binaries such as
	// busybox pick their applet from the name they are run under, and a
	// copy per name would multiply the image's size.
	Link string
	// Dir makes Dst a directory with Mode (Src, Data and Link empty): for
	// a directory that must exist while empty, such as /tmp with 01777.
	Dir bool
}

// Spec describes the image to build.
type Spec struct {
	// Name is name[:tag], the tag defaulting to latest. A name without a
	// registry is Docker Hub's (docker.io/library/...), as docker and
	// containerd read it, so both load the image under the same name.
	Name string
	// Arch is the GOARCH the image runs on; empty means runtime.GOARCH.
	// The OS is always linux.
	Arch string
	// Created dates the image and every tar entry. A zero Created means
	// the Unix epoch, so callers that do not care still get
	// reproducible output.
	Created    time.Time
	Entrypoint []string
	// Cmd is the image's default arguments (to Entrypoint, or the
	// command itself when Entrypoint is empty).
	Cmd    []string
	Labels map[string]string
	Files  []File
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *platform         `json:"platform,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
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

// Build writes the image archive to w. The layer is assembled in memory
// first, so a bad spec or an unreadable Src fails before anything reaches
// w; only a failing w leaves a partial archive behind.
func Build(w io.Writer, spec Spec) error {
	repo, tag, err := splitName(spec.Name)
	if err != nil {
		return err
	}
	if spec.Arch == "" {
		spec.Arch = runtime.GOARCH
	}
	if spec.Created.IsZero() {
		spec.Created = time.Unix(0, 0)
	}
	spec.Created = spec.Created.UTC()
	layerData, err := layer(spec)
	if err != nil {
		return fmt.Errorf("image %s: %w", spec.Name, err)
	}
	lay := newBlob(layerData)
	runConfig := map[string]any{
		"Entrypoint": spec.Entrypoint,
		"Env":        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		"Labels":     spec.Labels,
	}
	// Only when set, so images without one keep their digests.
	if len(spec.Cmd) > 0 {
		runConfig["Cmd"] = spec.Cmd
	}
	cfgData, err := json.Marshal(map[string]any{
		"created":      spec.Created.Format(time.RFC3339),
		"architecture": spec.Arch,
		"os":           "linux",
		"config":       runConfig,
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{lay.digest}},
		"history":      []map[string]string{{"created": spec.Created.Format(time.RFC3339), "created_by": "vethroute deploy/ociimage"}},
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
	// containerd's importer names the image after io.containerd.image.name,
	// so `ctr images import` needs no --base-name.
	md.Annotations = map[string]string{
		"io.containerd.image.name":          fullName(repo) + ":" + tag,
		"org.opencontainers.image.ref.name": tag,
	}
	// Importers that filter by platform (ctr without --all-platforms) skip
	// a manifest that does not say what it runs on.
	md.Platform = &platform{Architecture: spec.Arch, OS: "linux"}
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
		if err := writeDir(tw, dir, 0o755, spec.Created); err != nil {
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
	if len(spec.Files) == 0 {
		return nil, errors.New("no files")
	}
	files := slices.Clone(spec.Files)
	slices.SortFunc(files, func(a, b File) int { return strings.Compare(a.Dst, b.Dst) })
	dirs := map[string]bool{}
	var dirList []string
	for i, f := range files {
		if !path.IsAbs(f.Dst) || path.Clean(f.Dst) != f.Dst || f.Dst == "/" {
			return nil, fmt.Errorf("file destination %q must be an absolute, clean path", f.Dst)
		}
		if f.Src != "" && f.Data != nil {
			return nil, fmt.Errorf("file %s has both Src and Data", f.Dst)
		}
		if (f.Link != "" || f.Dir) && (f.Src != "" || f.Data != nil) || f.Link != "" && f.Dir {
			return nil, fmt.Errorf("file %s: a link or directory has no Src or Data, and is not both", f.Dst)
		}
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
	// Every directory goes before every file, parents before children
	// (sorted, a prefix comes first), so extractors that do not create
	// missing parents still place each file.
	// An explicit directory takes its place in that order with its own
	// mode; the implied ones are 0755.
	dirMode := map[string]int64{}
	for _, f := range files {
		switch {
		case f.Dir:
			dirMode[f.Dst] = f.Mode
			if !dirs[f.Dst] {
				dirs[f.Dst] = true
				dirList = append(dirList, f.Dst)
			}
		case dirs[f.Dst]:
			return nil, fmt.Errorf("%s is both a file and a directory", f.Dst)
		}
	}
	slices.Sort(dirList)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range dirList {
		mode, ok := dirMode[d]
		if !ok {
			mode = 0o755
		}
		if err := writeDir(tw, strings.TrimPrefix(d, "/")+"/", mode, spec.Created); err != nil {
			return nil, err
		}
	}
	for _, f := range files {
		if f.Dir {
			continue
		}
		if f.Link != "" {
			h := &tar.Header{Typeflag: tar.TypeSymlink, Name: strings.TrimPrefix(f.Dst, "/"), Linkname: f.Link,
				Mode: 0o777, ModTime: spec.Created, Format: tar.FormatPAX}
			if err := tw.WriteHeader(h); err != nil {
				return nil, fmt.Errorf("tar %s: %w", f.Dst, err)
			}
			continue
		}
		data := f.Data
		if f.Src != "" {
			var err error
			if data, err = os.ReadFile(f.Src); err != nil {
				return nil, fmt.Errorf("read %s: %w", f.Src, err)
			}
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

func writeDir(tw *tar.Writer, name string, mode int64, mtime time.Time) error {
	h := &tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, ModTime: mtime, Format: tar.FormatPAX}
	if err := tw.WriteHeader(h); err != nil {
		return fmt.Errorf("tar %s: %w", name, err)
	}
	return nil
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
