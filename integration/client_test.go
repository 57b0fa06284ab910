package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gonbd/gonbd/nbd"
	"github.com/gonbd/gonbd/nbd/proto"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// These tests run the nbd client library, its qemu-nbd -L formatter and
// gonbdinfo against qemu-nbd and nbdkit, and compare the text with what
// qemu-nbd -L and nbdinfo print for the same server.

// clServer is an NBD server a client test started.
type clServer struct {
	// uri is the NBD URI of the server's first export.
	uri string
	// network and address are what to dial.
	network, address string
	// listArgs select the server for qemu-nbd -L.
	listArgs []string
}

// clServerSpec describes how to start one server for a test.
type clServerSpec struct {
	name   string
	tool   string
	export string
	// args builds the server's arguments from a scratch directory.
	args func(t *testing.T, dir string) []string
	// unix serves on a Unix socket instead of loopback TCP.
	unix bool
}

// clStart starts a server from spec and waits until it accepts clients.
func clStart(t *testing.T, spec clServerSpec) clServer {
	t.Helper()
	tool := requireTool(t, spec.tool)
	dir := t.TempDir()
	args := spec.args(t, dir)

	var s clServer
	var endpoint []string
	if spec.unix {
		sock := filepath.Join(dir, "nbd.sock")
		s.network, s.address = "unix", sock
		s.uri = fmt.Sprintf("nbd+unix:///%s?socket=%s", spec.export, sock)
		s.listArgs = []string{"-k", sock}
		if spec.tool == "qemu-nbd" {
			endpoint = []string{"-k", sock}
		} else {
			endpoint = []string{"-U", sock}
		}
	} else {
		port := freePort(t)
		s.network, s.address = "tcp", fmt.Sprintf("127.0.0.1:%d", port)
		s.uri = fmt.Sprintf("nbd://127.0.0.1:%d/%s", port, spec.export)
		s.listArgs = []string{"-b", "127.0.0.1", "-p", strconv.Itoa(port)}
		if spec.tool == "qemu-nbd" {
			endpoint = []string{"-b", "127.0.0.1", "-p", strconv.Itoa(port)}
		} else {
			endpoint = []string{"-i", "127.0.0.1", "-p", strconv.Itoa(port)}
		}
	}

	if spec.tool == "qemu-nbd" {
		args = append(append([]string{"-t"}, endpoint...), args...)
	} else {
		args = append(append([]string{"-f", "--exit-with-parent"}, endpoint...), args...)
	}
	p := start(t, tool, args...)
	if spec.unix {
		waitUnix(t, p, s.address)
	} else {
		waitTCP(t, p, s.address)
	}
	return s
}

// clImage creates a disk image of the given format and size in dir, with
// 1 MiB of 0x55 at offset 0 and an explicit zero cluster at 2 MiB, and
// returns its path.
func clImage(t *testing.T, dir, format string, size string) string {
	t.Helper()
	path := filepath.Join(dir, "disk."+format)
	mustRun(t, requireTool(t, "qemu-img"), "create", "-q", "-f", format, path, size)
	mustRun(t, requireTool(t, "qemu-io"), "-f", format, "-c", "write -q -P 0x55 0 1M", "-c", "write -q -z 2M 64k", path)
	return path
}

