package tlscreds

import (
	"crypto/tls"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParsePriority(t *testing.T) {
	for _, tc := range []struct {
		name     string
		priority string
		want     Priority
	}{
		{"Empty", "", Priority{}},
		{"Normal", "NORMAL", Priority{}},
		{"Performance", "PERFORMANCE", Priority{}},
		{"Secure128", "SECURE128", Priority{}},
		{"System", "@SYSTEM", Priority{}},
		{"FedoraQEMUDefault", "@QEMU,SYSTEM", Priority{}},
		{"CompatFlags", "NORMAL:%COMPAT:%SERVER_PRECEDENCE", Priority{}},
		{"NoTickets", "NORMAL:%NO_TICKETS", Priority{}},
		{"AddAlreadyEnabled", "NORMAL:+VERS-TLS1.3:+AES-128-GCM:+GROUP-X25519:+SIGN-ALL:+COMP-NULL:+CTYPE-X509", Priority{}},
		{"RemoveUnsupported", "NORMAL:-VERS-TLS1.1:-VERS-TLS1.0:-DHE-RSA:-AES-128-CCM:-GROUP-FFDHE2048:-MD5", Priority{}},
		{"PSKKeyExchanges", "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK", Priority{}},
		{"TLS13Only", "NORMAL:-VERS-TLS1.2", Priority{
			MinVersion: tls.VersionTLS13, MaxVersion: tls.VersionTLS13,
			CipherSuites: []uint16{tls.TLS_AES_128_GCM_SHA256, tls.TLS_AES_256_GCM_SHA384, tls.TLS_CHACHA20_POLY1305_SHA256},
		}},
		{"TLS12OnlyAESGCM", "NORMAL:-VERS-TLS1.3:-CHACHA20-POLY1305:-AES-128-CBC:-AES-256-CBC", Priority{
			MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12,
			CipherSuites: []uint16{
				tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
				tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			},
		}},
		{"VersAllThenTLS13", "NORMAL:-VERS-ALL:+VERS-TLS1.3", Priority{
			MinVersion: tls.VersionTLS13, MaxVersion: tls.VersionTLS13,
			CipherSuites: []uint16{tls.TLS_AES_128_GCM_SHA256, tls.TLS_AES_256_GCM_SHA384, tls.TLS_CHACHA20_POLY1305_SHA256},
		}},
		{"RemoveChaCha", "NORMAL:!CHACHA20-POLY1305", Priority{
			CipherSuites: []uint16{
				tls.TLS_AES_128_GCM_SHA256, tls.TLS_AES_256_GCM_SHA384,
				tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
				tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
				tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
				tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
			},
		}},
		{"AddRSAKeyExchange", "NORMAL:-VERS-TLS1.3:-CIPHER-ALL:+AES-256-GCM:+RSA", Priority{
			MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12,
			CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
				tls.TLS_RSA_WITH_AES_256_GCM_SHA384},
		}},
		{"AddSHA256MAC", "NORMAL:-VERS-TLS1.3:-CIPHER-ALL:+AES-128-CBC:-SHA1:+SHA256", Priority{
			MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12,
			CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256},
		}},
		{"GroupsX25519Only", "NORMAL:-GROUP-ALL:+GROUP-X25519", Priority{Groups: []uint16{uint16(tls.X25519)}}},
		{"CurveAlias", "NORMAL:-CURVE-ALL:+CURVE-SECP256R1", Priority{Groups: []uint16{uint16(tls.CurveP256)}}},
		{"RemoveOneGroup", "NORMAL:-GROUP-SECP521R1", Priority{Groups: []uint16{
			uint16(tls.X25519MLKEM768), uint16(tls.SecP256r1MLKEM768), uint16(tls.SecP384r1MLKEM1024),
			uint16(tls.X25519), uint16(tls.CurveP256), uint16(tls.CurveP384)}}},
		{"Secure256TLS12", "SECURE256:-VERS-TLS1.3", Priority{
			MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12,
			CipherSuites: []uint16{
				tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
				tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
				tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
			},
			Groups: []uint16{uint16(tls.SecP384r1MLKEM1024), uint16(tls.CurveP384), uint16(tls.CurveP521)},
		}},
		{"NoneBuiltUp", "NONE:+VERS-TLS1.2:+ECDHE-RSA:+AES-128-GCM:+AEAD:+GROUP-SECP256R1:+SIGN-ALL:+COMP-NULL", Priority{
			MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12,
			CipherSuites: []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256},
			Groups:       []uint16{uint16(tls.CurveP256)},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParsePriority(tc.priority)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestParsePriorityErrors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		priority string
		want     string
	}{
		{"UnknownBase", "FAST", `invalid priority base "FAST"`},
		{"LegacyBase", "LEGACY", `invalid priority base "LEGACY": not supported`},
		{"OtherSystemKeyword", "@QEMU", `invalid priority base "@QEMU"`},
		{"UnknownKeyword", "NORMAL:+FOO", `unknown priority keyword "+FOO"`},
		{"NoPrefix", "NORMAL:VERS-TLS1.2", `keyword "VERS-TLS1.2" needs a + or - prefix`},
		{"EmptyKeyword", "NORMAL::+AEAD", "empty keyword"},
		{"AddTLS11", "NORMAL:+VERS-TLS1.1", "+VERS-TLS1.1: gonbd offers TLS 1.2 and 1.3 only"},
		{"AddDHE", "NORMAL:+DHE-RSA", "+DHE-RSA: crypto/tls does not implement DHE-RSA"},
		{"AddCCM", "NORMAL:+AES-128-CCM", "+AES-128-CCM: crypto/tls does not implement AES-128-CCM"},
		{"AddX448", "NORMAL:+GROUP-X448", "+GROUP-X448: crypto/tls does not implement group X448"},
		{"AddFFDHE", "NORMAL:+GROUP-DH-ALL", "+GROUP-DH-ALL: crypto/tls implements none of these groups"},
		{"RemoveSignature", "NORMAL:-SIGN-RSA-SHA1", "-SIGN-RSA-SHA1: crypto/tls cannot disable signature algorithms"},
		{"AddUnknownSignature", "NORMAL:+SIGN-DSA-SHA1", "+SIGN-DSA-SHA1: crypto/tls does not implement this signature algorithm"},
		{"RemoveNullCompression", "NORMAL:-COMP-NULL", "-COMP-NULL: crypto/tls cannot turn it off"},
		{"AddDeflate", "NORMAL:+COMP-DEFLATE", "+COMP-DEFLATE: crypto/tls does not implement it"},
		{"UnsupportedFlag", "NORMAL:%NO_TICKETS_TLS12", "%NO_TICKETS_TLS12: flag not supported by crypto/tls: remove it"},
		{"NoVersion", "NORMAL:-VERS-ALL", "no TLS version left"},
		{"NoCipher", "NORMAL:-CIPHER-ALL", "no cipher suite left"},
		{"NoGroup", "NORMAL:-GROUP-ALL", "no key exchange group left"},
		{"NoneAlone", "NONE", "no TLS version left"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParsePriority(tc.priority)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestApplyPriority(t *testing.T) {
	for _, tc := range []struct {
		name     string
		priority string
		check    func(t *testing.T, conf *tls.Config)
		wantErr  string
	}{
		{"NormalKeepsDefaults", "NORMAL", func(t *testing.T, conf *tls.Config) {
			assert.Nil(t, conf.CipherSuites)
			assert.Nil(t, conf.CurvePreferences)
			assert.Equal(t, uint16(tls.VersionTLS12), conf.MinVersion)
		}, ""},
		{"TLS13OnlyNeedsNoTLS12Suites", "NORMAL:-VERS-TLS1.2", func(t *testing.T, conf *tls.Config) {
			assert.Equal(t, uint16(tls.VersionTLS13), conf.MinVersion)
			assert.Empty(t, conf.CipherSuites)
		}, ""},
		{"NoTLS12SuitesRaisesMinimum", "NORMAL:-KX-ALL", func(t *testing.T, conf *tls.Config) {
			assert.Equal(t, uint16(tls.VersionTLS13), conf.MinVersion)
		}, ""},
		{"TLS12SuitesSplitOut", "NORMAL:-VERS-TLS1.3:-CIPHER-ALL:+AES-256-GCM", func(t *testing.T, conf *tls.Config) {
			assert.Equal(t, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384}, conf.CipherSuites)
		}, ""},
		{"Groups", "NORMAL:-GROUP-ALL:+GROUP-X25519:+GROUP-SECP384R1", func(t *testing.T, conf *tls.Config) {
			assert.Equal(t, []tls.CurveID{tls.X25519, tls.CurveP384}, conf.CurvePreferences)
		}, ""},
		{"TLS13SuiteRemoval", "NORMAL:-AES-128-GCM", nil, "priority removes TLS_AES_128_GCM_SHA256 from TLS 1.3"},
		{"Secure256WithTLS13", "SECURE256", nil, "keep AES-128-GCM or add -VERS-TLS1.3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParsePriority(tc.priority)
			require.NoError(t, err)
			conf := &tls.Config{MinVersion: tls.VersionTLS12}
			err = applyPriority(conf, p)
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				return
			}
			require.NoError(t, err)
			tc.check(t, conf)
		})
	}
}

func FuzzParsePriority(f *testing.F) {
	for _, s := range []string{"NORMAL", "@SYSTEM", "NONE:+VERS-TLS1.2:+ECDHE-RSA:+AES-128-GCM:+AEAD:+GROUP-X25519",
		"SECURE256:-VERS-TLS1.3", "NORMAL:-GROUP-ALL:+CURVE-X25519:%COMPAT", "PERFORMANCE:!ARCFOUR:+3DES-CBC:+RSA"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePriority(s)
		if err != nil {
			return
		}
		_ = applyPriority(&tls.Config{}, p)
	})
}
