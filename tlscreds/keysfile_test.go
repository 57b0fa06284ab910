package tlscreds

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const testHexKey = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

func TestParseKeysFileValid(t *testing.T) {
	in := "qemu:" + testHexKey + "\n\nalice:ABCDEF\r\n#626f623a31:0102\n"
	entries, err := parseKeysFile("keys.psk", strings.NewReader(in))
	require.NoError(t, err)
	require.Len(t, entries, 3)
	assert.Equal(t, "qemu", entries[0].identity)
	assert.Len(t, entries[0].key, 32)
	assert.Equal(t, "alice", entries[1].identity)
	assert.Equal(t, []byte{0xab, 0xcd, 0xef}, entries[1].key)
	assert.Equal(t, "bob:1", entries[2].identity, "hex-encoded username after '#'")
	assert.Equal(t, 4, entries[2].line)
}

func TestParseKeysFileErrors(t *testing.T) {
	cases := []struct {
		name, in, want string
	}{
		{"MissingColon", "qemu" + testHexKey + "\n", "keys.psk:1: missing ':'"},
		{"EmptyUsername", ":" + testHexKey + "\n", "keys.psk:1: empty username"},
		{"EmptyKey", "ok:01\nqemu:\n", "keys.psk:2: empty key for username \"qemu\""},
		{"OddHex", "qemu:abc\n", "keys.psk:1: key for username \"qemu\" is not an even number of hex digits"},
		{"NotHex", "qemu:zz" + testHexKey + "\n", "keys.psk:1: key for username \"qemu\" is not an even number of hex digits"},
		{"BadHexUsername", "#zz:01\n", "keys.psk:1: username \"#zz\" starts with '#'"},
		{"KeyTooLong", "qemu:" + strings.Repeat("ab", 513) + "\n", "keys.psk:1: key for username \"qemu\" has 513 bytes, max 512"},
		{"Duplicate", "qemu:01\nalice:02\nqemu:03\n", "keys.psk:3: username \"qemu\" already defined on line 1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseKeysFile("keys.psk", strings.NewReader(tc.in))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// TestParseKeysFileErrorHidesKey checks that no error quotes key material.
func TestParseKeysFileErrorHidesKey(t *testing.T) {
	secret := "deadbeefcafe"
	for _, in := range []string{"qemu:" + secret + "x\n", "qemu:" + secret + "zz\n", "qemu" + secret + "\n"} {
		_, err := parseKeysFile("keys.psk", strings.NewReader(in))
		require.Error(t, err)
		assert.NotContains(t, err.Error(), secret)
	}
}

func TestLoadPSKClientMissingUsername(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, PSKKeysFileName), []byte("alice:"+testHexKey+"\n"), 0o600))
	_, err := LoadPSK(PSKConfig{Dir: dir, Endpoint: EndpointClient})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `no key for username "qemu"`)
	assert.NotContains(t, err.Error(), testHexKey)
}

func TestLoadPSKDefaultUsername(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, PSKKeysFileName), []byte("qemu:"+testHexKey+"\n"), 0o600))
	p, err := LoadPSK(PSKConfig{Dir: dir, Endpoint: EndpointClient})
	require.NoError(t, err)
	assert.Equal(t, "qemu", p.username)
}

func TestLoadPSKMissingFile(t *testing.T) {
	_, err := LoadPSK(PSKConfig{Dir: t.TempDir(), Endpoint: EndpointServer})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "keys.psk")
}

func TestLoadPSKDirAndFile(t *testing.T) {
	_, err := LoadPSK(PSKConfig{Dir: "a", KeysFile: "b"})
	assert.ErrorContains(t, err, "use one")
}

func TestLoadPSKMalformedNamesLine(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, PSKKeysFileName)
	require.NoError(t, os.WriteFile(path, []byte("qemu:"+testHexKey+"\nbroken\n"), 0o600))
	_, err := LoadPSK(PSKConfig{Dir: dir, Endpoint: EndpointServer})
	assert.ErrorContains(t, err, path+":2:")
}

func TestLoadPSKWarnsReadableFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, PSKKeysFileName)
	require.NoError(t, os.WriteFile(path, []byte("qemu:"+testHexKey+"\n"), 0o644))
	require.NoError(t, os.Chmod(path, 0o644))
	var logs bytes.Buffer
	_, err := LoadPSK(PSKConfig{Dir: dir, Endpoint: EndpointServer, Logger: hclog.New(&hclog.LoggerOptions{Output: &logs})})
	require.NoError(t, err)
	assert.Contains(t, logs.String(), "readable by group or others")
	assert.NotContains(t, logs.String(), testHexKey)
}

func TestLoadPSKPriority(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, PSKKeysFileName), []byte("qemu:"+testHexKey+"\n"), 0o600))
	cases := []struct {
		name string
		pr   Priority
		want string
	}{
		{"NoTLS13", Priority{MaxVersion: 0x0303}, "disables TLS 1.3"},
		{"OnlySHA384", Priority{CipherSuites: []uint16{0x1302}}, "no cipher suite for a SHA-256 PSK"},
		{"NoGroup", Priority{Groups: []uint16{30}}, "no supported group"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadPSK(PSKConfig{Dir: dir, Endpoint: EndpointServer, Priority: tc.pr})
			assert.ErrorContains(t, err, tc.want)
		})
	}
}

func FuzzParseKeysFile(f *testing.F) {
	f.Add([]byte("qemu:" + testHexKey + "\n"))
	f.Add([]byte("a:01\nb:0203\r\n\n#6869:ff\n"))
	f.Add([]byte("broken\n"))
	f.Add([]byte(":\n#:\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := parseKeysFile("keys.psk", bytes.NewReader(data))
		if err != nil {
			return
		}
		for _, e := range entries {
			if e.identity == "" || len(e.key) == 0 || len(e.key) > maxPSKKeyBytes {
				t.Fatalf("accepted invalid entry on line %d", e.line)
			}
		}
	})
}
