// Package deploy holds vethroute's Kubernetes manifests (the agent's
// DaemonSet and RBAC) and decodes them strictly, so that a misspelt field
// is an error rather than a silently ignored key.
package deploy

import (
	"bufio"
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

//go:embed *.yaml
var files embed.FS

// Manifest is one object of a manifest file.
type Manifest struct {
	// File and Doc locate it: the file name and the document's index.
	File string
	Doc  int
	// GVK is its apiVersion and kind.
	GVK schema.GroupVersionKind
	// Object is the typed object (a *appsv1.DaemonSet, ...).
	Object runtime.Object
	// JSON is the document as JSON, for server-side apply.
	JSON []byte
}

// strict decodes into the client-go scheme's typed objects and fails on
// unknown or duplicate fields.
var strict = serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()

// Files returns the names of the embedded manifest files, sorted.
func Files() ([]string, error) {
	names, err := fs.Glob(files, "*.yaml")
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	return names, nil
}

// Load decodes every object of every embedded manifest file strictly.
func Load() ([]Manifest, error) {
	names, err := Files()
	if err != nil {
		return nil, err
	}
	var out []Manifest
	for _, name := range names {
		data, err := files.ReadFile(name)
		if err != nil {
			return nil, err
		}
		ms, err := Decode(name, data)
		if err != nil {
			return nil, err
		}
		out = append(out, ms...)
	}
	return out, nil
}

// Decode strictly decodes every document of a multi-document YAML file:
// duplicate keys, unknown fields and kinds the scheme does not know are
// errors. Empty documents (comments only) are skipped.
func Decode(file string, data []byte) ([]Manifest, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out []Manifest
	for doc := 0; ; doc++ {
		raw, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", file, doc, err)
		}
		js, err := yaml.YAMLToJSONStrict(raw)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", file, doc, err)
		}
		if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
			continue
		}
		obj, gvk, err := strict.Decode(js, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", file, doc, err)
		}
		out = append(out, Manifest{File: file, Doc: doc, GVK: *gvk, Object: obj, JSON: js})
	}
}
