package nbd

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func boolPtr(b bool) *bool { return &b }

func TestParseURIValid(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want URI
	}{
		{"TCPWithExport", "nbd://example.com/disk",
			URI{Scheme: "nbd", Host: "example.com", Port: 10809, ExportName: "disk"}},
		{"TCPWithPort", "nbd://127.0.0.1:20809/disk",
			URI{Scheme: "nbd", Host: "127.0.0.1", Port: 20809, ExportName: "disk"}},
		{"TCPTrailingSlashEmptyExport", "nbd://example.com/",
			URI{Scheme: "nbd", Host: "example.com", Port: 10809}},
		{"TCPNoPathEmptyExport", "nbd://example.com",
			URI{Scheme: "nbd", Host: "example.com", Port: 10809}},
		{"DoubleSlashKeepsOne", "nbd://example.com//disk",
			URI{Scheme: "nbd", Host: "example.com", Port: 10809, ExportName: "/disk"}},
		{"PercentEncodedExport", "nbd://example.com/hello%20world",
			URI{Scheme: "nbd", Host: "example.com", Port: 10809, ExportName: "hello world"}},
		{"IPv6Host", "nbd://[::1]:10900/x",
			URI{Scheme: "nbd", Host: "::1", Port: 10900, ExportName: "x"}},
		{"EmptyHostIsLocalhost", "nbd:///x",
			URI{Scheme: "nbd", Host: "localhost", Port: 10809, ExportName: "x"}},
		{"UnixSocket", "nbd+unix:///disk?socket=/tmp/nbd.sock",
			URI{Scheme: "nbd+unix", Socket: "/tmp/nbd.sock", ExportName: "disk"}},
		{"UnixAbstractSocket", "nbd+unix:///?socket=%00/abstract",
			URI{Scheme: "nbd+unix", Socket: "\x00/abstract"}},
		{"TLSUnixWithCertificates", "nbds+unix:///e?socket=s&tls-certificates=/etc/pki/qemu",
			URI{Scheme: "nbds+unix", Socket: "s", ExportName: "e", TLSCertificates: "/etc/pki/qemu"}},
		{"PSKUserAndFile", "nbds://alice@host/e?tls-psk-file=/k/keys.psk",
			URI{Scheme: "nbds", Host: "host", Port: 10809, ExportName: "e", Username: "alice", TLSPSKFile: "/k/keys.psk"}},
		{"VerifyPeerOff", "nbds://h/?tls-certificates=d&tls-verify-peer=0",
			URI{Scheme: "nbds", Host: "h", Port: 10809, TLSCertificates: "d", TLSVerifyPeer: boolPtr(false)}},
		{"VerifyPeerOnAndHostname", "nbds://h/?tls-certificates=d&tls-verify-peer=1&tls-hostname=server.example",
			URI{Scheme: "nbds", Host: "h", Port: 10809, TLSCertificates: "d", TLSVerifyPeer: boolPtr(true), TLSHostname: "server.example"}},
		{"TLSType", "nbds://h/?tls-type=x509&tls-certificates=d",
			URI{Scheme: "nbds", Host: "h", Port: 10809, TLSType: "x509", TLSCertificates: "d"}},
		{"SemicolonSeparator", "nbd+unix:///?socket=s;tls-hostname=x",
			URI{Scheme: "nbd+unix", Socket: "s", TLSHostname: "x"}},
		{"UppercaseScheme", "NBD://h/e",
			URI{Scheme: "nbd", Host: "h", Port: 10809, ExportName: "e"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseURI(tt.in)
			require.NoError(t, err)
			assert.Equal(t, tt.want, *got)
		})
	}
}

