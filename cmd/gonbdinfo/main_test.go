package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestHumanSize(t *testing.T) {
	tests := []struct {
		in    uint64
		want  string
		human bool
	}{
		{0, "0", false},
		{1000, "1000", false},
		{1024, "1K", true},
		{1376256, "1344K", true},
		{64 << 20, "64M", true},
		{3 << 40, "3T", true},
		{1 << 62, "4E", true},
	}
	for _, tt := range tests {
		got, human := humanSize(tt.in)
		assert.Equal(t, tt.want, got, "humanSize(%d)", tt.in)
		assert.Equal(t, tt.human, human, "humanSize(%d) flag", tt.in)
	}
}

func TestFormatCG(t *testing.T) {
	tests := map[float64]string{
		100:         "100",
		1.5625:      "1.5625",
		98.4375:     "98.4375",
		100.0 / 3:   "33.3333",
		0.00001:     "1e-05",
		99.99999999: "100",
		12.5:        "12.5",
		1234567:     "1.23457e+06",
	}
	for in, want := range tests {
		assert.Equal(t, want, formatCG(in), "formatCG(%v)", in)
	}
}

func TestWriteJSONString(t *testing.T) {
	var b bytes.Buffer
	writeJSONString(&b, "a\"b\\c\n\x01é")
	assert.Equal(t, `"a\"b\\c\u000a\u0001é"`, b.String())
}

func TestParseArgsErrors(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		errPart string
	}{
		{"NoURI", nil, "expected one NBD URI"},
		{"TwoURIs", []string{"nbd://a", "nbd://b"}, "expected one NBD URI"},
		{"ListAndMap", []string{"--list", "--map", "nbd://a"}, "cannot be used together"},
		{"SizeAndCan", []string{"--size", "--can", "trim", "nbd://a"}, "cannot be used together"},
		{"ContentAndNoContent", []string{"--content", "--no-content", "nbd://a"}, "--content and --no-content"},
		{"TotalsWithoutMap", []string{"--totals", "nbd://a"}, "--totals only works with --map"},
		{"UnknownFlag", []string{"--bogus", "nbd://a"}, "unknown flag"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			o, code := parseArgs(tt.args, &stdout, &stderr)
			assert.Nil(t, o)
			assert.Equal(t, exitError, code)
			assert.Contains(t, stderr.String(), tt.errPart)
		})
	}
}

func TestRunRejectsBadURI(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"nbd://h/e?bogus=1"}, &stdout, &stderr)
	assert.Equal(t, exitError, code)
	assert.Empty(t, stdout.String())
	assert.Contains(t, stderr.String(), `unknown query parameter "bogus"`)
}

func TestRunUnknownCanFeature(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"--can", "teleport", "nbd://127.0.0.1:1/"}, &stdout, &stderr)
	assert.Equal(t, exitError, code)
	assert.True(t, strings.Contains(stderr.String(), "unknown --can or --is option: teleport"), stderr.String())
}

func TestProbeContentDefaults(t *testing.T) {
	assert.True(t, (&options{}).probeContent())
	assert.False(t, (&options{list: true}).probeContent())
	assert.True(t, (&options{list: true, content: true}).probeContent())
	assert.False(t, (&options{noContent: true}).probeContent())
	assert.False(t, (&options{mapCtx: "base:allocation", content: true}).probeContent())
}

func TestRunObjectHelp(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"Types", []string{"--object", "help"}, "List of user creatable objects:\n"},
		{"TypeProperties", []string{"--object", "tls-creds-psk,help"}, "tls-creds-psk options:\n"},
		{"WithURI", []string{"--object", "tls-creds-x509,help", "nbd://127.0.0.1:1/"}, "tls-creds-x509 options:\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			assert.Equal(t, exitOK, run(context.Background(), tt.args, &stdout, &stderr))
			assert.True(t, strings.HasPrefix(stdout.String(), tt.want), "stdout: %q", stdout.String())
			assert.Empty(t, stderr.String())
		})
	}
}

func TestRunObjectErrorOneLine(t *testing.T) {
	tests := []struct {
		name string
		args []string
		msg  string
	}{
		{"UnknownType", []string{"--object", "foo,id=x", "--tls-creds", "x", "nbd://127.0.0.1:1/"},
			`gonbdinfo: --object x: unknown object type "foo"`},
		{"UnknownCredsID", []string{"--object", "secret,id=s,data=x", "--tls-creds", "tls0", "nbd://127.0.0.1:1/"},
			`gonbdinfo: --tls-creds tls0: no TLS credentials with id "tls0"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			assert.Equal(t, exitError, run(context.Background(), tt.args, &stdout, &stderr))
			assert.Empty(t, stdout.String())
			assert.True(t, strings.HasPrefix(stderr.String(), tt.msg), "stderr: %q", stderr.String())
			assert.Equal(t, 1, strings.Count(stderr.String(), "\n"), "stderr: %q", stderr.String())
		})
	}
}
