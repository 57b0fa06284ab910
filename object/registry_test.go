package object

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// credsDir returns a new directory with the named files. keys.psk gets
// the given PSK lines; other files are empty, because this package only
// checks that they are readable.
func credsDir(t *testing.T, pskLines []string, files ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range files {
		content := ""
		if name == filePSK {
			content = strings.Join(pskLines, "\n") + "\n"
		}
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600))
	}
	return dir
}

const testPSKKey = "0123456789abcdef0123456789abcdef"

func TestAddTLSCredsX509(t *testing.T) {
	server := credsDir(t, nil, fileCACert, fileServerCert, fileServerKey)
	client := credsDir(t, nil, fileCACert)

	tests := []struct {
		name string
		spec string
		want *TLSCredsX509
	}{
		{"ServerDefaults", "tls-creds-x509,id=tls0,endpoint=server,dir=" + server,
			&TLSCredsX509{ID: "tls0", Dir: server, Endpoint: "server", VerifyPeer: true, SanityCheck: true}},
		{"ClientDefaultEndpoint", "tls-creds-x509,id=tls0,dir=" + client,
			&TLSCredsX509{ID: "tls0", Dir: client, Endpoint: "client", VerifyPeer: true, SanityCheck: true}},
		{"AllProperties", "tls-creds-x509,id=tls0,endpoint=server,verify-peer=off,sanity-check=no,priority=NORMAL:-VERS-ALL:+VERS-TLS1.3,dir=" + server,
			&TLSCredsX509{ID: "tls0", Dir: server, Endpoint: "server", Priority: "NORMAL:-VERS-ALL:+VERS-TLS1.3"}},
		{"QomTypeKey", "qom-type=tls-creds-x509,id=tls0,dir=" + client,
			&TLSCredsX509{ID: "tls0", Dir: client, Endpoint: "client", VerifyPeer: true, SanityCheck: true}},
		{"JSON", `{"qom-type":"tls-creds-x509","id":"tls0","endpoint":"server","verify-peer":false,"dir":"` + server + `"}`,
			&TLSCredsX509{ID: "tls0", Dir: server, Endpoint: "server", SanityCheck: true}},
		{"PriorityWithComma", "tls-creds-x509,id=tls0,priority=A,,B,dir=" + client,
			&TLSCredsX509{ID: "tls0", Dir: client, Endpoint: "client", VerifyPeer: true, SanityCheck: true, Priority: "A,B"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRegistry()
			require.NoError(t, r.Add(tt.spec))
			obj, err := r.Lookup("tls0")
			require.NoError(t, err)
			assert.Equal(t, tt.want, obj)
		})
	}
}

func TestAddTLSCredsPSK(t *testing.T) {
	dir := credsDir(t, []string{"alice:" + testPSKKey, "qemu:" + testPSKKey}, filePSK)

	tests := []struct {
		name string
		spec string
		want *TLSCredsPSK
	}{
		{"Server", "tls-creds-psk,id=tls0,endpoint=server,dir=" + dir,
			&TLSCredsPSK{ID: "tls0", Dir: dir, Endpoint: "server", VerifyPeer: true}},
		{"ClientDefaultUsername", "tls-creds-psk,id=tls0,dir=" + dir,
			&TLSCredsPSK{ID: "tls0", Dir: dir, Endpoint: "client", Username: "qemu", VerifyPeer: true}},
		{"ClientUsername", "tls-creds-psk,id=tls0,endpoint=client,username=alice,priority=NORMAL,dir=" + dir,
			&TLSCredsPSK{ID: "tls0", Dir: dir, Endpoint: "client", Username: "alice", Priority: "NORMAL", VerifyPeer: true}},
		{"JSON", `{"qom-type":"tls-creds-psk","id":"tls0","endpoint":"server","dir":"` + dir + `"}`,
			&TLSCredsPSK{ID: "tls0", Dir: dir, Endpoint: "server", VerifyPeer: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRegistry()
			require.NoError(t, r.Add(tt.spec))
			obj, err := r.Lookup("tls0")
			require.NoError(t, err)
			assert.Equal(t, tt.want, obj)
		})
	}
}

