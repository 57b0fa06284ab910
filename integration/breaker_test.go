package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// qcow2HeaderNaming returns the first 512 bytes of a qcow2 image made by
// qemu-img whose backing file is target, as a client would write them to
// a raw export to reach target on the host.
func qcow2HeaderNaming(t *testing.T, target string) string {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, "evil.qcow2")
	mustRun(t, requireTool(t, "qemu-img"), "create", "-q", "-f", "qcow2", "-b", target, "-F", "raw", img, "1M")
	header := filepath.Join(dir, "header.bin")
	require.NoError(t, os.WriteFile(header, fileBytes(t, img)[:512], 0o644))
	return header
}

// TestProbedRawRejectsQcow2Header writes a qcow2 header that names a host
// file as its backing file over block 0 of a raw image served without -f.
// gonbd must reject the write with EPERM, as qemu-nbd does: otherwise the
// next gonbd started without -f would probe the image as qcow2 and serve
// the host file to the client.
func TestProbedRawRejectsQcow2Header(t *testing.T) {
	qemuIO := requireTool(t, "qemu-io")
	secret := filepath.Join(t.TempDir(), "secret")
	require.NoError(t, os.WriteFile(secret, []byte("host secret"), 0o600))
	header := qcow2HeaderNaming(t, secret)
	img := sparseImage(t, 1<<20)

	srv := serveTCP(t, "-t", img)
	r := run(t, qemuIO, "-f", "raw", "-c", "write -s "+header+" 0 512", srv.uri)
	assert.Contains(t, r.stdout+r.stderr, "Operation not permitted")
	assert.Equal(t, make([]byte, 512), fileBytes(t, img)[:512], "the header reached the image")
	assert.Contains(t, srv.stderr.String(), "probed as raw")

	// Writes elsewhere in block 0 still work.
	mustRun(t, qemuIO, "-f", "raw", "-c", "write -P 0x51 0 4", "-c", "write -s "+header+" 512 512", srv.uri)
	assert.Equal(t, []byte("QQQQ"), fileBytes(t, img)[:4])
}

// TestExplicitRawAllowsQcow2Header checks that -f raw lifts the probed-image
// restriction, as qemu-nbd -f raw does.
func TestExplicitRawAllowsQcow2Header(t *testing.T) {
	qemuIO := requireTool(t, "qemu-io")
	img := sparseImage(t, 1<<20)
	header := qcow2HeaderNaming(t, img)

	srv := serveTCP(t, "-t", "-f", "raw", img)
	mustRun(t, qemuIO, "-f", "raw", "-c", "write -s "+header+" 0 512", srv.uri)
	assert.True(t, strings.HasPrefix(string(fileBytes(t, img)), "QFI\xfb"))
	assert.NotContains(t, srv.stderr.String(), "probed as raw")
}

// TestX509IPHostNotInDNSName connects to 127.0.0.1 with a server
// certificate that spells 127.0.0.1 as a dNSName but has no iPAddress
// name. GnuTLS clients (nbdinfo, qemu-img) reject it, and so must
// gonbdinfo: an IP address matches only an iPAddress name.
func TestX509IPHostNotInDNSName(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo")
	pki := newGuidePKI(t)
	pki.issue(t, "ip-as-dns", "cn = 127.0.0.1\ndns_name = 127.0.0.1\ntls_www_server\nencryption_key\nsigning_key\n")
	serverDir := filepath.Join(t.TempDir(), "server")
	require.NoError(t, os.Mkdir(serverDir, 0o700))
	pki.install(t, serverDir, "ip-as-dns", "server")

	img := sparseImage(t, 1<<20)
	srv := serveTCP(t, "-t", "-f", "raw", "--object", "tls-creds-x509,id=tls0,endpoint=server,verify-peer=off,dir="+serverDir,
		"--tls-creds", "tls0", img)
	uri := strings.Replace(srv.uri, "nbd://", "nbds://", 1) + "?tls-certificates=" + pki.client

	peer := run(t, nbdinfo, "--size", uri)
	require.NotEqual(t, 0, peer.code, "nbdinfo accepted the certificate: %s", peer.stdout)
	assert.Contains(t, peer.stderr, "certificate verification")

	ours := run(t, bin(t, "gonbdinfo"), "--size", uri)
	assert.Equal(t, 1, ours.code, "gonbdinfo accepted the certificate: %s", ours.stdout)
	assert.Contains(t, ours.stderr, `does not match host name "127.0.0.1"`)
}
