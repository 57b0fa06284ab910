package object

import (
	"bytes"
	"errors"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPrintHelpTypes(t *testing.T) {
	want := "List of user creatable objects:\n" +
		"  authz-list\n  authz-list-file\n  authz-simple\n  secret\n" +
		"  tls-creds-anon\n  tls-creds-psk\n  tls-creds-x509\n"
	for _, spec := range []string{"help", "?", "help,id=x", "nonexistent,help", "qom-type=nonexistent,help"} {
		t.Run(spec, func(t *testing.T) {
			var out bytes.Buffer
			require.True(t, PrintHelp(&out, spec))
			assert.Equal(t, want, out.String())
		})
	}
}

func TestPrintHelpType(t *testing.T) {
	var out bytes.Buffer
	require.True(t, PrintHelp(&out, "tls-creds-psk,help"))
	assert.Equal(t, `tls-creds-psk options:
  dir=<string>           - directory that holds the credential files
  endpoint=<QCryptoTLSCredsEndpoint> - server or client: the role the credentials are for (default: "client")
  priority=<string>      - GnuTLS priority string that selects versions and cipher suites
  username=<string>      - PSK identity a client sends (client only) (default: "qemu")
  verify-peer=<bool>     - whether the peer must authenticate (default: true)
`, out.String())
}

func TestPrintHelpNotHandled(t *testing.T) {
	for _, spec := range []string{
		"secret,id=s0,data=x",
		`{"qom-type":"help"}`,
		`{"qom-type":"secret","help":true}`,
		"secret,help=on",
		"secret,1x=y,help",
		"",
	} {
		t.Run(spec, func(t *testing.T) {
			var out bytes.Buffer
			assert.False(t, PrintHelp(&out, spec))
			assert.Empty(t, out.String())
		})
	}
}

var helpLine = regexp.MustCompile(`^  ([a-z-]+)=<([A-Za-z]+)>`)

// helpProperties parses "TYPE options:" help output into name=<type>
// pairs.
func helpProperties(t *testing.T, out string) []string {
	t.Helper()
	var props []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
		m := helpLine.FindStringSubmatch(line)
		require.NotNil(t, m, "help line %q", line)
		props = append(props, m[1]+"=<"+m[2]+">")
	}
	return props
}

// TestPrintHelpRoundTrip feeds every property that help lists back to Add:
// none may be unknown, and every type that help lists must be creatable.
func TestPrintHelpRoundTrip(t *testing.T) {
	var list bytes.Buffer
	require.True(t, PrintHelp(&list, "help"))
	names := strings.Fields(strings.TrimPrefix(list.String(), "List of user creatable objects:"))
	require.Len(t, names, len(types))

	samples := map[string]string{"string": "x", "bool": "on", "QCryptoTLSCredsEndpoint": "server",
		"QCryptoSecretFormat": "raw", "QAuthZListPolicy": "allow"}
	for _, name := range names {
		var out bytes.Buffer
		require.True(t, PrintHelp(&out, name+",help"))
		require.True(t, strings.HasPrefix(out.String(), name+" options:\n"), out.String())

		for _, prop := range helpProperties(t, out.String()) {
			propName, propType, _ := strings.Cut(strings.TrimSuffix(prop, ">"), "=<")
			spec := name + ",id=x," + propName + "="
			if propType == "QAuthZListRule" {
				spec = name + ",id=x,rules.0.match=a,rules.0.policy=allow"
			} else {
				sample, ok := samples[propType]
				require.True(t, ok, "no sample for %s", propType)
				spec += sample
			}
			err := NewRegistry().Add(spec)
			var objectErr *Error
			if errors.As(err, &objectErr) {
				assert.NotContains(t, objectErr.Msg, "unknown property", spec)
				assert.NotContains(t, objectErr.Msg, "invalid", spec)
			}
		}
	}
}

// TestPrintHelpMatchesQEMU compares the properties help lists with those
// of qemu-nbd's --object TYPE,help.
func TestPrintHelpMatchesQEMU(t *testing.T) {
	qemuNBD := requireTool(t, "qemu-nbd")
	for _, typ := range types {
		t.Run(typ.name, func(t *testing.T) {
			out, err := exec.Command(qemuNBD, "--object", typ.name+",help").Output()
			require.NoError(t, err)
			want := helpProperties(t, string(out))

			var ours bytes.Buffer
			require.True(t, PrintHelp(&ours, typ.name+",help"))
			got := helpProperties(t, ours.String())
			sort.Strings(want)
			assert.Equal(t, want, got)
		})
	}
}