func TestAddTLSCredsAnon(t *testing.T) {
	r := NewRegistry()
	require.NoError(t, r.Add("tls-creds-anon,id=anon0,endpoint=server"))
	obj, err := r.Lookup("anon0")
	require.NoError(t, err)
	assert.Equal(t, &TLSCredsAnon{ID: "anon0", Endpoint: "server", VerifyPeer: true}, obj)
}

// TestAddErrors checks that every mistake is one line that names the
// object, the property and the value, and gives the fix.
func TestAddErrors(t *testing.T) {
	server := credsDir(t, nil, fileCACert, fileServerCert, fileServerKey)
	caOnly := credsDir(t, nil, fileCACert)
	noCA := credsDir(t, nil, fileServerCert, fileServerKey)
	psk := credsDir(t, []string{"alice:" + testPSKKey}, filePSK)
	empty := t.TempDir()

	tests := []struct {
		name     string
		earlier  []string
		spec     string
		wantErr  []string // substrings of the message
		property string
	}{
		{"UnknownType", nil, "tls-creds-foo,id=x", []string{`unknown object type "tls-creds-foo"`, "--object help"}, ""},
		{"MisspelledType", nil, "tls-creds-pks,id=x", []string{"did you mean tls-creds-psk?"}, ""},
		{"QEMUOnlyType", nil, "iothread,id=io0", []string{"iothread is a QEMU type that gonbd does not implement"}, ""},
		{"MissingType", nil, "id=x", []string{"missing object type"}, ""},
		{"MissingTypeJSON", nil, `{"id":"x"}`, []string{"missing object type"}, ""},
		{"TypeNotString", nil, `{"qom-type":5,"id":"x"}`, []string{"expected a string, got a number"}, "qom-type"},
		{"MissingID", nil, "secret,data=x", []string{"missing property id"}, ""},
		{"BadID", nil, "secret,id=1x,data=x", []string{`invalid id "1x"`}, "id"},
		{"BadIDJSON", nil, `{"qom-type":"secret","id":"a b","data":"x"}`, []string{`invalid id "a b"`}, "id"},
		{"IDNotString", nil, `{"qom-type":"secret","id":1,"data":"x"}`, []string{"expected a string"}, "id"},
		{"DuplicateID", []string{"secret,id=s0,data=x"}, "authz-simple,id=s0,identity=a",
			[]string{"--object s0 (authz-simple)", "duplicate id", "earlier --object secret"}, ""},
		{"UnknownProperty", nil, "secret,id=s0,data=x,bogus=1", []string{`unknown property "bogus"`, "secret,help"}, ""},
		{"MisspelledProperty", nil, "tls-creds-psk,id=tls0,dri=/tmp", []string{`unknown property "dri"`, "did you mean dir?"}, ""},
		{"PropertyCase", nil, "tls-creds-psk,id=tls0,Dir=/tmp", []string{"did you mean dir?"}, ""},
		{"PropertyOfOtherType", nil, "tls-creds-x509,id=tls0,username=a,dir=" + caOnly, []string{`unknown property "username"`}, ""},
		{"UnknownPropertyJSON", nil, `{"qom-type":"secret","id":"s0","data":"x","bogus":1}`, []string{`unknown property "bogus"`}, ""},
		{"MissingDir", nil, "tls-creds-x509,id=tls0,endpoint=server", []string{"missing property dir", "add dir="}, ""},
		{"MissingDirPSK", nil, "tls-creds-psk,id=tls0,endpoint=server", []string{"missing property dir", "keys.psk"}, ""},
		{"BadBoolean", nil, "tls-creds-x509,id=tls0,verify-peer=maybe,dir=" + caOnly, []string{`invalid boolean "maybe"`, "use on or off"}, "verify-peer"},
		{"BadBooleanCase", nil, "tls-creds-x509,id=tls0,sanity-check=ON,dir=" + caOnly, []string{`invalid boolean "ON"`}, "sanity-check"},
		{"BadBooleanJSON", nil, `{"qom-type":"tls-creds-x509","id":"tls0","verify-peer":"on","dir":"` + caOnly + `"}`,
			[]string{"expected a boolean", "got a string"}, "verify-peer"},
		{"BadEndpoint", nil, "tls-creds-x509,id=tls0,endpoint=bogus,dir=" + caOnly, []string{`invalid value "bogus"`, "use server or client"}, "endpoint"},
		{"BadFormat", nil, "secret,id=s0,data=x,format=hex", []string{`invalid value "hex"`, "use raw or base64"}, "format"},
		{"BadPolicy", nil, "authz-list,id=a0,policy=maybe", []string{`invalid value "maybe"`, "use deny or allow"}, "policy"},
		{"X509ServerNoCA", nil, "tls-creds-x509,id=tls0,endpoint=server,dir=" + noCA,
			[]string{filepath.Join(noCA, "ca-cert.pem"), "no such file"}, "dir"},
		{"X509ServerNoCert", nil, "tls-creds-x509,id=tls0,endpoint=server,dir=" + caOnly,
			[]string{filepath.Join(caOnly, "server-cert.pem"), "a server needs"}, "dir"},
		{"X509ClientNoCA", nil, "tls-creds-x509,id=tls0,endpoint=client,dir=" + empty,
			[]string{filepath.Join(empty, "ca-cert.pem")}, "dir"},
		{"X509PasswordIDUnknown", nil, "tls-creds-x509,id=tls0,endpoint=server,passwordid=pw0,dir=" + server,
			[]string{`no secret with id "pw0"`}, "passwordid"},
		{"X509PasswordIDNotSecret", []string{"authz-simple,id=pw0,identity=a"}, "tls-creds-x509,id=tls0,endpoint=server,passwordid=pw0,dir=" + server,
			[]string{"pw0 has type authz-simple, not a secret"}, "passwordid"},
		{"X509PasswordNotUTF8", []string{"secret,id=pw0,format=base64,data=/w=="},
			"tls-creds-x509,id=tls0,endpoint=server,passwordid=pw0,dir=" + server,
			[]string{"secret pw0 is not valid UTF-8"}, "passwordid"},
		{"PSKNoFile", nil, "tls-creds-psk,id=tls0,endpoint=server,dir=" + empty,
			[]string{filepath.Join(empty, "keys.psk"), "psktool"}, "dir"},
		{"PSKClientNoFile", nil, "tls-creds-psk,id=tls0,dir=" + empty, []string{filepath.Join(empty, "keys.psk")}, "dir"},
		{"PSKClientUnknownUser", nil, "tls-creds-psk,id=tls0,dir=" + psk, []string{`username "qemu" not found`}, "username"},
		{"PSKServerUsername", nil, "tls-creds-psk,id=tls0,endpoint=server,username=alice,dir=" + psk,
			[]string{"only for endpoint=client"}, "username"},
		{"SecretNoData", nil, "secret,id=s0", []string{"missing property data or file"}, ""},
		{"SecretDataAndFile", nil, "secret,id=s0,data=x,file=/etc/hostname", []string{"mutually exclusive"}, ""},
		{"SecretMissingFile", nil, "secret,id=s0,file=" + filepath.Join(empty, "nope"), []string{"cannot read", "no such file"}, "file"},
		{"SecretBadBase64", nil, "secret,id=s0,data=@@@,format=base64", []string{"invalid base64"}, "data"},
		{"SecretUnknownKey", nil, "secret,id=s0,data=x,keyid=k0,iv=AAAAAAAAAAAAAAAAAAAAAA==", []string{`no secret with id "k0"`}, "keyid"},
		{"AuthzSimpleNoIdentity", nil, "authz-simple,id=a0", []string{"missing property identity"}, ""},
		{"AuthzListNoPolicy", nil, "authz-list,id=a0,rules.0.match=alice", []string{"missing policy", "rules.0.policy=allow"}, "rules.0"},
		{"AuthzListNoMatch", nil, "authz-list,id=a0,rules.0.policy=allow", []string{"missing match"}, "rules.0"},
		{"AuthzListBadRuleFormat", nil, "authz-list,id=a0,rules.0.match=a,rules.0.policy=allow,rules.0.format=regex",
			[]string{`invalid value "regex"`, "use exact or glob"}, "rules.0.format"},
		{"AuthzListRuleMember", nil, "authz-list,id=a0,rules.0.match=a,rules.0.policy=allow,rules.0.polcy=x",
			[]string{`unknown rule member "polcy"`, "did you mean policy?"}, "rules.0"},
		{"AuthzListRulesScalar", nil, "authz-list,id=a0,rules=x", []string{"expected an array, got a string"}, "rules"},
		{"AuthzListRulesObjectJSON", nil, `{"qom-type":"authz-list","id":"a0","rules":{"match":"a","policy":"allow"}}`,
			[]string{"expected an array, got an object"}, "rules"},
		{"AuthzListRuleNotObject", nil, `{"qom-type":"authz-list","id":"a0","rules":["a"]}`,
			[]string{"expected an object with match, policy and format"}, "rules.0"},
		{"AuthzListFileNoFilename", nil, "authz-list-file,id=a0", []string{"missing property filename"}, ""},
		{"AuthzListFileMissing", nil, "authz-list-file,id=a0,filename=" + filepath.Join(empty, "acl.json"),
			[]string{"cannot read", "acl.json"}, "filename"},
		{"HelpInAdd", nil, "secret,help", []string{"help requested"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRegistry()
			for _, spec := range tt.earlier {
				require.NoError(t, r.Add(spec))
			}
			err := r.Add(tt.spec)
			require.Error(t, err)
			msg := err.Error()
			assert.NotContains(t, msg, "\n", "one line")
			assert.True(t, strings.HasPrefix(msg, "--object"), "prefix: %s", msg)
			for _, want := range tt.wantErr {
				assert.Contains(t, msg, want)
			}
			var objectErr *Error
			require.True(t, errors.As(err, &objectErr))
			assert.Equal(t, tt.property, objectErr.Property)
		})
	}
}

