package object

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestAgreesWithQEMU runs each --object argument through qemu-img, which
// creates objects as qemu-nbd does, and checks that gonbd accepts exactly
// the arguments QEMU accepts.
//
// Left out on purpose: authz-list-file (qemu-nbd 7.2 rejects both of its
// spellings), QEMU types gonbd does not implement (iothread, ...), and
// ciphertexts whose padding QEMU accepts without a full PKCS#7 check.
func TestAgreesWithQEMU(t *testing.T) {
	qemuImg := requireTool(t, "qemu-img")
	psk := credsDir(t, []string{"alice:" + testPSKKey, "qemu:" + testPSKKey}, filePSK)
	pskAlice := credsDir(t, []string{"alice:" + testPSKKey}, filePSK)
	x509Server := credsDir(t, nil, fileCACert, fileServerCert, fileServerKey)
	x509CAOnly := credsDir(t, nil, fileCACert)
	empty := t.TempDir()
	key := "secret,id=key0,format=base64,data=" + vectorKey

	tests := []struct {
		name  string
		specs []string
	}{
		{"SecretData", []string{"secret,id=s0,data=x"}},
		{"SecretEscapedComma", []string{"secret,id=s0,data=a,,b,"}},
		{"SecretNoData", []string{"secret,id=s0"}},
		{"SecretDataAndFile", []string{"secret,id=s0,data=x,file=/etc/hostname"}},
		{"SecretBadFormat", []string{"secret,id=s0,data=x,format=hex"}},
		{"SecretBadBase64", []string{"secret,id=s0,data=@@,format=base64"}},
		{"SecretEncrypted", []string{key, "secret,id=s0,keyid=key0,format=base64,iv=" + vectorIV + ",data=Q1SMtLrJ8rgbUkdWx4qSCQ=="}},
		{"SecretNoIV", []string{key, "secret,id=s0,keyid=key0,format=base64,data=Q1SMtLrJ8rgbUkdWx4qSCQ=="}},
		{"SecretShortIV", []string{key, "secret,id=s0,keyid=key0,format=base64,iv=AAAA,data=Q1SMtLrJ8rgbUkdWx4qSCQ=="}},
		{"SecretShortKey", []string{"secret,id=key0,data=x", "secret,id=s0,keyid=key0,iv=" + vectorIV + ",data=x"}},
		{"SecretUnknownKey", []string{"secret,id=s0,keyid=nope,data=x"}},
		{"DuplicateID", []string{"secret,id=s0,data=x", "secret,id=s0,data=y"}},
		{"MissingID", []string{"secret,data=x"}},
		{"BadID", []string{"secret,id=1x,data=x"}},
		{"DottedID", []string{"secret,id=a-b_c.d,data=x"}},
		{"UnknownType", []string{"nonexistent,id=x"}},
		{"UnknownProperty", []string{"secret,id=s0,data=x,bogus=1"}},
		{"LastDuplicateKeyWins", []string{"secret,id=a,id=s0,data=x"}},
		{"QomTypeKey", []string{"qom-type=secret,id=s0,data=x"}},
		{"EmptyKey", []string{"secret,id=s0,=x"}},
		{"MissingEquals", []string{"secret,id=s0,data"}},
		{"InconsistentKeys", []string{"secret,id=s0,data=a,data.x=1"}},
		{"JSONSecret", []string{`{"qom-type":"secret","id":"s0","data":"x"}`}},
		{"JSONNumber", []string{`{"qom-type":"secret","id":"s0","data":5}`}},
		{"JSONDuplicateKey", []string{`{"qom-type":"secret","id":"s0","data":"x","data":"y"}`}},
		{"JSONTruncated", []string{`{"qom-type":"secret","id":"s0"`}},
		{"BoolYes", []string{"tls-creds-psk,id=t0,endpoint=server,verify-peer=yes,dir=" + psk}},
		{"BoolY", []string{"tls-creds-psk,id=t0,endpoint=server,verify-peer=y,dir=" + psk}},
		{"BoolUpperCase", []string{"tls-creds-psk,id=t0,endpoint=server,verify-peer=ON,dir=" + psk}},
		{"BoolEmpty", []string{"tls-creds-psk,id=t0,endpoint=server,verify-peer=,dir=" + psk}},
		{"JSONBoolString", []string{`{"qom-type":"tls-creds-psk","id":"t0","endpoint":"server","verify-peer":"on","dir":"` + psk + `"}`}},
		{"JSONBool", []string{`{"qom-type":"tls-creds-psk","id":"t0","endpoint":"server","verify-peer":false,"dir":"` + psk + `"}`}},
		{"PSKServer", []string{"tls-creds-psk,id=t0,endpoint=server,dir=" + psk}},
		{"PSKServerUsername", []string{"tls-creds-psk,id=t0,endpoint=server,username=alice,dir=" + psk}},
		{"PSKClient", []string{"tls-creds-psk,id=t0,dir=" + psk}},
		{"PSKClientNoQemuUser", []string{"tls-creds-psk,id=t0,dir=" + pskAlice}},
		{"PSKClientAlice", []string{"tls-creds-psk,id=t0,username=alice,dir=" + pskAlice}},
		{"PSKNoFile", []string{"tls-creds-psk,id=t0,endpoint=server,dir=" + empty}},
		{"PSKNoDir", []string{"tls-creds-psk,id=t0,endpoint=server"}},
		{"BadEndpoint", []string{"tls-creds-psk,id=t0,endpoint=bogus,dir=" + psk}},
		{"X509ServerNoCerts", []string{"tls-creds-x509,id=t0,endpoint=server,sanity-check=off,dir=" + x509CAOnly}},
		{"X509ClientCAOnly", []string{"tls-creds-x509,id=t0,endpoint=client,sanity-check=off,dir=" + x509CAOnly}},
		{"X509ClientNoCA", []string{"tls-creds-x509,id=t0,endpoint=client,sanity-check=off,dir=" + empty}},
		{"X509NoDir", []string{"tls-creds-x509,id=t0,endpoint=client"}},
		{"X509ServerPasswordUnknown", []string{"tls-creds-x509,id=t0,endpoint=server,sanity-check=off,passwordid=pw0,dir=" + x509Server}},
		{"Anon", []string{"tls-creds-anon,id=t0,endpoint=server"}},
		{"AuthzSimple", []string{"authz-simple,id=a0,identity=alice"}},
		{"AuthzSimpleNoIdentity", []string{"authz-simple,id=a0"}},
		{"AuthzList", []string{"authz-list,id=a0,policy=allow,rules.0.match=a*,rules.0.policy=deny,rules.0.format=glob"}},
		{"AuthzListNoPolicy", []string{"authz-list,id=a0,rules.0.match=alice"}},
		{"AuthzListGap", []string{"authz-list,id=a0,rules.1.match=a,rules.1.policy=allow"}},
		{"AuthzListBadFormat", []string{"authz-list,id=a0,rules.0.match=a,rules.0.policy=allow,rules.0.format=regex"}},
		{"AuthzListRuleMember", []string{"authz-list,id=a0,rules.0.match=a,rules.0.policy=allow,rules.0.bogus=1"}},
		{"AuthzListRulesScalar", []string{"authz-list,id=a0,rules=x"}},
		{"AuthzListJSON", []string{`{"qom-type":"authz-list","id":"a0","rules":[{"match":"a","policy":"allow"}]}`}},
		{"AuthzListJSONRulesObject", []string{`{"qom-type":"authz-list","id":"a0","rules":{"match":"a","policy":"allow"}}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := []string{"info"}
			for _, spec := range tt.specs {
				args = append(args, "--object", spec)
			}
			args = append(args, "-f", "raw", "/dev/null")
			out, qemuErr := exec.Command(qemuImg, args...).CombinedOutput()

			_, err := ParseAll(tt.specs)
			if qemuErr != nil {
				assert.Error(t, err, "qemu-img rejects it: %s", strings.TrimSpace(string(out)))
			} else {
				assert.NoError(t, err, "qemu-img accepts it")
			}
		})
	}
}
