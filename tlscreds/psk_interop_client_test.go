package tlscreds

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gonbd/gonbd/tlscreds/internal/tls13"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// freeLoopbackPort returns a loopback TCP port that was free a moment ago.
func freeLoopbackPort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// dialPSK connects to a peer server on loopback and runs the PSK client
// handshake, retrying the TCP connect while the peer starts.
func dialPSK(t testing.TB, psk *PSK, port int) Conn {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	var raw net.Conn
	var err error
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if raw, err = net.DialTimeout("tcp", addr, time.Second); err == nil {
			break
		}
	}
	require.NoError(t, err, "connect to %s", addr)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := psk.ClientHandshake(ctx, raw, "")
	if err != nil {
		raw.Close()
	}
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.SetDeadline(time.Now().Add(20*time.Second)))
	return c
}

type clientPriorityCase struct {
	name     string
	priority Priority
	suite    string
	group    string
}

// withHelloRetry adds a case where the server accepts only secp384r1, for
// which the client sends no key share at first.
func withHelloRetry(cases []clientPriorityCase) []clientPriorityCase {
	return append(cases[:len(cases):len(cases)], clientPriorityCase{"HelloRetryRequest", Priority{}, "", "secp384r1"})
}

var clientPriorityCases = []clientPriorityCase{
	{"AES128GCM", Priority{CipherSuites: []uint16{tls13.TLSAES128GCMSHA256}}, "TLS_AES_128_GCM_SHA256", "x25519"},
	{"ChaCha20Poly1305", Priority{CipherSuites: []uint16{tls13.TLSChaCha20Poly1305SHA256}}, "TLS_CHACHA20_POLY1305_SHA256", "x25519"},
	{"Secp256r1", Priority{Groups: []uint16{tls13.GroupSecp256r1}}, "", "secp256r1"},
	{"Secp384r1", Priority{Groups: []uint16{tls13.GroupSecp384r1}}, "", "secp384r1"},
}

// TestPSKClientGnutlsServ connects the PSK client to gnutls-serv in echo
// mode once per suite and group, plus a HelloRetryRequest.
func TestPSKClientGnutlsServ(t *testing.T) {
	gnutlsServ := needTool(t, "gnutls-serv")
	for _, tc := range withHelloRetry(clientPriorityCases) {
		t.Run(tc.name, func(t *testing.T) {
			f := newPSKFixture(t, "alice")
			port := freeLoopbackPort(t)
			serverPriority := gnutlsBasePriority
			if tc.name == "HelloRetryRequest" {
				serverPriority += ":-GROUP-ALL:+GROUP-SECP384R1"
			}
			// NOTE: gnutls-serv has no option to bind one address, so it
			// listens on all interfaces; the test connects over loopback.
			peer := startPeer(t, gnutlsServ, "--echo", "--pskpasswd", f.file, "-p", fmt.Sprint(port),
				"--priority", serverPriority)
			peer.waitOutput(t, "listening on IPv4")

			c := dialPSK(t, loadTestPSK(t, f, EndpointClient, tc.priority), port)
			assertSession(t, c, tc.suite, tc.group, tc.name == "HelloRetryRequest")

			msg := testPayload("echo", 100000)
			go func() { _, _ = c.Write(msg) }()
			got := make([]byte, len(msg))
			_, err := io.ReadFull(c, got)
			require.NoError(t, err)
			assert.Equal(t, msg, got)
		})
	}
}

func assertSession(t testing.TB, c Conn, suite, group string, retried bool) {
	t.Helper()
	info := c.TLSInfo()
	assert.Equal(t, "TLS 1.3", info.Version)
	assert.Equal(t, "alice", info.Identity)
	if suite != "" {
		assert.Equal(t, suite, info.CipherSuite)
	}
	gotGroup, gotRetried := sessionDetails(c)
	assert.Equal(t, group, gotGroup)
	assert.Equal(t, retried, gotRetried)
}