func TestAddErrorNamesObject(t *testing.T) {
	r := NewRegistry()
	err := r.Add("tls-creds-x509,id=tls0,endpoint=bogus")
	require.Error(t, err)
	assert.Equal(t, `--object tls0 (tls-creds-x509): property endpoint: invalid value "bogus": use server or client`, err.Error())
}

func TestAddFailureRegistersNothing(t *testing.T) {
	r := NewRegistry()
	require.Error(t, r.Add("secret,id=s0,data=x,format=hex"))
	_, err := r.Lookup("s0")
	assert.Error(t, err)
	require.NoError(t, r.Add("secret,id=s0,data=x"))
}

func TestParseAllOrder(t *testing.T) {
	key := strings.Repeat("k", 32)
	_, err := ParseAll([]string{
		"tls-creds-x509,id=tls0,endpoint=server,passwordid=pw0,dir=" + credsDir(t, nil, fileCACert, fileServerCert, fileServerKey),
		"secret,id=pw0,data=" + key,
	})
	require.Error(t, err, "a secret must come before the object that uses it")
	assert.Contains(t, err.Error(), `no secret with id "pw0"`)

	r, err := ParseAll([]string{
		"secret,id=pw0,data=password",
		"tls-creds-x509,id=tls0,endpoint=server,passwordid=pw0,dir=" + credsDir(t, nil, fileCACert, fileServerCert, fileServerKey),
		"authz-simple,id=auth0,identity=CN=client",
	})
	require.NoError(t, err)
	assert.Equal(t, []string{"pw0", "tls0", "auth0"}, r.IDs())
}

