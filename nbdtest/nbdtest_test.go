package nbdtest_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gonbd/gonbd/nbd"
	"github.com/gonbd/gonbd/nbd/proto"
	"github.com/gonbd/gonbd/nbdtest"
	"github.com/gonbd/gonbd/tlscreds"
	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tlsCases are the three kinds of server every client test runs against.
var tlsCases = []struct {
	name   string
	opts   []nbdtest.Option
	scheme string
	tls    bool
}{
	{"Plain", nil, "nbd", false},
	{"PSK", []nbdtest.Option{nbdtest.PSK()}, "nbds", true},
	{"X509", []nbdtest.Option{nbdtest.X509()}, "nbds", true},
}

func TestStartDialWriteRead(t *testing.T) {
	for _, tc := range tlsCases {
		t.Run(tc.name, func(t *testing.T) {
			srv := nbdtest.Start(t, tc.opts...)

			ctx := context.Background()
			c, err := nbd.Dial(ctx, srv.URI())
			require.NoError(t, err)
			defer c.Close()

			assert.Equal(t, tc.tls, c.TLS())
			assert.Equal(t, int64(nbdtest.DefaultSize), c.Size())

			want := bytes.Repeat([]byte("gonbd"), 1000)
			_, err = c.WriteAt(want, 4096)
			require.NoError(t, err)
			require.NoError(t, c.Flush())
			got := make([]byte, len(want))
			_, err = c.ReadAt(got, 4096)
			require.NoError(t, err)
			assert.Equal(t, want, got)
		})
	}
}

func TestURIParses(t *testing.T) {
	for _, tc := range tlsCases {
		t.Run(tc.name, func(t *testing.T) {
			srv := nbdtest.Start(t, tc.opts...)

			u, err := nbd.ParseURI(srv.URI())
			require.NoError(t, err)
			assert.Equal(t, tc.scheme, u.Scheme)
			assert.Equal(t, "127.0.0.1", u.Host)
			assert.Equal(t, srv.Port(), u.Port)
			assert.Equal(t, "", u.ExportName)
			assert.Equal(t, srv.PSKFile(), u.TLSPSKFile)
			if tc.name == "X509" {
				assert.Equal(t, srv.CredsDir(), u.TLSCertificates)
			} else {
				assert.Empty(t, u.TLSCertificates)
			}
			if tc.name == "PSK" {
				assert.Equal(t, nbdtest.PSKUsername, u.Username)
			} else {
				assert.Empty(t, u.Username)
			}
		})
	}
}

func TestAddrAndPort(t *testing.T) {
	srv := nbdtest.Start(t)

	assert.Equal(t, "127.0.0.1", srv.Host())
	assert.NotZero(t, srv.Port())
	assert.Equal(t, "127.0.0.1:"+strconv.Itoa(srv.Port()), srv.Addr())
	assert.Equal(t, "nbd://"+srv.Addr()+"/", srv.URI())
}

func TestPlainHasNoCredentials(t *testing.T) {
	srv := nbdtest.Start(t)

	assert.Empty(t, srv.CredsDir())
	assert.Empty(t, srv.PSKFile())
}

func TestPSKCredentials(t *testing.T) {
	srv := nbdtest.Start(t, nbdtest.PSK())

	assert.Equal(t, filepath.Join(srv.CredsDir(), tlscreds.PSKKeysFileName), srv.PSKFile())
	fi, err := os.Stat(srv.PSKFile())
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "keys.psk must be private")

	data, err := os.ReadFile(srv.PSKFile())
	require.NoError(t, err)
	user, key, ok := strings.Cut(strings.TrimSpace(string(data)), ":")
	require.True(t, ok, "keys.psk line is not USER:HEXKEY")
	assert.Equal(t, nbdtest.PSKUsername, user)
	assert.Len(t, key, 64, "a 256-bit key in hex")
	assert.True(t, strings.HasPrefix(srv.URI(), "nbds://alice@127.0.0.1:"), srv.URI())
}

func TestX509ClientDirHoldsOnlyClientFiles(t *testing.T) {
	srv := nbdtest.Start(t, nbdtest.X509())

	entries, err := os.ReadDir(srv.CredsDir())
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	assert.Equal(t, []string{tlscreds.FileCACert, tlscreds.FileClientCert, tlscreds.FileClientKey}, names)
}

func TestX509ClientCredsLoadWithSanityCheck(t *testing.T) {
	srv := nbdtest.Start(t, nbdtest.X509())

	_, err := tlscreds.LoadX509(tlscreds.X509Config{
		Dir:         srv.CredsDir(),
		Endpoint:    tlscreds.EndpointClient,
		VerifyPeer:  true,
		SanityCheck: true,
	})
	assert.NoError(t, err)
}