// TestPSKClientOpensslServer connects the PSK client to openssl s_server
// once per suite and group, plus a HelloRetryRequest, and exchanges data
// both ways.
func TestPSKClientOpensslServer(t *testing.T) {
	openssl := needTool(t, "openssl")
	for _, tc := range withHelloRetry(clientPriorityCases) {
		t.Run(tc.name, func(t *testing.T) {
			f := newPSKFixture(t, "alice")
			port := freeLoopbackPort(t)
			args := []string{"s_server", "-accept", fmt.Sprintf("127.0.0.1:%d", port),
				"-psk", f.hexKey, "-psk_identity", f.user, "-nocert", "-tls1_3", "-naccept", "1"}
			if tc.name == "HelloRetryRequest" {
				args = append(args, "-groups", "P-384")
			}
			peer := startPeer(t, openssl, args...)
			peer.waitOutput(t, "ACCEPT")

			c := dialPSK(t, loadTestPSK(t, f, EndpointClient, tc.priority), port)
			assertSession(t, c, tc.suite, tc.group, tc.name == "HelloRetryRequest")

			request, reply := testPayload("client", 60000), testPayload("server", 40000)
			_, err := c.Write(request)
			require.NoError(t, err)
			peer.waitOutput(t, string(request[len(request)-200:]))
			_, err = peer.stdin.Write(reply)
			require.NoError(t, err)
			got := make([]byte, len(reply))
			_, err = io.ReadFull(c, got)
			require.NoError(t, err)
			assert.Equal(t, reply, got)
		})
	}
}

var opensslClientCases = []struct {
	name, suites, groups, suite, group string
}{
	{"AES128GCM", "TLS_AES_128_GCM_SHA256", "X25519", "TLS_AES_128_GCM_SHA256", "x25519"},
	{"ChaCha20Poly1305", "TLS_CHACHA20_POLY1305_SHA256", "X25519", "TLS_CHACHA20_POLY1305_SHA256", "x25519"},
	{"Secp256r1", "TLS_AES_128_GCM_SHA256", "P-256", "", "secp256r1"},
	{"Secp384r1", "TLS_AES_128_GCM_SHA256", "P-384", "", "secp384r1"},
	// OpenSSL sends a key share for its first group only, so the server
	// requests the second.
	{"HelloRetryRequest", "TLS_AES_128_GCM_SHA256", "X25519:P-384", "", "secp384r1"},
}

// TestPSKServerOpensslClient connects openssl s_client to a PSK server once
// per suite and group and exchanges data both ways.
func TestPSKServerOpensslClient(t *testing.T) {
	openssl := needTool(t, "openssl")
	for _, tc := range opensslClientCases {
		t.Run(tc.name, func(t *testing.T) {
			f := newPSKFixture(t, "alice")
			var pr Priority
			if tc.name == "HelloRetryRequest" {
				pr.Groups = []uint16{tls13.GroupSecp384r1}
			}
			psk := loadTestPSK(t, f, EndpointServer, pr)
			request, reply := testPayload("client", 70000), testPayload("server", 50000)
			port, result := serveOnce(t, psk, request, reply)

			peer := startPeer(t, openssl, "s_client", "-connect", fmt.Sprintf("127.0.0.1:%d", port),
				"-psk_identity", f.user, "-psk", f.hexKey, "-tls1_3",
				"-ciphersuites", tc.suites, "-groups", tc.groups, "-quiet")
			_, err := peer.stdin.Write(request)
			require.NoError(t, err)

			r := waitServe(t, result)
			require.NoError(t, r.err)
			assert.Equal(t, request, r.got)
			assert.Equal(t, "alice", r.info.Identity)
			if tc.suite != "" {
				assert.Equal(t, tc.suite, r.info.CipherSuite)
			}
			assert.Equal(t, tc.group, r.group)
			assert.Equal(t, tc.name == "HelloRetryRequest", r.retried)
			peer.waitOutput(t, string(reply[len(reply)-200:]))
		})
	}
}

func waitServe(t testing.TB, result chan serveResult) serveResult {
	t.Helper()
	select {
	case r := <-result:
		return r
	case <-time.After(20 * time.Second):
		t.Fatal("server did not finish in 20s")
	}
	return serveResult{}
}

// TestPSKKeysFileFromURI loads an explicit keys file, as an NBD URI's
// tls-psk-file= names it, rather than dir/keys.psk.
func TestPSKKeysFileFromURI(t *testing.T) {
	f := newPSKFixture(t, "alice")
	other := filepath.Join(t.TempDir(), "client.psk")
	data, err := os.ReadFile(f.file)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(other, data, 0o600))
	psk, err := LoadPSK(PSKConfig{KeysFile: other, Username: "alice"})
	require.NoError(t, err)
	assert.Equal(t, other, psk.path)
}