// clServers are the servers the comparison tests run against.
var clServers = []clServerSpec{
	{name: "QemuNbdQcow2", tool: "qemu-nbd", export: "disk", args: func(t *testing.T, dir string) []string {
		return []string{"-f", "qcow2", "-x", "disk", "-D", "a qcow2 image", clImage(t, dir, "qcow2", "64M")}
	}},
	{name: "QemuNbdUnixSocket", tool: "qemu-nbd", export: "", unix: true, args: func(t *testing.T, dir string) []string {
		return []string{"-f", "raw", clImage(t, dir, "raw", "8M")}
	}},
	{name: "QemuNbdReadOnlyDepthBitmap", tool: "qemu-nbd", export: "ro", args: func(t *testing.T, dir string) []string {
		img := clImage(t, dir, "qcow2", "16M")
		mustRun(t, requireTool(t, "qemu-img"), "bitmap", "--add", img, "b0")
		return []string{"-r", "-A", "-B", "b0", "-f", "qcow2", "-x", "ro", img}
	}},
	{name: "NbdkitMemory", tool: "nbdkit", export: "", args: func(t *testing.T, dir string) []string {
		return []string{"memory", "1M"}
	}},
	{name: "NbdkitFileDirectory", tool: "nbdkit", export: "one", args: func(t *testing.T, dir string) []string {
		exports := filepath.Join(dir, "exports")
		require.NoError(t, os.Mkdir(exports, 0o755))
		for name, size := range map[string]int64{"one": 1 << 20, "two": 3 << 20} {
			require.NoError(t, os.WriteFile(filepath.Join(exports, name), make([]byte, size), 0o644))
		}
		return []string{"file", "dir=" + exports}
	}},
	{name: "NbdkitBlockSizePolicy", tool: "nbdkit", export: "", args: func(t *testing.T, dir string) []string {
		return []string{"--filter=blocksize-policy", "memory", "4M",
			"blocksize-minimum=512", "blocksize-preferred=16384", "blocksize-maximum=1048576"}
	}},
	{name: "NbdkitNoStructuredReplies", tool: "nbdkit", export: "", args: func(t *testing.T, dir string) []string {
		return []string{"--no-sr", "memory", "2M"}
	}},
	{name: "NbdkitUnixSocketFile", tool: "nbdkit", export: "", unix: true, args: func(t *testing.T, dir string) []string {
		return []string{"file", clImage(t, dir, "raw", "4M")}
	}},
}

func TestQemuListMatchesQemuNbd(t *testing.T) {
	for _, spec := range clServers {
		t.Run(spec.name, func(t *testing.T) {
			s := clStart(t, spec)
			want := mustRun(t, requireTool(t, "qemu-nbd"), append([]string{"-L"}, s.listArgs...)...)

			var got bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			require.NoError(t, nbd.ListCommand(ctx, &got, s.network, s.address, nil, "", nil))
			assert.Equal(t, want, got.String())
		})
	}
}

// clInfoModes are the gonbdinfo and nbdinfo option sets compared.
var clInfoModes = [][]string{
	{},
	{"--json"},
	{"--list"},
	{"--list", "--json"},
	{"--size"},
	{"--map"},
	{"--map", "--json"},
	{"--map", "--totals"},
	{"--map", "--totals", "--json"},
	{"--no-content"},
}

func TestGonbdinfoMatchesNbdinfo(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo")
	gonbdinfo := bin(t, "gonbdinfo")
	for _, spec := range clServers {
		t.Run(spec.name, func(t *testing.T) {
			s := clStart(t, spec)
			modes := clInfoModes
			if spec.name == "QemuNbdReadOnlyDepthBitmap" {
				modes = append(modes, []string{"--map=qemu:allocation-depth"}, []string{"--map=qemu:dirty-bitmap:b0", "--json"})
			}
			for _, mode := range modes {
				args := append(append([]string{}, mode...), s.uri)
				want := run(t, nbdinfo, args...)
				got := run(t, gonbdinfo, args...)
				if want.code != 0 {
					t.Logf("nbdinfo %v exits %d: %s", mode, want.code, want.stderr)
				}
				assert.Equal(t, want.code, got.code, "exit code of %v; gonbdinfo stderr: %s", mode, got.stderr)
				assert.Equal(t, want.stdout, got.stdout, "output of %v", mode)
			}
		})
	}
}