func TestTLSCredsLookup(t *testing.T) {
	psk := credsDir(t, []string{"qemu:" + testPSKKey}, filePSK)
	x509 := credsDir(t, nil, fileCACert, fileServerCert, fileServerKey)
	r, err := ParseAll([]string{
		"tls-creds-psk,id=psk-server,endpoint=server,dir=" + psk,
		"tls-creds-psk,id=psk-client,dir=" + psk,
		"tls-creds-x509,id=x509-server,endpoint=server,dir=" + x509,
		"tls-creds-anon,id=anon0,endpoint=server",
		"secret,id=sec0,data=x",
	})
	require.NoError(t, err)

	creds, err := r.TLSCreds("psk-server", EndpointServer)
	require.NoError(t, err)
	assert.IsType(t, &TLSCredsPSK{}, creds)

	creds, err = r.TLSCreds("psk-client", EndpointClient)
	require.NoError(t, err)
	assert.Equal(t, "qemu", creds.(*TLSCredsPSK).Username)

	creds, err = r.TLSCreds("x509-server", EndpointServer)
	require.NoError(t, err)
	assert.IsType(t, &TLSCredsX509{}, creds)

	tests := []struct {
		name     string
		id       string
		endpoint string
		wantErr  string
	}{
		{"UnknownID", "tls9", EndpointServer, `no TLS credentials with id "tls9"`},
		{"WrongEndpointServer", "psk-client", EndpointServer, "have endpoint=client, but this use needs endpoint=server"},
		{"WrongEndpointClient", "x509-server", EndpointClient, "have endpoint=server, but this use needs endpoint=client"},
		{"Anon", "anon0", EndpointServer, "tls-creds-anon, which authenticate nobody: use tls-creds-psk or tls-creds-x509"},
		{"NotCreds", "sec0", EndpointServer, "sec0 has type secret, not TLS credentials"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := r.TLSCreds(tt.id, tt.endpoint)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.wantErr)
		})
	}
}

