package gen

import (
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gonbd/gonbd/tlscreds"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	block, _ := pem.Decode(data)
	require.NotNil(t, block, path)
	c, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	return c
}

func TestX509WritesQEMULayout(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	require.NoError(t, X509(X509Options{Dir: dir, Hostnames: []string{"nbd.example.com", "nbd"},
		IPs: []net.IP{net.ParseIP("192.0.2.1"), net.ParseIP("2001:db8::1")}}))

	info, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), info.Mode().Perm())
	for name, mode := range map[string]os.FileMode{
		"ca-cert.pem": 0o644, "server-cert.pem": 0o644, "client-cert.pem": 0o644,
		"ca-key.pem": 0o600, "server-key.pem": 0o600, "client-key.pem": 0o600,
	} {
		info, err := os.Stat(filepath.Join(dir, name))
		require.NoError(t, err)
		assert.Equal(t, mode, info.Mode().Perm(), name)
	}

	ca := readCert(t, filepath.Join(dir, "ca-cert.pem"))
	assert.True(t, ca.IsCA)
	assert.NotZero(t, ca.KeyUsage&x509.KeyUsageCertSign)

	server := readCert(t, filepath.Join(dir, "server-cert.pem"))
	assert.Equal(t, "nbd.example.com", server.Subject.CommonName)
	assert.Equal(t, []string{"nbd.example.com", "nbd"}, server.DNSNames)
	assert.Len(t, server.IPAddresses, 2)
	assert.Equal(t, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, server.ExtKeyUsage)
	assert.Equal(t, x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment, server.KeyUsage)
	assert.NoError(t, server.CheckSignatureFrom(ca))

	client := readCert(t, filepath.Join(dir, "client-cert.pem"))
	assert.Equal(t, "gonbd-client", client.Subject.CommonName)
	assert.Equal(t, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, client.ExtKeyUsage)
	assert.NoError(t, client.CheckSignatureFrom(ca))
}

func TestX509RefusesToOverwrite(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "server-key.pem"), []byte("keep me"), 0o600))
	err := X509(X509Options{Dir: dir, Hostnames: []string{"localhost"}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), filepath.Join(dir, "server-key.pem")+" already exists: use --force to replace it")
	_, err = os.Stat(filepath.Join(dir, "ca-cert.pem"))
	assert.True(t, os.IsNotExist(err), "nothing is written when a file exists")

	require.NoError(t, X509(X509Options{Dir: dir, Hostnames: []string{"localhost"}, Force: true}))
	data, err := os.ReadFile(filepath.Join(dir, "server-key.pem"))
	require.NoError(t, err)
	assert.Contains(t, string(data), "PRIVATE KEY")
}

func TestX509Errors(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts X509Options
		want string
	}{
		{"NoHostname", X509Options{Dir: t.TempDir()}, "no server host name or IP address"},
		{"NegativeDays", X509Options{Dir: t.TempDir(), Hostnames: []string{"h"}, Days: -1}, "invalid validity of -1 days"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := X509(tc.opts)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestPSK(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	rich, err := PSK(dir, "rich", false)
	require.NoError(t, err)
	require.Len(t, rich, 32)
	qemu, err := PSK(dir, "qemu", false)
	require.NoError(t, err)

	path := filepath.Join(dir, PSKFile)
	info, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm())
	dirInfo, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), dirInfo.Mode().Perm())

	data, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, "rich:"+hex.EncodeToString(rich)+"\nqemu:"+hex.EncodeToString(qemu)+"\n", string(data))

	_, err = PSK(dir, "rich", false)
	require.Error(t, err)
	assert.Contains(t, err.Error(), path+` already has a key for "rich": use --force to replace it`)

	rich2, err := PSK(dir, "rich", true)
	require.NoError(t, err)
	data, err = os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, "qemu:"+hex.EncodeToString(qemu)+"\nrich:"+hex.EncodeToString(rich2)+"\n", string(data))
	assert.Equal(t, 1, strings.Count(string(data), "rich:"))
}

func TestPSKInvalidUsername(t *testing.T) {
	for _, name := range []string{"", "a:b", "a\nb"} {
		_, err := PSK(t.TempDir(), name, false)
		assert.ErrorContains(t, err, "invalid PSK username")
	}
}

func TestPSKLoadsAsTLSCredsPSK(t *testing.T) {
	dir := t.TempDir()
	_, err := PSK(dir, "rich", false)
	require.NoError(t, err)
	_, err = tlscreds.LoadPSK(tlscreds.PSKConfig{Dir: dir, Endpoint: tlscreds.EndpointServer})
	assert.NoError(t, err)
	_, err = tlscreds.LoadPSK(tlscreds.PSKConfig{Dir: dir, Endpoint: tlscreds.EndpointClient, Username: "rich"})
	assert.NoError(t, err)
}
