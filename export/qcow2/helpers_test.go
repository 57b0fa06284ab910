package qcow2

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gonbd/gonbd/internal/testenv"
	"github.com/stretchr/testify/require"
)

// requireTool returns the path of a peer tool, failing the test under CI=true
// and skipping it otherwise when the tool is missing.
var requireTool = testenv.RequireTool

// qemu runs a QEMU tool and returns its standard output; a non-zero exit
// fails the test.
func qemu(t testing.TB, tool string, args ...string) string {
	t.Helper()
	out, code := qemuCode(t, tool, args...)
	require.Zero(t, code, "%s %s:\n%s", tool, strings.Join(args, " "), out)
	return out
}

func qemuCode(t testing.TB, tool string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(requireTool(t, tool), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), ee.ExitCode()
	}
	require.NoError(t, err)
	return out.String(), 0
}

// op is one request applied both through the driver and, with qemu-io, to
// a raw reference image.
type op struct {
	kind    string // write, zero or trim
	off, n  int64
	pattern byte
}

func (o op) qemuIO() string {
	switch o.kind {
	case "write":
		return fmt.Sprintf("write -P %d %d %d", o.pattern, o.off, o.n)
	default:
		// A trimmed range of a version 3 image, or of one without a
		// backing file, reads as zeroes.
		return fmt.Sprintf("write -z %d %d", o.off, o.n)
	}
}

// apply runs ops on img through the driver.
func apply(t testing.TB, img *Image, ops []op) {
	t.Helper()
	for _, o := range ops {
		switch o.kind {
		case "write":
			_, err := img.WriteAt(bytes.Repeat([]byte{o.pattern}, int(o.n)), o.off)
			require.NoError(t, err, "write %d+%d", o.off, o.n)
		case "zero":
			require.NoError(t, img.Zero(o.off, o.n, 0), "zero %d+%d", o.off, o.n)
		case "zerotrim":
			require.NoError(t, img.Zero(o.off, o.n, 1), "zero may-trim %d+%d", o.off, o.n)
		case "trim":
			require.NoError(t, img.Trim(o.off, o.n), "trim %d+%d", o.off, o.n)
		}
	}
}

// applyRaw runs ops on a raw image with qemu-io.
func applyRaw(t testing.TB, raw string, ops []op) {
	t.Helper()
	args := []string{"-f", "raw"}
	for _, o := range ops {
		args = append(args, "-c", o.qemuIO())
	}
	qemu(t, "qemu-io", append(args, raw)...)
}

// qemuIOWrite runs writes on any image with qemu-io.
func qemuIOWrite(t testing.TB, format, path string, ops []op) {
	t.Helper()
	args := []string{"-f", format}
	for _, o := range ops {
		args = append(args, "-c", o.qemuIO())
	}
	qemu(t, "qemu-io", append(args, path)...)
}

// toRaw converts an image to raw with qemu-img, the reference reader.
func toRaw(t testing.TB, path string) string {
	t.Helper()
	raw := path + ".ref.raw"
	qemu(t, "qemu-img", "convert", "-O", "raw", path, raw)
	return raw
}

// requireClean runs qemu-img check and fails on errors or leaks.
func requireClean(t testing.TB, path string) {
	t.Helper()
	out, code := qemuCode(t, "qemu-img", "check", path)
	require.Zero(t, code, "qemu-img check %s:\n%s", path, out)
	require.Contains(t, out, "No errors were found", "qemu-img check %s", path)
}

// requireSame compares an image with a raw reference using qemu-img.
func requireSame(t testing.TB, path, raw string) {
	t.Helper()
	out, code := qemuCode(t, "qemu-img", "compare", "-F", "raw", path, raw)
	require.Zero(t, code, "qemu-img compare %s %s:\n%s", path, raw, out)
}

// readAll reads the whole disk through the driver.
func readAll(t testing.TB, img *Image) []byte {
	t.Helper()
	size, err := img.Size()
	require.NoError(t, err)
	buf := make([]byte, size)
	// Odd-sized chunks cross cluster and run boundaries.
	const chunk = 96<<10 + 512
	for off := int64(0); off < size; off += chunk {
		end := min(size, off+chunk)
		_, err := img.ReadAt(buf[off:end], off)
		require.NoError(t, err, "read at %d", off)
	}
	return buf
}

func requireReadsAs(t testing.TB, img *Image, raw string) {
	t.Helper()
	want, err := os.ReadFile(raw)
	require.NoError(t, err)
	got := readAll(t, img)
	require.Equal(t, len(want), len(got), "disk size")
	if !bytes.Equal(want, got) {
		for i := range want {
			if want[i] != got[i] {
				t.Fatalf("disk differs from %s first at byte %d: got %#x, want %#x", raw, i, got[i], want[i])
			}
		}
	}
}

// mapEntry is one line of qemu-img map --output=json.
type mapEntry struct {
	Start   int64 `json:"start"`
	Length  int64 `json:"length"`
	Depth   int   `json:"depth"`
	Present bool  `json:"present"`
	Zero    bool  `json:"zero"`
	Data    bool  `json:"data"`
}

func qemuMap(t testing.TB, path string) []mapEntry {
	t.Helper()
	var m []mapEntry
	require.NoError(t, json.Unmarshal([]byte(qemu(t, "qemu-img", "map", "--output=json", path)), &m))
	return m
}

func createImage(t testing.TB, dir, name, size string, opts ...string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	args := []string{"create", "-q", "-f", "qcow2"}
	if len(opts) > 0 {
		args = append(args, "-o", strings.Join(opts, ","))
	}
	qemu(t, "qemu-img", append(args, path, size)...)
	return path
}

func openT(t testing.TB, path string, opts Options) *Image {
	t.Helper()
	img, err := Open(path, opts)
	require.NoError(t, err)
	return img
}

func fmtInt(n int64) string { return fmt.Sprint(n) }
