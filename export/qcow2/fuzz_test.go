package qcow2

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// FuzzOpenImage opens mutated images, reads them, requests block status
// and writes to them. It must never panic or allocate without bound. The
// seeds in testdata/fuzz/FuzzOpenImage are small images made by qemu-img.
func FuzzOpenImage(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "fuzz.qcow2")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		img, err := Open(path, Options{Discard: true})
		if err != nil {
			return
		}
		defer img.Close()

		size, _ := img.Size()
		span := min(size, 1<<20)
		buf := make([]byte, span)
		_, _ = img.ReadAt(buf, 0)
		_, _ = img.Extents(context.Background(), 0, span)
		_, _ = img.AllocationDepth(context.Background(), 0, span)
		if span >= 4096 {
			_, _ = img.WriteAt(buf[:4096], span/2)
			_ = img.Zero(0, span/2, 0)
			_ = img.Trim(span/4, span/4)
			_, _ = img.ReadAt(buf, 0)
		}
	})
}
