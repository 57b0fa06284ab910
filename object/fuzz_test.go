package object

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

// FuzzParseObject feeds arbitrary --object arguments to Add and PrintHelp.
// Neither may panic, every error is one line, and the same argument always
// gives the same error.
func FuzzParseObject(f *testing.F) {
	for _, seed := range []string{
		"help",
		"?",
		"secret,help",
		"secret,id=s0,data=x",
		"secret,id=s0,data=a,,b,,",
		"secret,id=s0,format=base64,data=cGFzcw==",
		"secret,id=key0,format=base64,data=" + vectorKey,
		"qom-type=secret,id=s0,data=x",
		"tls-creds-psk,id=tls0,endpoint=server,dir=/nonexistent",
		"tls-creds-x509,id=tls0,endpoint=client,verify-peer=off,dir=/nonexistent",
		"tls-creds-anon,id=anon0",
		"authz-simple,id=auth0,identity=CN=a,,O=b",
		"authz-list,id=a0,rules.0.match=a*,rules.0.policy=allow,rules.0.format=glob",
		"authz-list,id=a0,rules.1.match=a,rules.0.match=b,rules.00.policy=deny",
		"authz-list,id=a0,rules.0.match=a,rules.x=b",
		"authz-list-file,id=acl0,filename=/nonexistent,refresh=off",
		"secret,data=a,data.x.0=1",
		",=,",
		`{"qom-type":"secret","id":"s0","data":"x"}`,
		`{"qom-type":"authz-list","id":"a0","rules":[{"match":"a","policy":"allow"},{"match":5}]}`,
		`{"qom-type":"tls-creds-psk","id":"t0","verify-peer":true,"dir":null}`,
		`{"a":[[[[{}]]]]}`,
		`{"qom-type":"secret","id":"s0"`,
	} {
		f.Add(seed)
	}

	f.Fuzz(func(t *testing.T, spec string) {
		PrintHelp(io.Discard, spec)

		first := NewRegistry().Add(spec)
		second := NewRegistry().Add(spec)
		if (first == nil) != (second == nil) {
			t.Fatalf("Add(%q) is not deterministic: %v, then %v", spec, first, second)
		}
		if first == nil {
			return
		}
		msg := first.Error()
		if msg != second.Error() {
			t.Fatalf("Add(%q) errors differ:\n%s\n%s", spec, msg, second)
		}
		if strings.ContainsAny(msg, "\r\n") {
			t.Fatalf("Add(%q) error is not one line: %q", spec, msg)
		}
	})
}

// FuzzGlobMatch checks that globMatch does not panic, even on invalid
// UTF-8, and that a pattern without wildcards matches itself.
func FuzzGlobMatch(f *testing.F) {
	f.Add("CN=*,O=?xample", "CN=alice,O=Example")
	f.Add("*a*b*", "\xff\xfeab")
	f.Fuzz(func(t *testing.T, pattern, s string) {
		globMatch(pattern, s)
		if !strings.ContainsAny(pattern, "*?") && !globMatch(pattern, pattern) {
			t.Fatalf("pattern %q without wildcards does not match itself", pattern)
		}
		if !globMatch("*"+pattern, string(bytes.Repeat([]byte("x"), 3))+pattern) && !strings.ContainsAny(pattern, "*?") {
			t.Fatalf("*%q does not match a prefix plus the pattern", pattern)
		}
	})
}
