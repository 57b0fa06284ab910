package integration

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// transports runs a test body over TCP and over a Unix socket.
var transports = []struct {
	name  string
	serve func(t *testing.T, args ...string) server
}{
	{"TCP", serveTCP},
	{"Unix", serveUnix},
}

func TestQemuImgInfo(t *testing.T) {
	qemuImg := requireTool(t, "qemu-img")
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			img := sparseImage(t, 64<<20)
			srv := tr.serve(t, "-f", "raw", img)

			out := mustRun(t, qemuImg, "info", "--output=json", srv.uri)
			var info struct {
				VirtualSize int64  `json:"virtual-size"`
				Format      string `json:"format"`
			}
			require.NoError(t, json.Unmarshal([]byte(out), &info), out)
			assert.Equal(t, int64(64<<20), info.VirtualSize)
			assert.Equal(t, "raw", info.Format)
		})
	}
}

// TestConvertImageIdentical reads a random image back with qemu-img
// convert: 1 GiB, or 64 MiB under -short.
func TestConvertImageIdentical(t *testing.T) {
	qemuImg := requireTool(t, "qemu-img")
	size := int64(1 << 30)
	if testing.Short() {
		size = 64 << 20
	}
	img := randomImage(t, size, 1)
	srv := serveUnix(t, "-r", "-f", "raw", img)

	out := filepath.Join(t.TempDir(), "out.img")
	mustRun(t, qemuImg, "convert", "-f", "raw", "-O", "raw", srv.uri, out)
	sameFiles(t, img, out)
}

func TestQemuImgConvertWrite(t *testing.T) {
	qemuImg := requireTool(t, "qemu-img")
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			src := randomImage(t, 16<<20, 2)
			img := sparseImage(t, 16<<20)
			srv := tr.serve(t, "-t", "-f", "raw", img)

			mustRun(t, qemuImg, "convert", "-n", "-f", "raw", "-O", "raw", src, srv.uri)
			sameFiles(t, src, img)
		})
	}
}

func TestQemuImgCompare(t *testing.T) {
	qemuImg := requireTool(t, "qemu-img")
	img := randomImage(t, 8<<20, 3)
	srv := serveTCP(t, "-t", "-r", "-f", "raw", img)

	mustRun(t, qemuImg, "compare", "-f", "raw", "-F", "raw", img, srv.uri)

	other := randomImage(t, 8<<20, 4)
	r := run(t, qemuImg, "compare", "-f", "raw", "-F", "raw", other, srv.uri)
	assert.Equal(t, 1, r.code, "qemu-img compare of different images must exit 1: %s", r.stdout)
}

func TestQemuIoPatterns(t *testing.T) {
	qemuIo := requireTool(t, "qemu-io")
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			img := sparseImage(t, 4<<20)
			srv := tr.serve(t, "-t", "-f", "raw", "--discard=unmap", img)

			io := func(cmds ...string) string {
				args := []string{"-f", "raw"}
				for _, c := range cmds {
					args = append(args, "-c", c)
				}
				out := mustRun(t, qemuIo, append(args, srv.uri)...)
				assert.NotContains(t, out, "Pattern verification failed")
				assert.NotContains(t, out, "failed:")
				return out
			}

			io("write -P 0xab 0 1M", "write -P 0xcd 1M 1M")
			io("read -P 0xab 0 1M", "read -P 0xcd 1M 1M")
			io("write -z 512k 64k", "read -P 0 512k 64k", "read -P 0xab 0 512k")
			io("discard 1M 1M", "read -P 0 1M 1M")
			io("write -P 0x11 3000 5000", "read -P 0x11 3000 5000", "read -P 0 2M 2M")

			data := fileBytes(t, img)
			assert.True(t, bytes.Equal(bytes.Repeat([]byte{0xab}, 3000), data[:3000]), "pattern 0xab before 3000")
			assert.True(t, bytes.Equal(bytes.Repeat([]byte{0x11}, 5000), data[3000:8000]), "pattern 0x11 at 3000")
			assert.True(t, bytes.Equal(bytes.Repeat([]byte{0xab}, 512<<10-8000), data[8000:512<<10]), "pattern 0xab up to 512k")
			assert.True(t, bytes.Equal(make([]byte, 64<<10), data[512<<10:576<<10]), "zeroes at 512k")
			assert.True(t, bytes.Equal(make([]byte, 1<<20), data[1<<20:2<<20]), "zeroes after discard at 1M")
		})
	}
}

func TestQemuIoImageOptsMemory(t *testing.T) {
	qemuIo := requireTool(t, "qemu-io")
	srv := serveUnix(t, "-t", "--image-opts", "driver=memory,size=64M")

	mustRun(t, qemuIo, "-f", "raw", "-c", "write -P 0x5a 10M 1M", srv.uri)
	out := mustRun(t, qemuIo, "-f", "raw", "-c", "read -P 0x5a 10M 1M", "-c", "read -P 0 0 10M", srv.uri)
	assert.NotContains(t, out, "Pattern verification failed")
}