func TestGonbdinfoCanMatchesNbdinfo(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo")
	gonbdinfo := bin(t, "gonbdinfo")
	features := []string{"connect", "read", "write", "tls", "structured", "read-only", "rotational",
		"cache", "df", "fast-zero", "flush", "fua", "multi-conn", "trim", "zero", "no-such-feature"}
	for _, spec := range clServers {
		t.Run(spec.name, func(t *testing.T) {
			s := clStart(t, spec)
			for _, f := range features {
				flag := "--can"
				if f == "read-only" || f == "rotational" {
					flag = "--is"
				}
				want := run(t, nbdinfo, flag, f, s.uri)
				got := run(t, gonbdinfo, flag, f, s.uri)
				assert.Equal(t, want.code, got.code, "%s %s; gonbdinfo stderr: %s", flag, f, got.stderr)
			}
		})
	}
}

// clIOServers are writable servers for the read/write tests.
var clIOServers = []clServerSpec{
	{name: "QemuNbdQcow2", tool: "qemu-nbd", export: "disk", args: func(t *testing.T, dir string) []string {
		return []string{"-f", "qcow2", "-x", "disk", "--discard=unmap", clImage(t, dir, "qcow2", "64M")}
	}},
	{name: "QemuNbdUnixRaw", tool: "qemu-nbd", unix: true, args: func(t *testing.T, dir string) []string {
		return []string{"-f", "raw", "--discard=unmap", clImage(t, dir, "raw", "64M")}
	}},
	{name: "NbdkitMemory", tool: "nbdkit", args: func(t *testing.T, dir string) []string {
		return []string{"memory", "64M"}
	}},
	{name: "NbdkitFile", tool: "nbdkit", args: func(t *testing.T, dir string) []string {
		return []string{"file", clImage(t, dir, "raw", "64M")}
	}},
}

func TestClientReadWriteZeroTrim(t *testing.T) {
	for _, spec := range clIOServers {
		t.Run(spec.name, func(t *testing.T) {
			s := clStart(t, spec)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c, err := nbd.Dial(ctx, s.uri)
			require.NoError(t, err)
			defer c.Close()
			require.Equal(t, int64(64<<20), c.Size())

			// A write larger than the 32 MiB maximum block size is split.
			data := make([]byte, 40<<20)
			_, err = rand.Read(data)
			require.NoError(t, err)
			n, err := c.WriteAt(data, 8<<20)
			require.NoError(t, err)
			require.Equal(t, len(data), n)
			require.NoError(t, c.Flush())

			got := make([]byte, len(data))
			n, err = c.ReadAt(got, 8<<20)
			require.NoError(t, err)
			require.Equal(t, len(data), n)
			require.True(t, bytes.Equal(data, got), "data read back differs from data written")

			// Many goroutines read at once on the one connection.
			var wg sync.WaitGroup
			errs := make([]error, 32)
			for g := range errs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					off := int64(8<<20 + g*(1<<20))
					buf := make([]byte, 1<<20)
					if _, err := c.ReadAt(buf, off); err != nil {
						errs[g] = err
						return
					}
					if !bytes.Equal(buf, data[off-8<<20:off-8<<20+1<<20]) {
						errs[g] = fmt.Errorf("concurrent read at %d returned wrong data", off)
					}
				}()
			}
			wg.Wait()
			for _, err := range errs {
				assert.NoError(t, err)
			}

			// Zeroing reads back as zeroes, and block status reports it.
			require.NoError(t, c.Zero(8<<20, 1<<20))
			buf := make([]byte, 1<<20)
			_, err = c.ReadAt(buf, 8<<20)
			require.NoError(t, err)
			assert.True(t, bytes.Equal(buf, make([]byte, 1<<20)), "zeroed range does not read as zeroes")
			extents, err := c.BlockStatus(8<<20, 1<<20, proto.ContextBaseAllocation)
			require.NoError(t, err)
			require.NotEmpty(t, extents)
			assert.Equal(t, int64(8<<20), extents[0].Offset)
			assert.NotZero(t, extents[0].Flags&proto.StateZero, "zeroed range has block status %+v", extents)

			// Trim is accepted; the content of a trimmed range is
			// unspecified, so only the reply is checked.
			require.NoError(t, c.Trim(16<<20, 1<<20))

			// Reads past the end follow io.ReaderAt.
			n, err = c.ReadAt(make([]byte, 4096), c.Size()-1024)
			assert.Equal(t, 1024, n)
			assert.ErrorIs(t, err, io.EOF)
		})
	}
}

