// Command ociimage packs files into a single-layer container image without a
// registry, a daemon or a base image, written as one tar that is both an OCI
// image layout (index.json, for `ctr images import`, skopeo, podman) and a
// `docker save` archive (manifest.json, for `docker load`). It is a thin
// command line over internal/ociimage, which the tests use directly.
//
//	ociimage -o vethroute.tar -name vethroute:dev -entrypoint /vethroute-agent \
//	    -file bin/vethroute-agent=/vethroute-agent \
//	    -file bin/vethroute=/opt/vethroute/bin/vethroute
//
// -root DIR adds a whole staged tree instead (regular files, symbolic links
// and directories, with their modes), for images assembled from a Debian
// root such as the e2e suite's test images; -cmd sets the default arguments.
//
// The output is reproducible: entries are sorted, owned by root, and dated
// $SOURCE_DATE_EPOCH (or the Unix epoch), so the same binaries give the
// same image digest.
package main

import (
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/vethroute/vethroute/internal/ociimage"
)

type fileList []string

func (f *fileList) String() string     { return strings.Join(*f, ",") }
func (f *fileList) Set(v string) error { *f = append(*f, v); return nil }

func main() {
	var files fileList
	var labels fileList
	var cmd fileList
	out := flag.String("o", "", "output tar file")
	name := flag.String("name", "vethroute:dev", "image name:tag")
	entrypoint := flag.String("entrypoint", "", "entrypoint path inside the image")
	arch := flag.String("arch", runtime.GOARCH, "image architecture")
	flag.Var(&files, "file", "SRC=DST[:MODE] file to add (repeatable); MODE is octal, default 0755")
	flag.Var(&labels, "label", "KEY=VALUE image label (repeatable)")
	flag.Var(&cmd, "cmd", "default argument (repeatable, in order)")
	root := flag.String("root", "", "directory whose whole tree is added at / (with -file entries on top)")
	flag.Parse()
	if *out == "" || len(files) == 0 && *root == "" {
		fmt.Fprintln(os.Stderr, "ociimage: -o and at least one -file or a -root are required")
		flag.Usage()
		os.Exit(2)
	}
	spec := ociimage.Spec{Name: *name, Arch: *arch, Created: created(), Labels: map[string]string{}}
	if *entrypoint != "" {
		spec.Entrypoint = []string{*entrypoint}
	}
	spec.Cmd = cmd
	if *root != "" {
		tree, err := walkRoot(*root)
		if err != nil {
			fmt.Fprintln(os.Stderr, "ociimage:", err)
			os.Exit(1)
		}
		spec.Files = append(spec.Files, tree...)
	}
	for _, f := range files {
		e, err := parseFile(f)
		if err != nil {
			fmt.Fprintln(os.Stderr, "ociimage:", err)
			os.Exit(2)
		}
		spec.Files = append(spec.Files, e)
	}
	for _, l := range labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			fmt.Fprintf(os.Stderr, "ociimage: -label %q is not KEY=VALUE\n", l)
			os.Exit(2)
		}
		spec.Labels[k] = v
	}
	if err := writeFile(*out, spec); err != nil {
		fmt.Fprintln(os.Stderr, "ociimage:", err)
		os.Exit(1)
	}
}

// created returns $SOURCE_DATE_EPOCH, or the Unix epoch, as the image date.
func created() time.Time {
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return time.Unix(n, 0).UTC()
		}
	}
	return time.Unix(0, 0).UTC()
}

func parseFile(s string) (ociimage.File, error) {
	src, dst, ok := strings.Cut(s, "=")
	if !ok || src == "" || dst == "" {
		return ociimage.File{}, fmt.Errorf("-file %q is not SRC=DST[:MODE]", s)
	}
	mode := int64(0o755)
	if d, m, ok := strings.Cut(dst, ":"); ok {
		n, err := strconv.ParseInt(m, 8, 32)
		if err != nil {
			return ociimage.File{}, fmt.Errorf("-file %q: mode %q is not octal", s, m)
		}
		dst, mode = d, n
	}
	if !strings.HasPrefix(dst, "/") {
		return ociimage.File{}, fmt.Errorf("-file %q: destination must be absolute", s)
	}
	return ociimage.File{Src: src, Dst: dst, Mode: mode}, nil
}

func writeFile(path string, spec ociimage.Spec) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if err := ociimage.Build(f, spec); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

// walkRoot lists the tree under dir as image entries at the same paths:
// regular files (read at build time), symbolic links (kept as links, their
// targets unchanged) and directories (so empty ones and their modes
// survive). Anything else, a device or a socket, is refused: a staged root
// has no business holding one.
func walkRoot(dir string) ([]ociimage.File, error) {
	var files []ociimage.File
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		dst := "/" + filepath.ToSlash(rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		mode := int64(info.Mode().Perm())
		if info.Mode()&fs.ModeSticky != 0 {
			mode |= 0o1000
		}
		switch {
		case d.IsDir():
			files = append(files, ociimage.File{Dst: dst, Dir: true, Mode: mode})
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			files = append(files, ociimage.File{Dst: dst, Link: target})
		case d.Type().IsRegular():
			files = append(files, ociimage.File{Src: p, Dst: dst, Mode: mode})
		default:
			return fmt.Errorf("-root %s: %s is neither a file, a link nor a directory", dir, rel)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("-root %s: %w", dir, err)
	}
	return files, nil
}
