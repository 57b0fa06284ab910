package tlscreds

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gonbd/gonbd/internal/testenv"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// attr builds one attribute with a value of the given universal tag.
func attr(oid asn1.ObjectIdentifier, tag int, value []byte) dnAttribute {
	return dnAttribute{Type: oid, Value: asn1.RawValue{Class: asn1.ClassUniversal, Tag: tag, Bytes: value}}
}

func utf16BE(s string) []byte {
	var b []byte
	for _, r := range s {
		b = append(b, byte(r>>8), byte(r))
	}
	return b
}

var (
	oidC     = asn1.ObjectIdentifier{2, 5, 4, 6}
	oidST    = asn1.ObjectIdentifier{2, 5, 4, 8}
	oidL     = asn1.ObjectIdentifier{2, 5, 4, 7}
	oidO     = asn1.ObjectIdentifier{2, 5, 4, 10}
	oidOU    = asn1.ObjectIdentifier{2, 5, 4, 11}
	oidCN    = asn1.ObjectIdentifier{2, 5, 4, 3}
	oidUID   = asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 1}
	oidDC    = asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 25}
	oidEmail = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}
	oidOther = asn1.ObjectIdentifier{1, 2, 3, 4}
)

var dnCases = []struct {
	name string
	rdns []dnAttributeSET
	want string
}{
	{"QEMUGuideClient", []dnAttributeSET{
		{attr(oidC, asn1.TagPrintableString, []byte("GB"))},
		{attr(oidST, asn1.TagUTF8String, []byte("London"))},
		{attr(oidL, asn1.TagUTF8String, []byte("City Of London"))},
		{attr(oidO, asn1.TagUTF8String, []byte("Name of your organization"))},
		{attr(oidCN, asn1.TagUTF8String, []byte("client.example.com"))},
	}, "C=GB,ST=London,L=City Of London,O=Name of your organization,CN=client.example.com"},
	{"SpecialCharacters", []dnAttributeSET{
		{attr(oidO, asn1.TagUTF8String, []byte(`Name, of "your" org+x<y>`))},
		{attr(oidOU, asn1.TagUTF8String, []byte(`Unit;1\2`))},
	}, `O=Name\, of \"your\" org\+x\<y\>,OU=Unit\;1\\2`},
	{"LeadingAndTrailing", []dnAttributeSET{
		{attr(oidCN, asn1.TagUTF8String, []byte(" lead"))},
		{attr(oidCN, asn1.TagUTF8String, []byte("#hash"))},
		{attr(oidCN, asn1.TagUTF8String, []byte("trail "))},
		{attr(oidCN, asn1.TagUTF8String, []byte("mid#dle"))},
	}, `CN=\ lead,CN=\#hash,CN=trail\ ,CN=mid#dle`},
	{"MultiValuedRDN", []dnAttributeSET{
		{attr(oidCN, asn1.TagUTF8String, []byte("a")), attr(oidUID, asn1.TagUTF8String, []byte("b"))},
	}, "CN=a+UID=b"},
	{"EmailAndDC", []dnAttributeSET{
		{attr(oidDC, asn1.TagIA5String, []byte("org"))},
		{attr(oidEmail, asn1.TagIA5String, []byte("a@b.org"))},
	}, "DC=org,EMAIL=a@b.org"},
	{"UnknownOID", []dnAttributeSET{
		{attr(oidOther, asn1.TagUTF8String, []byte("x"))},
	}, "1.2.3.4=#0c0178"},
	{"WrongStringType", []dnAttributeSET{
		{attr(oidC, asn1.TagUTF8String, []byte("GB"))},
		{attr(oidEmail, asn1.TagUTF8String, []byte("a@b"))},
	}, "C=#0c024742,EMAIL=#0c03614062"},
	{"BMPString", []dnAttributeSET{
		{attr(oidCN, tagBMPString, utf16BE("Zoë"))},
	}, "CN=Zoë"},
	{"UTF8NonASCII", []dnAttributeSET{
		{attr(oidCN, asn1.TagUTF8String, []byte("Zoë"))},
	}, "CN=Zoë"},
	{"TeletexPrintable", []dnAttributeSET{
		{attr(oidCN, tagTeletexString, []byte("tele"))},
	}, "CN=tele"},
	{"Empty", nil, ""},
}