func TestOffsetFlag(t *testing.T) {
	qemuIo := requireTool(t, "qemu-io")
	img := sparseImage(t, 2<<20)
	srv := serveUnix(t, "-t", "-f", "raw", "-o", "1048576", img)

	out := mustRun(t, requireTool(t, "nbdinfo"), "--size", srv.uri)
	assert.Equal(t, "1048576\n", out)

	mustRun(t, qemuIo, "-f", "raw", "-c", "write -P 0x77 0 4096", srv.uri)
	data := fileBytes(t, img)
	assert.Equal(t, bytes.Repeat([]byte{0x77}, 4096), data[1<<20:1<<20+4096])
	assert.Equal(t, make([]byte, 4096), data[:4096])
}

func TestNbdinfoList(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo")
	img := sparseImage(t, 1<<20)
	srv := serveUnix(t, "-t", "-x", "disk0", "-D", "test disk", "-f", "raw", img)

	out := mustRun(t, nbdinfo, "--list", srv.uri)
	assert.Contains(t, out, `export="disk0"`)
	assert.Contains(t, out, "description: test disk")
	assert.Contains(t, out, "export-size: 1048576")
}

func TestNbdinfoJSON(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo")
	img := sparseImage(t, 32<<20)
	srv := serveTCP(t, "-t", "-r", "-f", "raw", img)

	out := mustRun(t, nbdinfo, "--json", srv.uri)
	var info struct {
		Exports []map[string]any `json:"exports"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &info), out)
	require.Len(t, info.Exports, 1)
	e := info.Exports[0]
	assert.Equal(t, float64(32<<20), e["export-size"])
	assert.Equal(t, true, e["is_read_only"])
	assert.Equal(t, true, e["can_flush"])
	assert.Equal(t, false, e["can_multi_conn"], "qemu-nbd 7.2 advertises multi-conn only when -e is not 1")
	assert.Contains(t, e["contexts"], "base:allocation")
}

func TestNbdinfoMap(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo")
	qemuIo := requireTool(t, "qemu-io")
	img := sparseImage(t, 4<<20)
	mustRun(t, qemuIo, "-f", "raw", "-c", "write -P 1 1M 1M", img)
	srv := serveUnix(t, "-t", "-r", "-f", "raw", img)

	out := mustRun(t, nbdinfo, "--map", srv.uri)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 3, out)
	assert.Equal(t, []string{"0", "1048576", "3", "hole,zero"}, strings.Fields(lines[0]))
	assert.Equal(t, []string{"1048576", "1048576", "0", "data"}, strings.Fields(lines[1]))
	assert.Equal(t, []string{"2097152", "2097152", "3", "hole,zero"}, strings.Fields(lines[2]))
}

func TestNbdcopyBothDirections(t *testing.T) {
	nbdcopy := requireTool(t, "nbdcopy")
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			src := randomImage(t, 32<<20, 5)
			img := sparseImage(t, 32<<20)
			srv := tr.serve(t, "-t", "-e", "0", "-f", "raw", img)

			mustRun(t, nbdcopy, src, srv.uri)
			sameFiles(t, src, img)

			out := filepath.Join(t.TempDir(), "out.img")
			mustRun(t, nbdcopy, srv.uri, out)
			sameFiles(t, src, out)
		})
	}
}

func TestReadOnlyRejectsWrites(t *testing.T) {
	qemuIo := requireTool(t, "qemu-io")
	nbdcopy := requireTool(t, "nbdcopy")
	img := randomImage(t, 1<<20, 6)
	before := fileBytes(t, img)
	srv := serveUnix(t, "-t", "-r", "-f", "raw", img)

	r := run(t, qemuIo, "-f", "raw", "-c", "write 0 512", srv.uri)
	assert.NotEqual(t, 0, r.code, "qemu-io write to a read-only export must fail")
	r = run(t, nbdcopy, sparseImage(t, 1<<20), srv.uri)
	assert.NotEqual(t, 0, r.code, "nbdcopy to a read-only export must fail")
	assert.Equal(t, before, fileBytes(t, img))
}

func TestUnknownExportNameFails(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo")
	img := sparseImage(t, 1<<20)
	srv := serveTCP(t, "-t", "-x", "disk0", "-f", "raw", img)

	r := run(t, nbdinfo, strings.TrimSuffix(srv.uri, "/")+"/nope")
	assert.NotEqual(t, 0, r.code)
	assert.Contains(t, r.stderr, "nope")

	mustRun(t, nbdinfo, strings.TrimSuffix(srv.uri, "/")+"/disk0")
}

func TestAllocationDepthMap(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo")
	img := sparseImage(t, 4<<20)
	srv := serveUnix(t, "-t", "-r", "-A", "-f", "raw", img)

	out := mustRun(t, nbdinfo, "--map=qemu:allocation-depth", srv.uri)
	assert.Equal(t, []string{"0", "4194304", "1", "local"}, strings.Fields(out))
}
