package testutil

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"runtime"
	"sort"
	"strings"
	"time"
)

// OCI media types and annotations an image archive uses (image-spec v1.0
// and containerd's own name annotation).
const (
	mediaTypeOCIIndex    = "application/vnd.oci.image.index.v1+json"
	mediaTypeOCIManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaTypeOCIConfig   = "application/vnd.oci.image.config.v1+json"
	mediaTypeOCILayer    = "application/vnd.oci.image.layer.v1.tar"
	// annotationRefName is the OCI tag annotation; annotationImageName is
	// the full reference containerd's importer names the image after, so
	// `ctr images import` needs no --base-name to get the intended name.
	annotationRefName   = "org.opencontainers.image.ref.name"
	annotationImageName = "io.containerd.image.name"
)

// OCIFile is one regular file in an image's single layer.
type OCIFile struct {
	// Path is relative to the image root ("pause", "etc/x").
	Path string
	Mode int64
	Data []byte
}

// OCIImage describes a one-layer image: enough for a pod sandbox or a
// test container, built without a registry or a container engine.
type OCIImage struct {
	// Ref is the full reference, e.g. "docker.io/vethroute/pause:e2e".
	Ref        string
	Entrypoint []string
	Files      []OCIFile
}

// ociDescriptor is the OCI content descriptor.
type ociDescriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *ociPlatform      `json:"platform,omitempty"`
}

type ociPlatform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

// WriteOCIArchive writes img as an OCI image layout in a tar stream, the
// format `ctr images import` and `docker load` accept. Every timestamp is
// the Unix epoch and every map is sorted, so the same image always has the
// same digests.
func WriteOCIArchive(w io.Writer, img OCIImage) error {
	colon := strings.LastIndex(img.Ref, ":")
	if colon <= strings.LastIndex(img.Ref, "/") || colon == len(img.Ref)-1 {
		return fmt.Errorf("image reference %q needs a name and a tag", img.Ref)
	}
	if len(img.Files) == 0 {
		return fmt.Errorf("image %s has no files", img.Ref)
	}
	layer, err := layerTar(img.Files)
	if err != nil {
		return fmt.Errorf("build layer of %s: %w", img.Ref, err)
	}
	layerDesc := descriptorOf(mediaTypeOCILayer, layer)

	config, err := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"created":      time.Unix(0, 0).UTC(),
		"config":       map[string]any{"Entrypoint": img.Entrypoint},
		// The layer is uncompressed, so its diff ID is its digest.
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerDesc.Digest}},
	})
	if err != nil {
		return fmt.Errorf("encode config of %s: %w", img.Ref, err)
	}
	configDesc := descriptorOf(mediaTypeOCIConfig, config)

	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaTypeOCIManifest,
		"config":        configDesc,
		"layers":        []ociDescriptor{layerDesc},
	})
	if err != nil {
		return fmt.Errorf("encode manifest of %s: %w", img.Ref, err)
	}
	manifestDesc := descriptorOf(mediaTypeOCIManifest, manifest)
	manifestDesc.Platform = &ociPlatform{Architecture: runtime.GOARCH, OS: "linux"}
	manifestDesc.Annotations = map[string]string{
		annotationImageName: img.Ref,
		annotationRefName:   img.Ref[colon+1:],
	}

	index, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaTypeOCIIndex,
		"manifests":     []ociDescriptor{manifestDesc},
	})
	if err != nil {
		return fmt.Errorf("encode index of %s: %w", img.Ref, err)
	}

	tw := tar.NewWriter(w)
	entries := []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{blobPath(layerDesc), layer},
		{blobPath(configDesc), config},
		{blobPath(manifestDesc), manifest},
		{"index.json", index},
	}
	if err := writeDir(tw, "blobs/"); err != nil {
		return err
	}
	if err := writeDir(tw, "blobs/sha256/"); err != nil {
		return err
	}
	for _, e := range entries {
		if err := writeFile(tw, e.name, 0o644, e.data); err != nil {
			return fmt.Errorf("write %s: %w", e.name, err)
		}
	}
	return tw.Close()
}

// layerTar packs files (and the directories above them) into a layer.
func layerTar(files []OCIFile) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	var dirList []string
	for _, f := range files {
		if f.Path == "" || path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path || strings.HasPrefix(f.Path, "..") {
			return nil, fmt.Errorf("file path %q must be relative and clean", f.Path)
		}
		for d := path.Dir(f.Path); d != "."; d = path.Dir(d) {
			if !dirs[d] {
				dirs[d] = true
				dirList = append(dirList, d)
			}
		}
	}
	// Parents sort before their children, as extractors expect.
	sort.Strings(dirList)
	for _, d := range dirList {
		if err := writeDir(tw, d+"/"); err != nil {
			return nil, err
		}
	}
	for _, f := range files {
		if err := writeFile(tw, f.Path, f.Mode, f.Data); err != nil {
			return nil, fmt.Errorf("add %s: %w", f.Path, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func writeDir(tw *tar.Writer, name string) error {
	return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: time.Unix(0, 0), Format: tar.FormatPAX})
}

func writeFile(tw *tar.Writer, name string, mode int64, data []byte) error {
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

func descriptorOf(mediaType string, data []byte) ociDescriptor {
	sum := sha256.Sum256(data)
	return ociDescriptor{MediaType: mediaType, Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: int64(len(data))}
}

func blobPath(d ociDescriptor) string {
	return "blobs/sha256/" + strings.TrimPrefix(d.Digest, "sha256:")
}