func TestClientOldServers(t *testing.T) {
	tests := []struct {
		name           string
		args           []string
		protocol       string
		structured     bool
		wantBlockSizes bool
	}{
		{"NoStructuredReplies", []string{"--no-sr"}, "newstyle-fixed", false, false},
		{"NonFixedNewstyle", []string{"--mask-handshake=0"}, "newstyle", false, false},
		{"Oldstyle", []string{"-o"}, "oldstyle", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := clStart(t, clServerSpec{tool: "nbdkit", args: func(t *testing.T, dir string) []string {
				return append(tt.args, "memory", "4M")
			}})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c, err := nbd.Dial(ctx, s.uri)
			require.NoError(t, err)
			defer c.Close()
			assert.Equal(t, tt.protocol, c.Protocol())
			assert.Equal(t, tt.structured, c.StructuredReplies())
			assert.Equal(t, int64(4<<20), c.Size())

			data := bytes.Repeat([]byte("gonbd"), 1000)
			_, err = c.WriteAt(data, 4096)
			require.NoError(t, err)
			got := make([]byte, len(data))
			_, err = c.ReadAt(got, 4096)
			require.NoError(t, err)
			assert.Equal(t, data, got)

			_, err = c.BlockStatus(0, 4096, proto.ContextBaseAllocation)
			assert.ErrorContains(t, err, "was not negotiated")
		})
	}
}

func TestClientUnknownExport(t *testing.T) {
	s := clStart(t, clIOServers[0])
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := nbd.Dial(ctx, strings.TrimSuffix(s.uri, "disk")+"nosuch")
	var oe *nbd.OptionError
	require.ErrorAs(t, err, &oe)
	assert.Equal(t, proto.RepErrUnknown, oe.Reply)
	assert.Contains(t, err.Error(), `no export named "nosuch"`)
}

func TestClientReadOnlyExport(t *testing.T) {
	s := clStart(t, clServerSpec{tool: "qemu-nbd", args: func(t *testing.T, dir string) []string {
		return []string{"-r", "-f", "raw", clImage(t, dir, "raw", "4M")}
	}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := nbd.Dial(ctx, s.uri)
	require.NoError(t, err)
	defer c.Close()
	_, err = c.WriteAt([]byte{1}, 0)
	assert.ErrorIs(t, err, nbd.ErrReadOnly)
	buf := make([]byte, 4096)
	_, err = c.ReadAt(buf, 0)
	require.NoError(t, err)
	assert.Equal(t, byte(0x55), buf[0])
}

func TestClientRequestErrorKeepsConnection(t *testing.T) {
	// The error filter fails every read with EIO; the connection stays
	// usable for writes.
	s := clStart(t, clServerSpec{tool: "nbdkit", args: func(t *testing.T, dir string) []string {
		return []string{"--filter=error", "memory", "1M", "error=EIO", "error-pread-rate=100%"}
	}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := nbd.Dial(ctx, s.uri)
	require.NoError(t, err)
	defer c.Close()

	_, err = c.ReadAt(make([]byte, 512), 0)
	var re *nbd.RequestError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, proto.EIO, re.Errno)
	assert.True(t, errors.Is(err, proto.EIO))

	_, err = c.WriteAt(make([]byte, 512), 0)
	assert.NoError(t, err)
}

func TestClientTLSRequiredWithoutCredentials(t *testing.T) {
	certs := clX509Dirs(t)
	s := clStart(t, clServerSpec{tool: "nbdkit", args: func(t *testing.T, dir string) []string {
		return []string{"--tls=require", "--tls-certificates=" + certs.server, "memory", "1M"}
	}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := nbd.Dial(ctx, s.uri)
	var oe *nbd.OptionError
	require.ErrorAs(t, err, &oe)
	assert.Equal(t, proto.RepErrTLSReqd, oe.Reply)
	assert.Contains(t, err.Error(), "pass --tls-creds")
}
