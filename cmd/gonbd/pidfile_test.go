package main

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPIDFileLocked starts a second server on a pid file that a running
// server holds. Like qemu-nbd, gonbd must refuse, and must leave the
// first server's pid file in place.
func TestPIDFileLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gonbd.pid")
	release, err := writePIDFile(path)
	require.NoError(t, err)
	want := strconv.Itoa(os.Getpid()) + "\n"

	_, err = writePIDFile(path)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "pid file "+path+" is locked by another running server")
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, want, string(data))

	release()
	assert.NoFileExists(t, path)
}

// TestPIDFileStale takes over a pid file that no running server locks,
// replacing its content, and creates it with mode 0600 as qemu-nbd does.
func TestPIDFileStale(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gonbd.pid")
	require.NoError(t, os.WriteFile(path, []byte("999999999\nstale text\n"), 0o644))

	release, err := writePIDFile(path)
	require.NoError(t, err)
	defer release()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, strconv.Itoa(os.Getpid())+"\n", string(data))

	fresh := filepath.Join(t.TempDir(), "new.pid")
	releaseFresh, err := writePIDFile(fresh)
	require.NoError(t, err)
	defer releaseFresh()
	fi, err := os.Stat(fresh)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
}

func TestPIDFileBadPath(t *testing.T) {
	_, err := writePIDFile(filepath.Join(t.TempDir(), "missing", "gonbd.pid"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "check the --pid-file path")
}
