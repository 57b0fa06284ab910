package main

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestListenUnixRemovesStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nbd.sock")
	stale, err := net.Listen("unix", path)
	require.NoError(t, err)
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	require.NoError(t, stale.Close())
	require.FileExists(t, path)

	l, err := listenUnix(path)
	require.NoError(t, err)
	assert.NoError(t, l.Close())
}

func TestListenUnixLiveSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nbd.sock")
	live, err := net.Listen("unix", path)
	require.NoError(t, err)
	defer live.Close()

	_, err = listenUnix(path)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "in use by another server")
}

func TestListenUnixNotASocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	require.NoError(t, os.WriteFile(path, []byte("data"), 0o644))

	_, err := listenUnix(path)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "exists and is not a socket")
	assert.FileExists(t, path, "a regular file must never be removed")
}

func TestListenTCPPortInUse(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer busy.Close()
	port := busy.Addr().(*net.TCPAddr).Port

	o, err := parseFlags([]string{"-b", "127.0.0.1", "-p", strconv.Itoa(port), "x"})
	require.NoError(t, err)
	_, err = listen(o)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "address already in use")
}

func TestListenTCPIPv6(t *testing.T) {
	probe, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	port := probe.Addr().(*net.TCPAddr).Port
	probe.Close()

	o, err := parseFlags([]string{"-b", "[::1]", "-p", strconv.Itoa(port), "x"})
	require.NoError(t, err)
	l, err := listen(o)
	require.NoError(t, err)
	defer l.Close()
	assert.Equal(t, "[::1]:"+strconv.Itoa(port), l.Addr().String())
}

// TestListenTCPIPv4WildcardOnly checks that the default -b 0.0.0.0 listens
// on IPv4 only, as qemu-nbd does, and not on a dual-stack [::] socket that
// also takes IPv6 clients.
func TestListenTCPIPv4WildcardOnly(t *testing.T) {
	probe, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	port := probe.Addr().(*net.TCPAddr).Port
	probe.Close()

	o, err := parseFlags([]string{"-p", strconv.Itoa(port), "x"})
	require.NoError(t, err)
	require.Equal(t, "0.0.0.0", o.bind)
	l, err := listen(o)
	require.NoError(t, err)
	defer l.Close()

	assert.Equal(t, "0.0.0.0:"+strconv.Itoa(port), l.Addr().String())
	c, err := net.Dial("tcp6", "[::1]:"+strconv.Itoa(port))
	if err == nil {
		c.Close()
	}
	assert.Error(t, err, "an IPv6 client reached a server bound to 0.0.0.0")
}
