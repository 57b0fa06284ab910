package integration

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/gonbd/gonbd/export"
	_ "github.com/gonbd/gonbd/export/file"
	"github.com/gonbd/gonbd/nbdtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// nbdtestKinds are the TLS kinds every nbdtest peer test runs with.
var nbdtestKinds = []struct {
	name string
	opts []nbdtest.Option
	tls  bool
}{
	{"Plain", nil, false},
	{"PSK", []nbdtest.Option{nbdtest.PSK()}, true},
	{"X509", []nbdtest.Option{nbdtest.X509()}, true},
}

func TestNBDTestQemuImgInfo(t *testing.T) {
	qemuImg := requireTool(t, "qemu-img")
	for _, kind := range nbdtestKinds {
		t.Run(kind.name, func(t *testing.T) {
			srv := nbdtest.Start(t, append(kind.opts, nbdtest.Size(8<<20))...)

			out := mustRun(t, qemuImg, append([]string{"info", "--output=json"}, srv.QEMUArgs()...)...)
			var info struct {
				VirtualSize int64 `json:"virtual-size"`
			}
			require.NoError(t, json.Unmarshal([]byte(out), &info), out)
			assert.Equal(t, int64(8<<20), info.VirtualSize)
		})
	}
}

func TestNBDTestQemuIo(t *testing.T) {
	qemuIo := requireTool(t, "qemu-io")
	for _, kind := range nbdtestKinds {
		t.Run(kind.name, func(t *testing.T) {
			srv := nbdtest.Start(t, kind.opts...)

			qemuIoRun := func(cmds ...string) string {
				var args []string
				for _, c := range cmds {
					args = append(args, "-c", c)
				}
				out := mustRun(t, qemuIo, append(args, srv.QEMUArgs()...)...)
				assert.NotContains(t, out, "Pattern verification failed")
				assert.NotContains(t, out, "failed:")
				return out
			}
			qemuIoRun("write -P 0xab 0 1M", "write -z 256k 64k")
			qemuIoRun("read -P 0xab 0 256k", "read -P 0 256k 64k", "read -P 0 1M 1M")

			got := make([]byte, 1<<20)
			_, err := srv.Backend().ReadAt(got, 0)
			require.NoError(t, err)
			want := bytes.Repeat([]byte{0xab}, 1<<20)
			copy(want[256<<10:320<<10], make([]byte, 64<<10))
			assert.Equal(t, want, got)
		})
	}
}

func TestNBDTestQemuIoReadOnly(t *testing.T) {
	qemuIo := requireTool(t, "qemu-io")
	srv := nbdtest.Start(t, nbdtest.PSK(), nbdtest.ReadOnly())

	r := run(t, qemuIo, append([]string{"-c", "write -P 1 0 512"}, srv.QEMUArgs()...)...)
	assert.NotEqual(t, 0, r.code, "qemu-io write to a read-only export must fail:\n%s%s", r.stdout, r.stderr)
	// qemu-io 7.2 reads NBD_FLAG_READ_ONLY and fails to open the image
	// read-write ("Permission denied"), so no write reaches the server.
	out := mustRun(t, qemuIo, append([]string{"-r", "-c", "read -P 0 0 512"}, srv.QEMUArgs()...)...)
	assert.NotContains(t, out, "Pattern verification failed")

	got := make([]byte, 512)
	_, err := srv.Backend().ReadAt(got, 0)
	require.NoError(t, err)
	assert.Equal(t, make([]byte, 512), got)
}

func TestNBDTestNbdinfo(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo")
	for _, kind := range nbdtestKinds {
		t.Run(kind.name, func(t *testing.T) {
			srv := nbdtest.Start(t, append(kind.opts, nbdtest.ReadOnly())...)

			out := mustRun(t, nbdinfo, "--json", srv.URI())
			var info struct {
				TLS     bool             `json:"TLS"`
				Exports []map[string]any `json:"exports"`
			}
			require.NoError(t, json.Unmarshal([]byte(out), &info), out)
			assert.Equal(t, kind.tls, info.TLS)
			require.Len(t, info.Exports, 1)
			assert.Equal(t, float64(nbdtest.DefaultSize), info.Exports[0]["export-size"])
			assert.Equal(t, true, info.Exports[0]["is_read_only"])
		})
	}
}

func TestNBDTestNbdcopy(t *testing.T) {
	nbdcopy := requireTool(t, "nbdcopy")
	for _, kind := range nbdtestKinds {
		t.Run(kind.name, func(t *testing.T) {
			src := randomImage(t, nbdtest.DefaultSize, 7)
			srv := nbdtest.Start(t, kind.opts...)

			mustRun(t, nbdcopy, src, srv.URI())
			got := make([]byte, nbdtest.DefaultSize)
			_, err := srv.Backend().ReadAt(got, 0)
			require.NoError(t, err)
			assert.True(t, bytes.Equal(fileBytes(t, src), got), "export differs from %s after nbdcopy", src)

			out := filepath.Join(t.TempDir(), "out.img")
			mustRun(t, nbdcopy, srv.URI(), out)
			sameFiles(t, src, out)
		})
	}
}

// TestNBDTestFileBackend serves an image file through the file plugin
// and checks that qemu-img's writes reach the file.
func TestNBDTestFileBackend(t *testing.T) {
	qemuImg := requireTool(t, "qemu-img")
	img := sparseImage(t, 4<<20)
	b, err := export.Open("file", export.Options{"filename": img})
	require.NoError(t, err)
	t.Cleanup(func() {
		if c, ok := b.(interface{ Close() error }); ok {
			assert.NoError(t, c.Close())
		}
	})
	srv := nbdtest.Start(t, nbdtest.X509(), nbdtest.Backend(b))

	src := randomImage(t, 4<<20, 8)
	// qemu-img convert names the target's options --target-image-opts, so
	// take the --object arguments from QEMUArgs and the options alone.
	qemuArgs := srv.QEMUArgs()
	args := append([]string{"convert", "-n", "-f", "raw", "--target-image-opts"}, qemuArgs[:len(qemuArgs)-2]...)
	mustRun(t, qemuImg, append(args, src, srv.QEMUImageOpts())...)

	require.NoError(t, srv.Close(), "Close flushes the file")
	sameFiles(t, src, img)
}

// TestNBDTestNbdinfoExportName checks that libnbd decodes the export name
// that URI percent-encodes.
func TestNBDTestNbdinfoExportName(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo")
	srv := nbdtest.Start(t, nbdtest.PSK(), nbdtest.ExportName("disk one"))

	out := mustRun(t, nbdinfo, "--json", srv.URI())
	var info struct {
		Exports []map[string]any `json:"exports"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &info), out)
	require.Len(t, info.Exports, 1)
	assert.Equal(t, "disk one", info.Exports[0]["export-name"])
}

// TestNBDTestQemuImgExportName checks that QEMUArgs escapes a comma in the
// export name for QemuOpts.
func TestNBDTestQemuImgExportName(t *testing.T) {
	qemuImg := requireTool(t, "qemu-img")
	srv := nbdtest.Start(t, nbdtest.X509(), nbdtest.ExportName("disk,one"), nbdtest.Size(2<<20))

	out := mustRun(t, qemuImg, append([]string{"info", "--output=json"}, srv.QEMUArgs()...)...)
	var info struct {
		VirtualSize int64 `json:"virtual-size"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &info), out)
	assert.Equal(t, int64(2<<20), info.VirtualSize)
}
