package main

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gonbd/gonbd/export"
	"github.com/gonbd/gonbd/nbd"
	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestFlagsDefaults(t *testing.T) {
	o, err := parseFlags([]string{"disk.img"})
	require.NoError(t, err)

	assert.Equal(t, "disk.img", o.image)
	assert.Equal(t, 10809, o.port)
	assert.Equal(t, "0.0.0.0", o.bind)
	assert.Equal(t, "", o.socket)
	assert.Equal(t, 1, o.shared)
	assert.False(t, o.persistent)
	assert.Equal(t, "", o.exportName)
	assert.False(t, o.readOnly)
	assert.Equal(t, "", o.format)
	assert.Equal(t, int64(0), o.offset)
	assert.Equal(t, 10*time.Second, o.handshakeLimit)
	assert.False(t, o.addrSet)
}

func TestFlagsValues(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		check func(t *testing.T, o *options)
	}{
		{"ShortPort", []string{"-p", "1234", "x"}, func(t *testing.T, o *options) { assert.Equal(t, 1234, o.port) }},
		{"LongPortEquals", []string{"--port=1234", "x"}, func(t *testing.T, o *options) { assert.Equal(t, 1234, o.port) }},
		{"BindIPv6", []string{"-b", "::1", "x"}, func(t *testing.T, o *options) { assert.Equal(t, "::1", o.bind) }},
		{"BindIPv6Brackets", []string{"-b", "[::1]", "x"}, func(t *testing.T, o *options) { assert.Equal(t, "[::1]", o.bind) }},
		{"Socket", []string{"-k", "/tmp/s", "x"}, func(t *testing.T, o *options) { assert.Equal(t, "/tmp/s", o.socket) }},
		{"SharedUnlimited", []string{"-e", "0", "x"}, func(t *testing.T, o *options) { assert.Equal(t, 0, o.shared) }},
		{"SharedTwo", []string{"--shared=2", "x"}, func(t *testing.T, o *options) { assert.Equal(t, 2, o.shared) }},
		{"CombinedShort", []string{"-rt", "x"}, func(t *testing.T, o *options) {
			assert.True(t, o.readOnly)
			assert.True(t, o.persistent)
		}},
		{"ExportName", []string{"-x", "disk0", "x"}, func(t *testing.T, o *options) { assert.Equal(t, "disk0", o.exportName) }},
		{"Description", []string{"-D", "my disk", "x"}, func(t *testing.T, o *options) { assert.Equal(t, "my disk", o.description) }},
		{"OffsetHex", []string{"-o", "0x200", "x"}, func(t *testing.T, o *options) { assert.Equal(t, int64(512), o.offset) }},
		{"Nocache", []string{"-n", "x"}, func(t *testing.T, o *options) { assert.Equal(t, "none", o.cache) }},
		{"Cache", []string{"--cache=directsync", "x"}, func(t *testing.T, o *options) { assert.Equal(t, "directsync", o.cache) }},
		{"DetectZeroesUnmap", []string{"--discard=unmap", "--detect-zeroes=unmap", "x"}, func(t *testing.T, o *options) {
			assert.Equal(t, "unmap", o.detectZeroes)
		}},
		{"LoadSnapshotImpliesReadOnly", []string{"-l", "snap1", "x"}, func(t *testing.T, o *options) { assert.True(t, o.readOnly) }},
		{"HandshakeLimitZero", []string{"--handshake-limit=0", "x"}, func(t *testing.T, o *options) {
			assert.Equal(t, time.Duration(math.MaxInt64), o.handshakeLimit)
		}},
		{"HandshakeLimit", []string{"--handshake-limit", "3", "x"}, func(t *testing.T, o *options) { assert.Equal(t, 3*time.Second, o.handshakeLimit) }},
		{"ObjectsRepeat", []string{"--object", "a,id=1", "--object", "b,id=2", "x"}, func(t *testing.T, o *options) {
			assert.Equal(t, []string{"a,id=1", "b,id=2"}, o.objects)
		}},
		{"TLSOptional", []string{"--tls-creds", "tls0", "--tls=on", "x"}, func(t *testing.T, o *options) {
			assert.Equal(t, nbd.TLSOptional, tlsMode(o))
		}},
		{"TLSDefaultRequire", []string{"--tls-creds", "tls0", "x"}, func(t *testing.T, o *options) { assert.Equal(t, nbd.TLSRequire, tlsMode(o)) }},
		{"TLSOff", []string{"--tls-creds", "tls0", "--tls=off", "x"}, func(t *testing.T, o *options) { assert.Equal(t, nbd.TLSOff, tlsMode(o)) }},
		{"ListWithoutImage", []string{"-L", "-k", "/tmp/s"}, func(t *testing.T, o *options) { assert.True(t, o.list) }},
		{"HelpWithoutImage", []string{"-h"}, func(t *testing.T, o *options) { assert.True(t, o.help) }},
		{"VersionWithoutImage", []string{"-V"}, func(t *testing.T, o *options) { assert.True(t, o.version) }},
		{"ImageOpts", []string{"--image-opts", "driver=memory,size=1G"}, func(t *testing.T, o *options) {
			assert.True(t, o.imageOpts)
			assert.Equal(t, "driver=memory,size=1G", o.image)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseFlags(tt.args)
			require.NoError(t, err)
			tt.check(t, o)
		})
	}
}

func TestFlagsErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		msg  string
	}{
		{"MissingImage", []string{}, "missing IMAGE argument"},
		{"TwoImages", []string{"a", "b"}, `too many arguments "b"`},
		{"UnknownFlag", []string{"--bogus", "x"}, "unknown flag: --bogus"},
		{"MissingValue", []string{"x", "-p"}, "flag needs an argument"},
		{"PortNotNumber", []string{"-p", "http", "x"}, `invalid port "http"`},
		{"PortZero", []string{"-p", "0", "x"}, `invalid port "0"`},
		{"PortTooLarge", []string{"-p", "65536", "x"}, `invalid port "65536"`},
		{"SharedNegative", []string{"-e", "-1", "x"}, `invalid shared device number "-1"`},
		{"SharedNotNumber", []string{"-e", "many", "x"}, `invalid shared device number "many"`},
		{"OffsetNegative", []string{"-o", "-5", "x"}, `invalid offset "-5"`},
		{"OffsetSuffix", []string{"-o", "1K", "x"}, `invalid offset "1K"`},
		{"HandshakeLimitNegative", []string{"--handshake-limit=-1", "x"}, `invalid handshake limit "-1"`},
		{"CacheUnknown", []string{"--cache=fast", "x"}, `invalid --cache mode "fast"`},
		{"DiscardUnknown", []string{"--discard=trim", "x"}, `invalid --discard mode "trim"`},
		{"DetectZeroesUnknown", []string{"--detect-zeroes=yes", "x"}, `invalid --detect-zeroes mode "yes"`},
		{"DetectZeroesUnmapWithoutDiscard", []string{"--detect-zeroes=unmap", "x"}, "needs --discard=unmap"},
		{"AioUnknown", []string{"--aio=posix", "x"}, `invalid --aio mode "posix"`},
		{"TLSUnknown", []string{"--tls=maybe", "x"}, `invalid --tls mode "maybe"`},
		{"TLSWithoutCreds", []string{"--tls=require", "x"}, "--tls=require needs --tls-creds"},
		{"AuthzWithoutCreds", []string{"--tls-authz=a", "x"}, "--tls-authz needs --tls-creds"},
		{"NocacheConflict", []string{"-n", "--cache=writeback", "x"}, "conflicts with --cache=writeback"},
		{"SocketAndPort", []string{"-k", "/tmp/s", "-p", "1", "x"}, "-k (--socket) conflicts with -p/-b"},
		{"BindInvalid", []string{"-b", "1.2.3.4/8", "x"}, `invalid bind address "1.2.3.4/8"`},
		{"ImageOptsWithFormat", []string{"--image-opts", "-f", "raw", "driver=file"}, "mutually exclusive"},
		{"SnapshotAndLoad", []string{"-s", "-l", "a", "x"}, "mutually exclusive"},
		{"ListWithImage", []string{"-L", "x"}, "-L takes no IMAGE argument"},
		{"Connect", []string{"-c", "/dev/nbd0", "x"}, "kernel NBD device"},
		{"Bitmap", []string{"-B", "b0", "x"}, "dirty bitmaps are not supported"},
		{"Trace", []string{"-T", "nbd_*", "x"}, "QEMU tracing is not supported"},
		{"ExportNameTooLong", []string{"-x", strings.Repeat("x", 4097), "x"}, "export name of 4097 bytes is too long (-x)"},
		{"DescriptionTooLong", []string{"-D", strings.Repeat("d", 4097), "x"}, "description of 4097 bytes is too long (-D)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseFlags(tt.args)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.msg)
			assert.NotContains(t, err.Error(), "\n", "the message must be one line")
		})
	}
}