func marshalRDNs(t *testing.T, rdns []dnAttributeSET) []byte {
	t.Helper()
	if rdns == nil {
		rdns = []dnAttributeSET{}
	}
	der, err := asn1.Marshal(rdns)
	require.NoError(t, err)
	return der
}

func TestFormatDN(t *testing.T) {
	for _, tc := range dnCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := FormatDN(marshalRDNs(t, tc.rdns))
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestFormatDNErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		der  []byte
		want string
	}{
		{"NotASequence", []byte{0x04, 0x00}, "parse distinguished name"},
		{"TrailingData", []byte{0x30, 0x00, 0x00}, "trailing data"},
		{"Truncated", []byte{0x30, 0x05, 0x31}, "parse distinguished name"},
		{"EmbeddedNUL", func() []byte {
			der, _ := asn1.Marshal([]dnAttributeSET{{attr(oidCN, asn1.TagUTF8String, []byte("a\x00b"))}})
			return der
		}(), "NUL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := FormatDN(tc.der)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func FuzzFormatDN(f *testing.F) {
	for _, tc := range dnCases {
		der, err := asn1.Marshal(tc.rdns)
		if err == nil {
			f.Add(der)
		}
	}
	f.Fuzz(func(t *testing.T, der []byte) {
		_, _ = FormatDN(der)
	})
}

// buildGetDN compiles testdata/getdn.c against GnuTLS.
func buildGetDN(t *testing.T) string {
	t.Helper()
	return buildGnuTLSHelper(t, "getdn")
}

// buildGnuTLSHelper compiles testdata/NAME.c against GnuTLS and returns
// the program. A missing compiler or GnuTLS headers skip the test, or
// fail it under CI=true.
func buildGnuTLSHelper(t *testing.T, name string) string {
	t.Helper()
	cc := needTool(t, "cc")
	src := filepath.Join("testdata", name+".c")
	bin := filepath.Join(t.TempDir(), name)
	out, err := exec.Command(cc, "-o", bin, src, "-lgnutls").CombinedOutput()
	if err != nil {
		if testenv.UnderCI() {
			t.Fatalf("build %s (needs GnuTLS headers, libgnutls28-dev): %v\n%s", src, err, out)
		}
		t.Skipf("cannot build %s (needs GnuTLS headers): %v\n%s", src, err, out)
	}
	return bin
}

// selfSignedWithSubject writes a certificate whose subject is rawSubject.
func selfSignedWithSubject(t *testing.T, dir string, rawSubject []byte) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		RawSubject:   rawSubject,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	require.NoError(t, err)
	path := filepath.Join(dir, "cert.pem")
	writeFile(t, path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	return path
}

// TestFormatDNMatchesGnuTLS checks every case against GnuTLS itself.
func TestFormatDNMatchesGnuTLS(t *testing.T) {
	getdn := buildGetDN(t)
	for _, tc := range dnCases {
		t.Run(tc.name, func(t *testing.T) {
			raw := marshalRDNs(t, tc.rdns)
			path := selfSignedWithSubject(t, t.TempDir(), raw)
			out, err := exec.Command(getdn, path).Output()
			if len(tc.rdns) == 0 {
				// GnuTLS has no string for an empty name.
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			got, err := FormatDN(raw)
			require.NoError(t, err)
			assert.Equal(t, strings.TrimSuffix(string(out), "\n"), got)
		})
	}

	t.Run("CerttoolGuideClient", func(t *testing.T) {
		dir := certtoolFixture(t)
		out, err := exec.Command(getdn, filepath.Join(dir, FileClientCert)).Output()
		require.NoError(t, err)
		assert.Equal(t, certtoolIdentity+"\n", string(out))
	})
}