func TestTLSServerRejectsPlaintextClient(t *testing.T) {
	for _, tc := range tlsCases[1:] {
		t.Run(tc.name, func(t *testing.T) {
			srv := nbdtest.Start(t, tc.opts...)

			_, err := nbd.Dial(context.Background(), "nbd://"+srv.Addr()+"/")
			assert.Error(t, err)
		})
	}
}

func TestX509ServerRequiresClientCertificate(t *testing.T) {
	srv := nbdtest.Start(t, nbdtest.X509())

	// A directory with the CA alone: the client trusts the server but has
	// no certificate to present.
	dir := t.TempDir()
	ca, err := os.ReadFile(filepath.Join(srv.CredsDir(), tlscreds.FileCACert))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, tlscreds.FileCACert), ca, 0o644))

	c, err := nbd.Dial(context.Background(), "nbds://"+srv.Addr()+"/?tls-certificates="+dir)
	if err == nil {
		// TLS 1.3 servers check the client certificate after the client
		// has finished its handshake, so the failure may show up on the
		// first request instead.
		_, err = c.ReadAt(make([]byte, 512), 0)
		c.Close()
	}
	assert.Error(t, err)
}

func TestX509ServerCertificateNames(t *testing.T) {
	srv := nbdtest.Start(t, nbdtest.X509())

	for _, host := range []string{"localhost", "127.0.0.1"} {
		t.Run(host, func(t *testing.T) {
			c := srv.Dial(t, nbd.WithTLSHostname(host))
			assert.True(t, c.TLS())
		})
	}
	t.Run("other", func(t *testing.T) {
		_, err := nbd.Dial(context.Background(), srv.URI(), nbd.WithTLSHostname("example.com"))
		assert.Error(t, err)
	})
}

func TestReadOnlyRejectsWrites(t *testing.T) {
	srv := nbdtest.Start(t, nbdtest.ReadOnly())
	c := srv.Dial(t)

	// gonbd's client refuses writes itself once the server advertises a
	// read-only export; the integration tests send writes with qemu-io.
	assert.True(t, isReadOnly(c), "export must be advertised read-only")
	_, err := c.WriteAt([]byte("x"), 0)
	assert.ErrorIs(t, err, nbd.ErrReadOnly, "write")
	assert.ErrorIs(t, c.Trim(0, 4096), nbd.ErrReadOnly, "trim")
	assert.ErrorIs(t, c.Zero(0, 4096), nbd.ErrReadOnly, "write zeroes")

	_, err = c.ReadAt(make([]byte, 4096), 0)
	assert.NoError(t, err, "read")
}

func TestReadOnlyCustomBackend(t *testing.T) {
	b := newSliceBackend(4096)
	srv := nbdtest.Start(t, nbdtest.Backend(b), nbdtest.ReadOnly())
	c := srv.Dial(t)

	assert.True(t, isReadOnly(c))
}

func TestSizeOption(t *testing.T) {
	srv := nbdtest.Start(t, nbdtest.Size(3<<20))
	c := srv.Dial(t)

	assert.Equal(t, int64(3<<20), c.Size())
	size, err := srv.Backend().Size()
	require.NoError(t, err)
	assert.Equal(t, int64(3<<20), size)
}

func TestBackendOption(t *testing.T) {
	b := newSliceBackend(64 << 10)
	srv := nbdtest.Start(t, nbdtest.Backend(b))
	assert.Same(t, b, srv.Backend())

	c := srv.Dial(t)
	assert.Equal(t, int64(64<<10), c.Size())
	_, err := c.WriteAt([]byte("hello"), 100)
	require.NoError(t, err)
	require.NoError(t, c.Flush())

	assert.Equal(t, []byte("hello"), b.bytes(100, 5))
	assert.NotZero(t, b.syncs(), "Flush must reach Sync")
}

func TestBackendSyncedAtClose(t *testing.T) {
	b := newSliceBackend(4096)
	srv := nbdtest.Start(t, nbdtest.Backend(b))

	require.NoError(t, srv.Close())
	assert.Equal(t, 1, b.syncs())
}

func TestExportNameOption(t *testing.T) {
	for _, name := range []string{"disk", "disk one", "a,b", "dir/disk?x"} {
		t.Run(name, func(t *testing.T) {
			srv := nbdtest.Start(t, nbdtest.ExportName(name), nbdtest.PSK())
			assert.Equal(t, name, srv.ExportName())

			u, err := nbd.ParseURI(srv.URI())
			require.NoError(t, err)
			assert.Equal(t, name, u.ExportName)

			c := srv.Dial(t)
			assert.Equal(t, name, c.Info().Name)
		})
	}
}

