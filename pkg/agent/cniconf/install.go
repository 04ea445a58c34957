package cniconf

import (
	"fmt"
	"os"
	"path/filepath"
)

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
