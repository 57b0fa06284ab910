package qcow2

import (
	"bytes"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestConcurrentRequests runs 64 goroutines, as the server does, each
// writing, reading back and zeroing its own stripe of a backed image
// while sharing L2 tables and refcount blocks with the others.
func TestConcurrentRequests(t *testing.T) {
	dir := t.TempDir()
	base := createImage(t, dir, "base.qcow2", "16M", "cluster_size=4k")
	qemuIOWrite(t, "qcow2", base, []op{{kind: "write", off: 0, n: 16 << 20, pattern: 0xee}})
	path := createImage(t, dir, "top.qcow2", "16M", "cluster_size=4k", "backing_file=base.qcow2", "backing_fmt=qcow2")
	img := openT(t, path, Options{Discard: true})

	const workers = 64
	stripe := int64(16<<20) / workers
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			errs <- stripeWork(img, int64(w)*stripe, stripe, byte(w))
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.NoError(t, img.Close())
	requireClean(t, path)

	ref := filepath.Join(dir, "ref.raw")
	qemu(t, "qemu-img", "create", "-q", "-f", "raw", ref, "16M")
	var ops []op
	for w := int64(0); w < workers; w++ {
		ops = append(ops, stripeOps(w*stripe, stripe, byte(w))...)
	}
	applyRaw(t, ref, append([]op{{kind: "write", off: 0, n: 16 << 20, pattern: 0xee}}, ops...))
	requireSame(t, path, ref)
}

// stripeOps are the final-state requests of one stripe.
func stripeOps(off, n int64, pattern byte) []op {
	return []op{
		{kind: "write", off: off + 100, n: n/2 - 100, pattern: pattern},
		{kind: "write", off: off + n/2, n: n / 4, pattern: pattern + 1},
		{kind: "zero", off: off + n/2 + n/8, n: n / 16},
	}
}

func stripeWork(img *Image, off, n int64, pattern byte) error {
	got := make([]byte, n)
	for round := 0; round < 3; round++ {
		for _, o := range stripeOps(off, n, pattern) {
			var err error
			switch o.kind {
			case "write":
				_, err = img.WriteAt(bytes.Repeat([]byte{o.pattern}, int(o.n)), o.off)
			case "zero":
				err = img.Zero(o.off, o.n, 0)
			}
			if err != nil {
				return err
			}
			if _, err := img.ReadAt(got[:o.n], o.off); err != nil {
				return err
			}
		}
	}
	return nil
}
