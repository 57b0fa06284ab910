package tlscreds

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMatchHostnamePattern(t *testing.T) {
	for _, tc := range []struct {
		pattern, hostname string
		want              bool
	}{
		{"nbd.example.com", "nbd.example.com", true},
		{"NBD.Example.COM", "nbd.example.com", true},
		{"nbd.example.com", "nbd2.example.com", false},
		{"*.example.com", "nbd.example.com", true},
		{"*.example.com", "a.b.example.com", false},
		{"*.example.com", "example.com", false},
		{"*nbd.example.com", "mynbd.example.com", true},
		{"*.com", "example.com", false},
		{"*.example.", "a.example.", false},
		{"nbd*.example.com", "nbd1.example.com", false},
	} {
		t.Run(tc.pattern+"/"+tc.hostname, func(t *testing.T) {
			assert.Equal(t, tc.want, matchHostnamePattern(tc.pattern, tc.hostname))
		})
	}
}

func TestMatchCertHostname(t *testing.T) {
	withCN := func(cn string) pkix.Name {
		return pkix.Name{Names: []pkix.AttributeTypeAndValue{{Type: oidCommonName, Value: cn}}}
	}
	for _, tc := range []struct {
		name     string
		cert     *x509.Certificate
		hostname string
		want     bool
	}{
		{"DNSName", &x509.Certificate{DNSNames: []string{"nbd"}}, "nbd", true},
		{"IPAddress", &x509.Certificate{IPAddresses: []net.IP{net.ParseIP("10.0.0.1")}}, "10.0.0.1", true},
		{"IPv6Address", &x509.Certificate{IPAddresses: []net.IP{net.ParseIP("2001:db8::1")}}, "2001:db8:0::1", true},
		{"IPInDNSName", &x509.Certificate{DNSNames: []string{"10.0.0.1"}}, "10.0.0.1", false},
		{"IPv6InDNSName", &x509.Certificate{DNSNames: []string{"::1"}}, "::1", false},
		{"IPInCN", &x509.Certificate{Subject: withCN("10.0.0.1")}, "10.0.0.1", false},
		{"IPNotInIPSAN", &x509.Certificate{DNSNames: []string{"10.0.0.1"}, IPAddresses: []net.IP{net.ParseIP("10.0.0.2")}}, "10.0.0.1", false},
		{"CNFallback", &x509.Certificate{Subject: withCN("nbd.example.com")}, "nbd.example.com", true},
		{"CNIgnoredWithIPSAN", &x509.Certificate{Subject: withCN("nbd"), IPAddresses: []net.IP{net.ParseIP("10.0.0.1")}}, "nbd", false},
		{"CNIgnoredWithURISAN", &x509.Certificate{Subject: withCN("nbd"), URIs: []*url.URL{{Scheme: "spiffe", Host: "nbd"}}}, "nbd", false},
		{"CNFallbackWithEmailSAN", &x509.Certificate{Subject: withCN("nbd"), EmailAddresses: []string{"admin@nbd"}}, "nbd", true},
		{"CNIgnoredWithDNSName", &x509.Certificate{Subject: withCN("nbd"), DNSNames: []string{"other"}}, "nbd", false},
		{"CNIgnoredForClientPurpose", &x509.Certificate{Subject: withCN("nbd"), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, "nbd", false},
		{"TwoCNs", &x509.Certificate{Subject: pkix.Name{Names: []pkix.AttributeTypeAndValue{
			{Type: oidCommonName, Value: "nbd"}, {Type: oidCommonName, Value: "nbd"}}}}, "nbd", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, matchCertHostname(tc.cert, tc.hostname))
		})
	}
}

// TestMatchCertHostnameMatchesGnuTLS issues certificates with each kind of
// name and checks matchCertHostname against GnuTLS's
// gnutls_x509_crt_check_hostname, which qemu-img, qemu-nbd -L and nbdinfo
// use, for every host name.
func TestMatchCertHostnameMatchesGnuTLS(t *testing.T) {
	checkhost := buildGnuTLSHelper(t, "checkhost")
	serverAuth := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	certs := []struct {
		name string
		tmpl x509.Certificate
	}{
		{"DNSName", x509.Certificate{DNSNames: []string{"nbd.example.com"}}},
		{"WildcardDNSName", x509.Certificate{DNSNames: []string{"*.example.com"}}},
		{"CNOnly", x509.Certificate{Subject: pkix.Name{CommonName: "nbd.example.com"}, ExtKeyUsage: serverAuth}},
		{"CNOnlyClientPurpose", x509.Certificate{Subject: pkix.Name{CommonName: "nbd.example.com"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}},
		{"CNWithIPSAN", x509.Certificate{Subject: pkix.Name{CommonName: "nbd.example.com"}, ExtKeyUsage: serverAuth,
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}},
		{"CNWithIPv6SAN", x509.Certificate{Subject: pkix.Name{CommonName: "nbd.example.com"}, ExtKeyUsage: serverAuth,
			IPAddresses: []net.IP{net.ParseIP("::1")}}},
		{"CNWithURISAN", x509.Certificate{Subject: pkix.Name{CommonName: "nbd.example.com"}, ExtKeyUsage: serverAuth,
			URIs: []*url.URL{{Scheme: "spiffe", Host: "example.com", Path: "/nbd"}}}},
		{"CNWithEmailSAN", x509.Certificate{Subject: pkix.Name{CommonName: "nbd.example.com"}, ExtKeyUsage: serverAuth,
			EmailAddresses: []string{"admin@example.com"}}},
		{"CNAndDNSName", x509.Certificate{Subject: pkix.Name{CommonName: "nbd.example.com"}, ExtKeyUsage: serverAuth,
			DNSNames: []string{"other.example.com"}}},
		{"IPInCN", x509.Certificate{Subject: pkix.Name{CommonName: "127.0.0.1"}, ExtKeyUsage: serverAuth}},
		{"IPInDNSName", x509.Certificate{DNSNames: []string{"127.0.0.1"}}},
	}
	hostnames := []string{"nbd.example.com", "NBD.example.com", "other.example.com", "a.example.com", "127.0.0.1", "::1"}

	for _, cc := range certs {
		path, cert := issueSelfSigned(t, cc.tmpl)
		for _, host := range hostnames {
			t.Run(cc.name+"/"+host, func(t *testing.T) {
				out, err := exec.Command(checkhost, path, host).Output()
				require.NoError(t, err)
				gnutls := strings.TrimSpace(string(out)) == "1"
				assert.Equal(t, gnutls, matchCertHostname(cert, host))
			})
		}
	}
}

// issueSelfSigned writes a self-signed certificate made from tmpl and
// returns its path and parsed form.
func issueSelfSigned(t *testing.T, tmpl x509.Certificate) (string, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl.SerialNumber = big.NewInt(1)
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, key.Public(), key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "cert.pem")
	writeFile(t, path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	return path, cert
}