func TestLoggerOption(t *testing.T) {
	var buf syncBuffer
	log := hclog.New(&hclog.LoggerOptions{Output: &buf, Level: hclog.Info})
	srv := nbdtest.Start(t, nbdtest.Logger(log))

	srv.Dial(t)
	// The server logs the connection after its last negotiation reply, so
	// the line may land just after Dial returns.
	assert.Eventually(t, func() bool {
		return strings.Contains(buf.String(), "client connected")
	}, 5*time.Second, 10*time.Millisecond, "log output:\n%s", buf.String())
}

func TestQEMUArgs(t *testing.T) {
	srv := nbdtest.Start(t)
	assert.Equal(t, []string{"--image-opts",
		"driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=" + strconv.Itoa(srv.Port()) + ",export="},
		srv.QEMUArgs())

	psk := nbdtest.Start(t, nbdtest.PSK())
	assert.Equal(t, []string{
		"--object", "tls-creds-psk,id=tls0,dir=" + psk.CredsDir() + ",username=alice,endpoint=client",
		"--image-opts", "driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=" + strconv.Itoa(psk.Port()) +
			",export=,tls-creds=tls0",
	}, psk.QEMUArgs())

	x := nbdtest.Start(t, nbdtest.X509())
	assert.Equal(t, []string{
		"--object", "tls-creds-x509,id=tls0,dir=" + x.CredsDir() + ",endpoint=client",
		"--image-opts", "driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=" + strconv.Itoa(x.Port()) +
			",export=,tls-creds=tls0",
	}, x.QEMUArgs())
}

func TestQEMUImageOptsEscapesComma(t *testing.T) {
	srv := nbdtest.Start(t, nbdtest.ExportName("a,b"))

	assert.True(t, strings.HasSuffix(srv.QEMUImageOpts(), ",export=a,,b"), srv.QEMUImageOpts())
}

func TestCloseIsIdempotent(t *testing.T) {
	srv := nbdtest.Start(t)

	assert.NoError(t, srv.Close())
	assert.NoError(t, srv.Close())
}

func TestCloseDropsIdleClient(t *testing.T) {
	srv := nbdtest.Start(t)
	c, err := nbd.Dial(context.Background(), srv.URI())
	require.NoError(t, err)
	defer c.Close()

	require.NoError(t, srv.Close())
	_, err = c.ReadAt(make([]byte, 512), 0)
	assert.Error(t, err, "the server has closed the connection")
	_, err = nbd.Dial(context.Background(), srv.URI())
	assert.Error(t, err, "the server no longer listens")
}

func TestCloseReportsStuckRequest(t *testing.T) {
	b := &blockingBackend{sliceBackend: newSliceBackend(4096), entered: make(chan struct{}), release: make(chan struct{})}
	defer close(b.release)
	srv := nbdtest.Start(t, nbdtest.Backend(b), nbdtest.ShutdownTimeout(50*time.Millisecond))
	c := srv.Dial(t)

	go func() { _, _ = c.ReadAt(make([]byte, 512), 0) }()
	<-b.entered

	err := srv.Close()
	require.Error(t, err)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "connections still open")
}

// Conflicting options and failed starts call Fatalf.
func TestStartRejectsConflictingOptions(t *testing.T) {
	cases := []struct {
		name string
		opts []nbdtest.Option
		want string
	}{
		{"PSKAndX509", []nbdtest.Option{nbdtest.PSK(), nbdtest.X509()}, "both PSK and X509"},
		{"SizeAndBackend", []nbdtest.Option{nbdtest.Size(1 << 20), nbdtest.Backend(newSliceBackend(512))}, "both Size and Backend"},
		{"NegativeSize", []nbdtest.Option{nbdtest.Size(-1)}, "negative Size"},
		{"NilBackend", []nbdtest.Option{nbdtest.Backend(nil)}, "nil Backend"},
		{"ZeroShutdownTimeout", []nbdtest.Option{nbdtest.ShutdownTimeout(0)}, "non-positive ShutdownTimeout"},
		{"LongExportName", []nbdtest.Option{nbdtest.ExportName(strings.Repeat("x", 5000))}, "too long"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ftb := &fatalRecorder{TB: t}
			srv := nbdtest.Start(ftb, tc.opts...)

			assert.Nil(t, srv)
			assert.Contains(t, ftb.message, tc.want)
		})
	}
}

// fatalRecorder is a testing.TB whose Fatalf records the message instead
// of ending the test, so that Start's failures can be checked.
type fatalRecorder struct {
	testing.TB
	message string
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.message = strings.TrimSpace(strings.ReplaceAll(fmt.Sprintf(format, args...), "\n", " "))
}

// syncBuffer is a bytes.Buffer safe for the server's goroutines to write
// while the test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
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

// isReadOnly reports whether the server advertised the export read-only.
func isReadOnly(c *nbd.Client) bool {
	info := c.Info()
	return info.Has(proto.FlagReadOnly)
}
