package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func runCreds(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestCredsX509(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	code, stdout, stderr := runCreds("x509", "--dir", dir, "--hostname", "localhost", "--hostname", "nbd.example.com",
		"--ip", "127.0.0.1", "--client-name", "laptop", "--days", "30")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "wrote x509 credentials to "+dir)
	for _, name := range []string{"ca-cert.pem", "ca-key.pem", "server-cert.pem", "server-key.pem", "client-cert.pem", "client-key.pem"} {
		assert.FileExists(t, filepath.Join(dir, name))
	}

	code, _, stderr = runCreds("x509", "--dir", dir, "--hostname", "localhost")
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "already exists: use --force to replace it")

	code, _, stderr = runCreds("x509", "--dir", dir, "--hostname", "localhost", "--force")
	assert.Equal(t, 0, code, stderr)
}

func TestCredsPSK(t *testing.T) {
	dir := t.TempDir()
	code, stdout, stderr := runCreds("psk", "--dir", dir, "--username", "rich")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "added a key for rich to "+dir+"/keys.psk")
	data, err := os.ReadFile(filepath.Join(dir, "keys.psk"))
	require.NoError(t, err)
	assert.Regexp(t, `^rich:[0-9a-f]{64}\n$`, string(data))

	code, _, stderr = runCreds("psk", "--dir", dir, "--username", "rich")
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, filepath.Join(dir, "keys.psk")+` already has a key for "rich"`)
}

func TestCredsUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"NoCommand", nil, 2, "Usage:"},
		{"UnknownCommand", []string{"rsa"}, 2, `unknown command "rsa"`},
		{"X509MissingDir", []string{"x509", "--hostname", "h"}, 1, "missing --dir"},
		{"X509MissingHostname", []string{"x509", "--dir", "d"}, 1, "missing --hostname"},
		{"X509BadIP", []string{"x509", "--dir", "d", "--ip", "300.1.1.1"}, 1, `invalid --ip "300.1.1.1"`},
		{"X509BadDays", []string{"x509", "--dir", "d", "--hostname", "h", "--days", "0"}, 1, "invalid --days 0"},
		{"X509UnknownFlag", []string{"x509", "--bogus"}, 2, "unknown flag: --bogus"},
		{"PSKMissingUsername", []string{"psk", "--dir", "d"}, 1, "missing --username"},
		{"X509HostnameIsIP", []string{"x509", "--dir", "d", "--hostname", "127.0.0.1"}, 1, `invalid --hostname "127.0.0.1": it is an IP address, give it with --ip`},
		{"X509HostnameSpace", []string{"x509", "--dir", "d", "--hostname", "bad host"}, 1, `invalid --hostname "bad host"`},
		{"X509HostnameEmptyLabel", []string{"x509", "--dir", "d", "--hostname", "a..b"}, 1, `invalid --hostname "a..b"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCreds(tc.args...)
			assert.Equal(t, tc.code, code)
			assert.Contains(t, stderr, tc.want)
		})
	}
}

// TestCredsHelp checks that --help, for the command and each subcommand,
// prints usage to standard output and exits 0.
func TestCredsHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"x509", "--help"}, {"psk", "-h"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			code, stdout, stderr := runCreds(args...)
			assert.Equal(t, 0, code)
			assert.Contains(t, stdout, "Usage:")
			assert.Empty(t, stderr)
		})
	}
}

// TestCredsX509HostnameForms accepts the DNS names that certificates carry:
// a single label, a wildcard in the first label and a trailing dot.
func TestCredsX509HostnameForms(t *testing.T) {
	for _, name := range []string{"localhost", "nbd-1.example.com", "*.example.com", "host.example.com."} {
		t.Run(name, func(t *testing.T) {
			code, _, stderr := runCreds("x509", "--dir", filepath.Join(t.TempDir(), "pki"), "--hostname", name)
			assert.Equal(t, 0, code, stderr)
		})
	}
}