func TestAuthzLookup(t *testing.T) {
	r, err := ParseAll([]string{"authz-simple,id=auth0,identity=alice", "secret,id=sec0,data=x"})
	require.NoError(t, err)

	authz, err := r.Authz("auth0")
	require.NoError(t, err)
	allowed, err := authz.IsAllowed("alice")
	require.NoError(t, err)
	assert.True(t, allowed)

	_, err = r.Authz("nope")
	assert.ErrorContains(t, err, `no authorization object with id "nope"`)
	_, err = r.Authz("sec0")
	assert.ErrorContains(t, err, "sec0 has type secret, not an authorization object")
}

func TestSecretLookup(t *testing.T) {
	r, err := ParseAll([]string{"secret,id=sec0,data=hunter2", "authz-simple,id=auth0,identity=a"})
	require.NoError(t, err)

	data, err := r.Secret("sec0")
	require.NoError(t, err)
	assert.Equal(t, []byte("hunter2"), data)
	data[0] = 'X'
	again, err := r.Secret("sec0")
	require.NoError(t, err)
	assert.Equal(t, []byte("hunter2"), again, "Secret returns a copy")

	_, err = r.Secret("nope")
	assert.ErrorContains(t, err, `no secret with id "nope"`)
	_, err = r.Secret("auth0")
	assert.ErrorContains(t, err, "auth0 has type authz-simple, not a secret")
}

func TestAddTypeAlias(t *testing.T) {
	acl := filepath.Join(t.TempDir(), "acl.json")
	require.NoError(t, os.WriteFile(acl, []byte(`{"policy":"allow"}`), 0o600))
	r := NewRegistry()
	require.NoError(t, r.Add("authz-listfile,id=acl0,filename="+acl))
	obj, err := r.Lookup("acl0")
	require.NoError(t, err)
	assert.Equal(t, TypeAuthzListFile, obj.QOMType())
}
