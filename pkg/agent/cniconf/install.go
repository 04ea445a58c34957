package cniconf

import (
	"fmt"
	"os"
	"path/filepath"
)

// InstallPlugins installs src with InstallPlugin, or when src is a
// directory every regular file in it (the plugin and the plugins its
// conflist chains, shipped side by side in the image). It returns the files
// it wrote; identical ones are left untouched and not listed.
func InstallPlugins(src, dstDir string) ([]string, error) {
	srcs := []string{src}
	if entries, err := os.ReadDir(src); err == nil {
		srcs = srcs[:0]
		for _, e := range entries {
			if e.Type().IsRegular() {
				srcs = append(srcs, filepath.Join(src, e.Name()))
			}
		}
		if len(srcs) == 0 {
			return nil, fmt.Errorf("install plugins: directory %s holds no file", src)
		}
	}
	var wrote []string
	for _, s := range srcs {
		w, err := InstallPlugin(s, dstDir)
		if err != nil {
			return wrote, err
		}
		if w {
			wrote = append(wrote, filepath.Base(s))
		}
	}
	return wrote, nil
}

// InstallPlugin copies the plugin binary src into the node's CNI binary
// directory dstDir under the same name. The copy is written beside the
// target and renamed over it, so a runtime executing the plugin at that
// moment runs either the old binary or the new one, and an old binary that
// is still running never blocks the update ("text file busy"). An identical
// binary is left untouched. It reports whether it wrote.
func InstallPlugin(src, dstDir string) (bool, error) {
	data, err := os.ReadFile(src)
	if err != nil {
		return false, fmt.Errorf("read plugin binary: %w", err)
	}
	dst := filepath.Join(dstDir, filepath.Base(src))
	wrote, err := WriteFileAtomic(dst, data, 0o755)
	if err != nil {
		return false, fmt.Errorf("install %s: %w", dst, err)
	}
	return wrote, nil
}
