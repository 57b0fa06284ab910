package tlscreds

import (
	"bytes"
	"context"
	"crypto/rand"
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
	"time"

	"github.com/gonbd/gonbd/tlscreds/internal/tls13"
	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// pskFixture is a keys.psk with one user and its key in hex.
type pskFixture struct {
	dir, file, user, hexKey string
}

func newPSKFixture(t testing.TB, user string) pskFixture {
	t.Helper()
	key := make([]byte, 32)
	_, err := rand.Read(key)
	require.NoError(t, err)
	f := pskFixture{dir: t.TempDir(), user: user, hexKey: hex.EncodeToString(key)}
	f.file = filepath.Join(f.dir, PSKKeysFileName)
	require.NoError(t, os.WriteFile(f.file, []byte(user+":"+f.hexKey+"\n"), 0o600))
	return f
}

// lockedBuffer collects a peer process's output while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// peerProcess is a gnutls or openssl process the test talks to.
type peerProcess struct {
	cmd            *exec.Cmd
	stdin          io.WriteCloser
	stdout, stderr *lockedBuffer
	done           chan error
}

func startPeer(t testing.TB, name string, args ...string) *peerProcess {
	t.Helper()
	p := &peerProcess{cmd: exec.Command(name, args...), stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, done: make(chan error, 1)}
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	stdin, err := p.cmd.StdinPipe()
	require.NoError(t, err)
	p.stdin = stdin
	require.NoError(t, p.cmd.Start())
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s stdout (start):\n%s\nstderr:\n%s", name, head(p.stdout.String(), 1500), head(p.stderr.String(), 3000))
		}
	})
	return p
}

// waitOutput waits until the peer's stdout or stderr contains want.
func (p *peerProcess) waitOutput(t testing.TB, want string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if strings.Contains(p.stdout.String(), want) || strings.Contains(p.stderr.String(), want) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("peer output lacks %q after 15s", want)
}

// testPayload returns n printable bytes ending in a newline, because the
// peer tools pass data through line-oriented terminals.
func testPayload(tag string, n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "%s line %06d %s\n", tag, i, strings.Repeat("x", 50))
	}
	return b.Bytes()
}

// serveOnce accepts one connection on a loopback listener, runs the PSK
// server handshake, reads want bytes, writes reply and closes. Its result
// arrives on the returned channel.
func serveOnce(t testing.TB, psk *PSK, want, reply []byte) (port int, result chan serveResult) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	result = make(chan serveResult, 1)
	go func() {
		result <- serveConn(l, psk, want, reply)
	}()
	return l.Addr().(*net.TCPAddr).Port, result
}

type serveResult struct {
	info    Info
	group   string
	retried bool
	got     []byte
	err     error
}

// sessionDetails returns what Info does not carry: the group and whether
// a HelloRetryRequest was needed.
func sessionDetails(c Conn) (group string, retried bool) {
	pc := c.(pskConn)
	return pc.Group(), pc.HelloRetried()
}

func serveConn(l net.Listener, psk *PSK, want, reply []byte) serveResult {
	raw, err := l.Accept()
	if err != nil {
		return serveResult{err: err}
	}
	defer raw.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := psk.ServerHandshake(ctx, raw)
	if err != nil {
		return serveResult{err: err}
	}
	defer c.Close()
	r := serveResult{info: c.TLSInfo(), got: make([]byte, len(want))}
	r.group, r.retried = sessionDetails(c)
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.ReadFull(c, r.got); err != nil {
		r.err = fmt.Errorf("read: %w", err)
		return r
	}
	if _, err := c.Write(reply); err != nil {
		r.err = fmt.Errorf("write: %w", err)
	}
	return r
}

func loadTestPSK(t testing.TB, f pskFixture, endpoint Endpoint, pr Priority) *PSK {
	t.Helper()
	psk, err := LoadPSK(PSKConfig{Dir: f.dir, Endpoint: endpoint, Username: f.user, Priority: pr,
		Logger: hclog.New(&hclog.LoggerOptions{Output: testWriter{t}, Level: hclog.Debug})})
	require.NoError(t, err)
	return psk
}

// testWriter sends log output to t.Log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

const gnutlsBasePriority = "NORMAL:-VERS-ALL:+VERS-TLS1.3:+ECDHE-PSK:+PSK"

var gnutlsClientCases = []struct {
	name     string
	priority string
	server   Priority
	suite    string
	group    string
	retried  bool
}{
	{"AES128GCM", gnutlsBasePriority + ":-CIPHER-ALL:+AES-128-GCM", Priority{}, "TLS_AES_128_GCM_SHA256", "x25519", false},
	{"ChaCha20Poly1305", gnutlsBasePriority + ":-CIPHER-ALL:+CHACHA20-POLY1305", Priority{}, "TLS_CHACHA20_POLY1305_SHA256", "x25519", false},
	{"X25519", gnutlsBasePriority + ":-GROUP-ALL:+GROUP-X25519", Priority{}, "", "x25519", false},
	{"Secp256r1", gnutlsBasePriority + ":-GROUP-ALL:+GROUP-SECP256R1", Priority{}, "", "secp256r1", false},
	{"Secp384r1", gnutlsBasePriority + ":-GROUP-ALL:+GROUP-SECP384R1", Priority{}, "", "secp384r1", false},
	{"HelloRetryRequest", gnutlsBasePriority + ":-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:+GROUP-SECP384R1",
		Priority{Groups: []uint16{tls13.GroupSecp384r1}}, "", "secp384r1", true},
	{"Default", "NORMAL:+ECDHE-PSK:+PSK", Priority{}, "", "x25519", false},
}

// TestPSKServerGnutlsCli connects gnutls-cli to a PSK server once per
// suite and group and exchanges data both ways.
func TestPSKServerGnutlsCli(t *testing.T) {
	gnutlsCli := needTool(t, "gnutls-cli")
	for _, tc := range gnutlsClientCases {
		t.Run(tc.name, func(t *testing.T) {
			f := newPSKFixture(t, "alice")
			psk := loadTestPSK(t, f, EndpointServer, tc.server)
			request, reply := testPayload("client", 70000), testPayload("server", 50000)
			port, result := serveOnce(t, psk, request, reply)

			peer := startPeer(t, gnutlsCli, "--pskusername", f.user, "--pskkey", f.hexKey,
				"--priority", tc.priority, "-p", fmt.Sprint(port), "127.0.0.1")
			_, err := peer.stdin.Write(request)
			require.NoError(t, err)

			var r serveResult
			select {
			case r = <-result:
			case <-time.After(20 * time.Second):
				t.Fatal("server did not finish in 20s")
			}
			require.NoError(t, r.err)
			assert.Equal(t, request, r.got)
			assert.Equal(t, "alice", r.info.Identity)
			assert.Equal(t, "TLS 1.3", r.info.Version)
			if tc.suite != "" {
				assert.Equal(t, tc.suite, r.info.CipherSuite)
			}
			assert.Equal(t, tc.group, r.group)
			assert.Equal(t, tc.retried, r.retried)
			peer.waitOutput(t, string(reply[len(reply)-200:]))
			_ = peer.stdin.Close()
		})
	}
}

// head returns at most n bytes of s, so that a failing test does not print
// megabytes of peer output.
func head(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "\n[...]"
}
