package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// qcow2Chain creates top.qcow2 over base.qcow2, both with data written by
// qemu-io, and returns the top image's path.
func qcow2Chain(t *testing.T, dir string, opts string) string {
	t.Helper()
	qemuImg, qemuIO := requireTool(t, "qemu-img"), requireTool(t, "qemu-io")
	base := filepath.Join(dir, "base.qcow2")
	mustRun(t, qemuImg, "create", "-q", "-f", "qcow2", "-o", opts, base, "48M")
	mustRun(t, qemuIO, "-f", "qcow2", "-c", "write -P 0x11 0 8M", "-c", "write -P 0x12 20M 3M", "-c", "write -z 30M 1M", base)

	// A compressed cluster in the base, from qemu-io's write -c.
	mustRun(t, qemuIO, "-f", "qcow2", "-c", "write -c -P 0x13 40M 64k", base)

	top := filepath.Join(dir, "top.qcow2")
	mustRun(t, qemuImg, "create", "-q", "-f", "qcow2", "-o", opts+",backing_file=base.qcow2,backing_fmt=qcow2", top, "64M")
	mustRun(t, qemuIO, "-f", "qcow2", "-c", "write -P 0x21 4M 8M", "-c", "write -z 21M 512k", "-c", "discard 22M 64k", top)
	return top
}

// stopServer sends SIGTERM to gonbd and waits for it to close the image.
func stopServer(t *testing.T, p *proc) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, 0, p.wait(30*time.Second), "gonbd exit code after SIGTERM")
}

// serveQemuNbd starts qemu-nbd on a Unix socket with args before IMAGE.
func serveQemuNbd(t *testing.T, args ...string) server {
	t.Helper()
	sock := socketPath(t)
	p := start(t, requireTool(t, "qemu-nbd"), append([]string{"-k", sock}, args...)...)
	waitUnix(t, p, sock)
	return server{proc: p, uri: "nbd+unix:///?socket=" + sock}
}

// qcow2Requests are qemu-io commands for a 64 MiB disk: unaligned writes,
// writes over compressed and backing clusters, zeroes and discards.
var qcow2Requests = []string{
	"write -P 0x31 1000 70000",
	"write -P 0x32 40M 4k",
	"write -P 0x33 20M 1M",
	"write -z 6M 2M",
	"write -z -u 10M 1M",
	"discard 5M 128k",
	"write -P 0x34 63M 1M",
	"write -P 0x35 30M 100",
}

func qemuIOArgs(format, target string) []string {
	args := []string{"-f", format}
	for _, c := range qcow2Requests {
		args = append(args, "-c", c)
	}
	return append(args, target)
}

// TestQcow2QemuIOMatchesQemuNbd applies the same requests through gonbd
// and through qemu-nbd to two copies of a backed image: both must pass
// qemu-img check and end up with the same disk.
func TestQcow2QemuIOMatchesQemuNbd(t *testing.T) {
	qemuImg, qemuIO := requireTool(t, "qemu-img"), requireTool(t, "qemu-io")
	for _, opts := range []string{"compat=1.1", "compat=0.10", "cluster_size=4k,refcount_bits=64", "extended_l2=on"} {
		t.Run(opts, func(t *testing.T) {
			dir := t.TempDir()
			top := qcow2Chain(t, dir, opts)
			theirs := filepath.Join(dir, "theirs.qcow2")
			mustRun(t, qemuImg, "create", "-q", "-f", "qcow2", "-o", opts+",backing_file=base.qcow2,backing_fmt=qcow2", theirs, "64M")
			mustRun(t, qemuImg, "rebase", "-u", "-b", "base.qcow2", "-F", "qcow2", theirs)
			copyFile(t, top, theirs)

			srv := serveUnix(t, "-t", "-f", "qcow2", "--discard=unmap", top)
			mustRun(t, qemuIO, qemuIOArgs("raw", srv.uri)...)
			stopServer(t, srv.proc)

			ref := serveQemuNbd(t, "-f", "qcow2", "--discard=unmap", theirs)
			mustRun(t, qemuIO, qemuIOArgs("raw", ref.uri)...)
			ref.wait(30 * time.Second)

			out := mustRun(t, qemuImg, "check", top)
			require.Contains(t, out, "No errors were found")
			mustRun(t, qemuImg, "compare", top, theirs)
		})
	}
}

