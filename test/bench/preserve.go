package main

import (
	"errors"
	"io/fs"
	"os"

	"github.com/vethroute/vethroute/test/bench/docsection"
)

// writeReport writes the markdown report to path, carrying over the marked
// sections (docsection) of the file it replaces: other generators, such as
// make bench-scale, own those.
func writeReport(path, markdown string) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return os.WriteFile(path, []byte(docsection.Preserve(string(old), markdown)), 0o644)
}
