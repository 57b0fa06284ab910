package nbd

import (
	"crypto/rand"
	"encoding/binary"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gonbd/gonbd/export"
	_ "github.com/gonbd/gonbd/export/file"
	"github.com/gonbd/gonbd/nbd/proto"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fileExport writes size random bytes after a 4 KiB header to a file,
// opens it with the file driver and offset=4096, and returns the backend
// and the export's bytes.
func fileExport(t *testing.T, size int) (export.Backend, string, []byte) {
	t.Helper()
	raw := make([]byte, 4096+size)
	_, err := rand.Read(raw)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "disk.img")
	require.NoError(t, os.WriteFile(path, raw, 0o600))

	b, err := export.Open("file", export.Options{"filename": path, "offset": "4096"})
	require.NoError(t, err)
	if c, ok := b.(io.Closer); ok {
		t.Cleanup(func() { c.Close() })
	}
	_, ok := b.(export.FileSectioner)
	require.True(t, ok, "the file driver offers sendfile")
	return b, path, raw[4096:]
}

// dialFileExport serves b on a TCP or Unix listener and negotiates.
func dialFileExport(t *testing.T, b export.Backend, network string, structured bool) *testWire {
	t.Helper()
	var l net.Listener
	if network == "unix" {
		l, _ = listenUnix(t)
	} else {
		l, _ = listenTCP(t)
	}
	startServer(t, ServerConfig{Exports: []*Export{{Name: "", Backend: b}}}, l)
	conn, err := net.Dial(network, l.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	w := &testWire{t: t, conn: conn}
	w.negotiate(structured)
	return w
}

// TestReadSendfile reads ranges of a file export, which the server sends
// with sendfile, over TCP and Unix sockets with simple and structured
// replies, and compares them with the file.
func TestReadSendfile(t *testing.T) {
	const size = 1 << 20
	ranges := []struct{ off, n int }{{0, 65536}, {12345, 1000}, {size - 777, 777}, {4096, 256 << 10}}
	for _, tc := range []struct {
		name       string
		network    string
		structured bool
	}{
		{"TCPSimple", "tcp", false},
		{"TCPStructured", "tcp", true},
		{"UnixSimple", "unix", false},
		{"UnixStructured", "unix", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, _, want := fileExport(t, size)
			w := dialFileExport(t, b, tc.network, tc.structured)

			for i, rg := range ranges {
				w.request(proto.CmdRead, 0, uint64(i), uint64(rg.off), uint32(rg.n), nil)
				r := w.readTransmissionReply(rg.n)
				require.Equal(t, uint64(i), r.cookie)
				require.Zero(t, r.errno)
				data := r.data
				if tc.structured {
					require.Equal(t, proto.ReplyTypeOffsetData, r.chunk.Type)
					require.Equal(t, uint64(rg.off), binary.BigEndian.Uint64(data[:8]))
					data = data[8:]
				}
				assert.Equal(t, want[rg.off:rg.off+rg.n], data, "range %d+%d", rg.off, rg.n)
			}
		})
	}
}

// TestReadSendfileFileShrank truncates the image under the server: the
// reply header promised more bytes than the file has, so the server
// must close the connection after the bytes it could send.
func TestReadSendfileFileShrank(t *testing.T) {
	b, path, _ := fileExport(t, 1<<20)
	w := dialFileExport(t, b, "tcp", false)
	require.NoError(t, os.Truncate(path, 4096+512))

	w.request(proto.CmdRead, 0, 1, 0, 4096, nil)
	require.NoError(t, w.conn.SetReadDeadline(time.Now().Add(wireTimeout)))
	got, err := io.ReadAll(w.conn)
	require.NoError(t, err, "the server closes the connection")
	assert.Equal(t, proto.SimpleReplyHeaderSize+512, len(got), "header and the 512 bytes left")
}