// TestQcow2NbdcopyMatchesQemuNbd copies a backed image out of gonbd and
// out of qemu-nbd with nbdcopy, and a raw image into a new qcow2 image
// served by gonbd.
func TestQcow2NbdcopyMatchesQemuNbd(t *testing.T) {
	nbdcopy, qemuImg := requireTool(t, "nbdcopy"), requireTool(t, "qemu-img")
	dir := t.TempDir()
	top := qcow2Chain(t, dir, "compat=1.1")

	srv := serveUnix(t, "-r", "-f", "qcow2", top)
	ours := filepath.Join(dir, "ours.raw")
	mustRun(t, nbdcopy, srv.uri, ours)
	ref := serveQemuNbd(t, "-r", "-f", "qcow2", top)
	theirs := filepath.Join(dir, "theirs.raw")
	mustRun(t, nbdcopy, ref.uri, theirs)
	sameFiles(t, theirs, ours)

	src := randomImage(t, 64<<20, 3)
	dst := filepath.Join(dir, "dst.qcow2")
	mustRun(t, qemuImg, "create", "-q", "-f", "qcow2", dst, "64M")
	w := serveUnix(t, "-t", "-f", "qcow2", dst)
	mustRun(t, nbdcopy, src, w.uri)
	stopServer(t, w.proc)
	require.Contains(t, mustRun(t, qemuImg, "check", dst), "No errors were found")
	mustRun(t, qemuImg, "compare", "-F", "raw", dst, src)
}

// TestQcow2MapMatchesQemuNbd compares qemu-img map over NBD, for
// base:allocation and for qemu:allocation-depth (-A), between gonbd and
// qemu-nbd serving the same image.
func TestQcow2MapMatchesQemuNbd(t *testing.T) {
	qemuImg := requireTool(t, "qemu-img")
	top := qcow2Chain(t, t.TempDir(), "compat=1.1")

	maps := func(args ...string) (string, string) {
		var alloc, depth string
		sock := socketPath(t)
		var p *proc
		if args[0] == "gonbd" {
			p = start(t, bin(t, "gonbd"), append([]string{"-t", "-k", sock}, args[1:]...)...)
		} else {
			p = start(t, requireTool(t, "qemu-nbd"), append([]string{"-t", "-k", sock}, args[1:]...)...)
		}
		waitUnix(t, p, sock)
		opts := "driver=nbd,server.type=unix,server.path=" + sock
		alloc = mustRun(t, qemuImg, "map", "--output=json", "--image-opts", opts)
		depth = mustRun(t, qemuImg, "map", "--output=json", "--image-opts", opts+",x-dirty-bitmap=qemu:allocation-depth")
		require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
		p.wait(30 * time.Second)
		return alloc, depth
	}
	ourAlloc, ourDepth := maps("gonbd", "-r", "-A", "-f", "qcow2", top)
	theirAlloc, theirDepth := maps("qemu-nbd", "-r", "-A", "-f", "qcow2", top)
	require.Equal(t, theirAlloc, ourAlloc, "base:allocation map")
	require.Equal(t, theirDepth, ourDepth, "qemu:allocation-depth map")
}

// TestQcow2SnapshotMode writes through gonbd -s and checks that the image
// is unchanged afterwards while the writes were visible during the run.
func TestQcow2SnapshotMode(t *testing.T) {
	qemuImg, qemuIO := requireTool(t, "qemu-img"), requireTool(t, "qemu-io")
	dir := t.TempDir()
	top := qcow2Chain(t, dir, "compat=1.1")
	before := filepath.Join(dir, "before.raw")
	mustRun(t, qemuImg, "convert", "-O", "raw", top, before)

	srv := serveUnix(t, "-t", "-s", "-f", "qcow2", top)
	mustRun(t, qemuIO, "-f", "raw", "-c", "write -P 0x77 1M 1M", srv.uri)
	out := mustRun(t, qemuIO, "-f", "raw", "-c", "read -P 0x77 1M 1M", srv.uri)
	require.NotContains(t, out, "Pattern verification failed")
	stopServer(t, srv.proc)

	mustRun(t, qemuImg, "compare", "-F", "raw", top, before)
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	require.NoError(t, err, fmt.Sprintf("read %s", from))
	require.NoError(t, os.WriteFile(to, b, 0o644))
}
