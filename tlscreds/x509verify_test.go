package tlscreds

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
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
		{"CNFallbackWithIPSAN", &x509.Certificate{Subject: withCN("nbd"), IPAddresses: []net.IP{net.ParseIP("10.0.0.1")}}, "nbd", true},
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
