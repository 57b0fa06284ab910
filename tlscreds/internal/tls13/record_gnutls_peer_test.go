//go:build gnutlsrecord

package tls13

// This file records the sessions of keyschedule_gnutls_peer_test.go.
// testdata/record.sh runs it with the gnutlsrecord build tag.

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/cryptotest"
	"time"

	"github.com/stretchr/testify/require"
)

func TestRecordGnuTLSPeerSessions(t *testing.T) {
	for _, ps := range gonbdPeerSessions {
		t.Run(ps.name, func(t *testing.T) {
			keylog := filepath.Join(t.TempDir(), "keylog")
			var rec *recordingConn
			if ps.client {
				rec = recordClientSession(t, &ps, keylog)
			} else {
				rec = recordServerSession(t, &ps, keylog)
			}

			base := filepath.Join("testdata", "gonbd-"+ps.name)
			require.NoError(t, os.WriteFile(base+".records", []byte(rec.text()), 0o644))
			logged, err := os.ReadFile(keylog)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(base+".keylog", logged, 0o644))
		})
	}
}

// recordClientSession runs gonbd's client against gnutls-serv --echo.
func recordClientSession(t *testing.T, ps *gonbdPeerSession, keylog string) *recordingConn {
	port := freeTCPPort(t)
	serv := startGnuTLSTool(t, keylog, "gnutls-serv", "--echo", "--nodb", "--pskpasswd", "testdata/psk.txt",
		"--priority", ps.peerPriority, "--port", fmt.Sprint(port))
	serv.wait(t, "listening on IPv4")

	raw, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 10*time.Second)
	require.NoError(t, err)
	rec := newRecordingConn(raw, true)
	defer rec.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	defer watchContext(ctx, raw)()

	cryptotest.SetGlobalRandom(t, ps.seed)
	c, err := ClientHandshake(ctx, rec, ps.config(t))
	require.NoError(t, err)
	_, err = c.Write([]byte(gnutlsApplicationData))
	require.NoError(t, err)
	echo := make([]byte, len(gnutlsApplicationData))
	_, err = io.ReadFull(c, echo)
	require.NoError(t, err)
	require.Equal(t, gnutlsApplicationData, string(echo))
	require.NoError(t, c.CloseWrite())
	return rec
}

// recordServerSession runs gonbd's server against gnutls-cli, echoing the
// line that gnutls-cli sends.
func recordServerSession(t *testing.T, ps *gonbdPeerSession, keylog string) *recordingConn {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	identity, key := readRecordedPSK(t)
	cli := startGnuTLSTool(t, keylog, "gnutls-cli", "--priority", ps.peerPriority,
		"--pskusername", identity, "--pskkey", hex.EncodeToString(key), "--port", fmt.Sprint(port), "127.0.0.1")
	_, err = io.WriteString(cli.stdin, gnutlsApplicationData)
	require.NoError(t, err)

	_ = ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
	raw, err := ln.Accept()
	require.NoError(t, err)
	rec := newRecordingConn(raw, false)
	defer rec.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	defer watchContext(ctx, raw)()

	cryptotest.SetGlobalRandom(t, ps.seed)
	c, err := ServerHandshake(ctx, rec, ps.config(t))
	require.NoError(t, err)
	line := make([]byte, len(gnutlsApplicationData))
	_, err = io.ReadFull(c, line)
	require.NoError(t, err)
	_, err = c.Write(line)
	require.NoError(t, err)
	cli.wait(t, strings.TrimSpace(gnutlsApplicationData))

	// At the end of its input gnutls-cli sends close_notify and exits.
	require.NoError(t, cli.stdin.Close())
	_, err = c.Read(line)
	require.ErrorIs(t, err, io.EOF)
	require.NoError(t, c.CloseWrite())
	return rec
}

// gnutlsTool is a running gnutls-serv or gnutls-cli.
type gnutlsTool struct {
	stdin  io.WriteCloser
	output *syncBuffer
}

func startGnuTLSTool(t *testing.T, keylog, name string, args ...string) *gnutlsTool {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "SSLKEYLOGFILE="+keylog)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return &gnutlsTool{stdin: stdin, output: out}
}

// wait polls the tool's output for text for up to 10 seconds.
func (g *gnutlsTool) wait(t *testing.T, text string) {
	t.Helper()
	for range 200 {
		if strings.Contains(g.output.String(), text) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %q in the output:\n%s", text, g.output.String())
}

type syncBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// recordingConn logs every complete TLS record read or written, as the
// lines of a .records file.
type recordingConn struct {
	net.Conn
	isClient bool
	mu       sync.Mutex
	lines    []string
	pending  map[string][]byte
}

func newRecordingConn(conn net.Conn, isClient bool) *recordingConn {
	return &recordingConn{Conn: conn, isClient: isClient, pending: map[string][]byte{}}
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.log(c.direction(false), p[:n])
	return n, err
}

func (c *recordingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.log(c.direction(true), p[:n])
	return n, err
}

// direction returns "C" for bytes the client sends and "S" for bytes the
// server sends.
func (c *recordingConn) direction(write bool) string {
	if write == c.isClient {
		return "C"
	}
	return "S"
}

func (c *recordingConn) log(dir string, b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	buf := append(c.pending[dir], b...)
	for len(buf) >= recordHeaderLen {
		n := recordHeaderLen + int(binary.BigEndian.Uint16(buf[3:]))
		if len(buf) < n {
			break
		}
		c.lines = append(c.lines, dir+" "+hex.EncodeToString(buf[:n]))
		buf = buf[n:]
	}
	c.pending[dir] = append([]byte(nil), buf...)
}

func (c *recordingConn) text() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.lines, "\n") + "\n"
}