func TestExportOptionsFromFlags(t *testing.T) {
	o, err := parseFlags([]string{"-r", "-o", "512", "--cache=none", "--discard=unmap", "-f", "raw", "disk.img"})
	require.NoError(t, err)

	driver, opts, err := exportOptions(o)
	require.NoError(t, err)
	assert.Equal(t, "raw", driver)
	assert.Equal(t, export.Options{
		"filename":   "disk.img",
		"read-only":  "on",
		"offset":     "512",
		"cache":      "none",
		"discard":    "unmap",
		"multi-conn": "off",
	}, opts)
}

// TestExportOptionsProbedRaw checks that an image probed as raw is opened
// with probed=on, so that writes cannot turn it into a qcow2 header, and
// that -f raw leaves the option out.
func TestExportOptionsProbedRaw(t *testing.T) {
	img := filepath.Join(t.TempDir(), "disk.img")
	require.NoError(t, os.WriteFile(img, make([]byte, 4096), 0o644))

	o, err := parseFlags([]string{img})
	require.NoError(t, err)
	driver, opts, err := exportOptions(o)
	require.NoError(t, err)
	assert.Equal(t, "raw", driver)
	assert.Equal(t, "on", opts["probed"])

	o, err = parseFlags([]string{"-f", "raw", img})
	require.NoError(t, err)
	_, opts, err = exportOptions(o)
	require.NoError(t, err)
	assert.NotContains(t, opts, "probed")
}

func TestExportOptionsImageOpts(t *testing.T) {
	o, err := parseFlags([]string{"--image-opts", "-r", "driver=memory,size=1G"})
	require.NoError(t, err)

	driver, opts, err := exportOptions(o)
	require.NoError(t, err)
	assert.Equal(t, "memory", driver)
	assert.Equal(t, export.Options{"size": "1G", "read-only": "on", "multi-conn": "off"}, opts)
}

func TestExportOptionsQemuRawSpelling(t *testing.T) {
	o, err := parseFlags([]string{"--image-opts", "driver=raw,file.driver=file,file.filename=a,,b.img"})
	require.NoError(t, err)

	driver, opts, err := exportOptions(o)
	require.NoError(t, err)
	assert.Equal(t, "raw", driver)
	assert.Equal(t, export.Options{"filename": "a,b.img", "multi-conn": "off"}, opts)
}

// TestExportOptionsMultiConn checks that multi-conn is off for the default
// -e 1 only, as qemu-nbd 7.2 advertises it for -e 0 and -e 2 and more.
func TestExportOptionsMultiConn(t *testing.T) {
	for _, tc := range []struct {
		shared string
		want   string // "" when the option is absent (the driver's default, on)
	}{
		{"1", "off"},
		{"0", ""},
		{"2", ""},
	} {
		t.Run("Shared"+tc.shared, func(t *testing.T) {
			o, err := parseFlags([]string{"-e", tc.shared, "-f", "raw", "disk.img"})
			require.NoError(t, err)
			_, opts, err := exportOptions(o)
			require.NoError(t, err)
			assert.Equal(t, tc.want, opts["multi-conn"])
		})
	}
}

func TestExportOptionsErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		msg  string
	}{
		{"ImageOptsNoDriver", []string{"--image-opts", "size=1G"}, "has no driver"},
		{"ImageOptsSyntax", []string{"--image-opts", "memory"}, "expected key=value"},
		{"UnknownFormat", []string{"-f", "vmdk", "x"}, `unknown image format "vmdk"`},
		{"UnknownDriver", []string{"--image-opts", "driver=vmdk"}, `unknown image format "vmdk"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseFlags(tt.args)
			require.NoError(t, err)
			_, _, err = exportOptions(o)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.msg)
		})
	}
}

func TestProbeFormat(t *testing.T) {
	dir := t.TempDir()
	qcow2 := filepath.Join(dir, "a.qcow2")
	require.NoError(t, os.WriteFile(qcow2, []byte("QFI\xfb\x00\x00\x00\x03"), 0o644))
	raw := filepath.Join(dir, "a.img")
	require.NoError(t, os.WriteFile(raw, []byte("hello"), 0o644))
	short := filepath.Join(dir, "short.img")
	require.NoError(t, os.WriteFile(short, []byte("Q"), 0o644))

	assert.Equal(t, "qcow2", probeFormat(qcow2))
	assert.Equal(t, "raw", probeFormat(raw))
	assert.Equal(t, "raw", probeFormat(short))
	assert.Equal(t, "raw", probeFormat(filepath.Join(dir, "missing")))
}

func TestServerConfigFromFlags(t *testing.T) {
	o, err := parseFlags([]string{"-x", "disk0", "-D", "desc", "-r", "-A", "-e", "0", "-t", "--handshake-limit=5", "x"})
	require.NoError(t, err)

	cfg := serverConfig(o, nil, tlsSetup{mode: nbd.TLSOff}, hclog.NewNullLogger())
	require.Len(t, cfg.Exports, 1)
	assert.Equal(t, "disk0", cfg.Exports[0].Name)
	assert.Equal(t, "desc", cfg.Exports[0].Description)
	assert.True(t, cfg.Exports[0].ReadOnly)
	assert.True(t, cfg.Exports[0].AllocationDepth)
	assert.Equal(t, 0, cfg.MaxConnections)
	assert.True(t, cfg.Persistent)
	assert.Equal(t, 5*time.Second, cfg.HandshakeLimit)
	assert.Equal(t, nbd.TLSOff, cfg.TLSMode)
}

func TestRunBadInputOneLine(t *testing.T) {
	tests := []struct {
		name string
		args []string
		msg  string
	}{
		{"MissingFile", []string{"/nonexistent/disk.img"}, "gonbd: open /nonexistent/disk.img: no such file or directory"},
		{"BadSize", []string{"--image-opts", "driver=memory,size=lots"}, `gonbd: memory: invalid size="lots"`},
		{"UnknownFormat", []string{"-f", "vmdk", "x"}, `gonbd: unknown image format "vmdk"`},
		{"BadFlag", []string{"-e", "x", "y"}, `gonbd: invalid shared device number "x"`},
		{"ObjectUnknownType", []string{"--object", "foo,id=x", "y"}, `gonbd: --object x: unknown object type "foo"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tt.args, &stdout, &stderr)
			assert.Equal(t, 1, code)
			assert.Empty(t, stdout.String())
			assert.True(t, strings.HasPrefix(stderr.String(), tt.msg), "stderr: %q", stderr.String())
			assert.Equal(t, 1, strings.Count(stderr.String(), "\n"), "stderr: %q", stderr.String())
		})
	}
}

func TestRunHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	assert.Equal(t, 0, run([]string{"--help"}, &stdout, &stderr))
	assert.Contains(t, stdout.String(), "--port=PORT")
	assert.Contains(t, stdout.String(), "memory")
	assert.Empty(t, stderr.String())
}

func TestRunObjectHelp(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"Types", []string{"--object", "help"}, "List of user creatable objects:\n"},
		{"QuestionMark", []string{"--object", "?"}, "List of user creatable objects:\n"},
		{"TypeProperties", []string{"--object", "tls-creds-psk,help"}, "tls-creds-psk options:\n"},
		{"WithImage", []string{"--object", "tls-creds-x509,help", "disk.img"}, "tls-creds-x509 options:\n"},
		{"WithList", []string{"-L", "--object", "help"}, "List of user creatable objects:\n"},
		{"AfterOtherObject", []string{"--object", "secret,id=s,data=x", "--object", "help"}, "List of user creatable objects:\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			assert.Equal(t, 0, run(tt.args, &stdout, &stderr))
			assert.True(t, strings.HasPrefix(stdout.String(), tt.want), "stdout: %q", stdout.String())
			assert.Empty(t, stderr.String())
		})
	}
}

func TestRunVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	assert.Equal(t, 0, run([]string{"-V"}, &stdout, &stderr))
	assert.Equal(t, "gonbd "+version+"\n", stdout.String())
}