func TestParseURIInvalid(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		errPart string
	}{
		{"UnknownScheme", "http://h/e", `unknown scheme "http"`},
		{"MissingScheme", "h/e", "missing scheme"},
		{"OpaqueForm", "nbd:h/e", "must begin with nbd://"},
		{"Fragment", "nbd://h/e#frag", `fragment "frag"`},
		{"Password", "nbd://u:pw@h/e", "password"},
		{"EmptyUser", "nbd://@h/e", "empty user name"},
		{"PortNotNumber", "nbd://h:port/e", "invalid NBD URI"},
		{"PortTooLarge", "nbd://h:70000/e", `port "70000"`},
		{"PortZero", "nbd://h:0/e", `port "0"`},
		{"EmptyPort", "nbd://h:/e", "empty port"},
		{"UnixWithHost", "nbd+unix://h/e?socket=s", "take no host"},
		{"UnixWithoutSocket", "nbd+unix:///e", "needs the socket query parameter"},
		{"SocketWithTCP", "nbd://h/e?socket=s", "socket is only valid"},
		{"UnknownQuery", "nbd://h/e?foo=bar", `unknown query parameter "foo"`},
		{"ExperimentalQuery", "nbd://h/e?x-debug=1", `unknown query parameter "x-debug"`},
		{"DuplicateQuery", "nbd+unix:///e?socket=a&socket=b", `"socket" appears twice`},
		{"EmptyQueryValue", "nbd+unix:///e?socket=", `"socket" has no value`},
		{"QueryWithoutValue", "nbds://h/e?tls-certificates", `"tls-certificates" has no value`},
		{"BadVerifyPeer", "nbds://h/e?tls-verify-peer=maybe", `tls-verify-peer="maybe"`},
		{"BadTLSType", "nbds://h/e?tls-type=kerberos", `tls-type="kerberos"`},
		{"BadQueryEscape", "nbd://h/e?tls-hostname=%zz", "tls-hostname"},
		{"NULInExport", "nbd://h/a%00b", "NUL"},
		{"InvalidUTF8Export", "nbd://h/%ff", "UTF-8"},
		{"ExportTooLong", "nbd://h/" + strings.Repeat("a", 4097), "4097 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseURI(tt.in)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.errPart)
		})
	}
}

func TestURIStringRoundTrip(t *testing.T) {
	for _, in := range []string{
		"nbd://example.com:10809/disk",
		"nbds://alice@[::1]:10900/a%20b?tls-psk-file=%2Fk%2Fkeys.psk",
		"nbd+unix:///disk?socket=%2Ftmp%2Fs+ock",
		"nbds+unix:////slash?socket=s&tls-certificates=d&tls-verify-peer=0",
	} {
		t.Run(in, func(t *testing.T) {
			u, err := ParseURI(in)
			require.NoError(t, err)
			again, err := ParseURI(u.String())
			require.NoError(t, err, "String gave %q", u.String())
			assert.Equal(t, u, again)
		})
	}
}

func TestURIAddress(t *testing.T) {
	tests := []struct {
		in, network, address string
	}{
		{"nbd://h:1/e", "tcp", "h:1"},
		{"nbd://[::1]/e", "tcp", "[::1]:10809"},
		{"nbd+unix:///e?socket=/run/s", "unix", "/run/s"},
		{"nbd+unix:///e?socket=%00abstract", "unix", "@abstract"},
	}
	for _, tt := range tests {
		u, err := ParseURI(tt.in)
		require.NoError(t, err)
		assert.Equal(t, tt.network, u.Network(), tt.in)
		assert.Equal(t, tt.address, u.Address(), tt.in)
	}
}

func FuzzParseURI(f *testing.F) {
	for _, seed := range []string{
		"nbd://example.com/disk",
		"nbds://alice@[::1]:10900/a%20b?tls-psk-file=k",
		"nbd+unix:///e?socket=/s&tls-certificates=d;tls-verify-peer=1",
		"nbd://h:/e#x",
		"nbd://%zz/",
		"nbd+unix:///?socket=%00/abstract",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseURI(s)
		if err != nil {
			return
		}
		// Whatever parses must format to a URI that parses the same.
		again, err := ParseURI(u.String())
		if err != nil {
			t.Fatalf("ParseURI(%q) ok, but its String %q fails: %v", s, u.String(), err)
		}
		assert.Equal(t, u, again)
	})
}
