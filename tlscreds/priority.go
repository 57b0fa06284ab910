package tlscreds

import (
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// A GnuTLS priority string (QEMU's priority= property, documented in the
// GnuTLS manual section "Priority strings") starts with a base keyword
// and continues with ":"-separated modifiers: "+X" adds X, "-X" or "!X"
// removes it, "%FLAG" sets a flag. ParsePriority keeps what crypto/tls can
// express (versions, cipher suites through their cipher, key exchange and
// MAC, and groups) and rejects, naming the keyword, anything it cannot
// honour.

// suiteParts names a cipher suite by the priority keywords that enable
// it. TLS 1.3 suites depend on the cipher alone.
type suiteParts struct {
	id     uint16
	tls13  bool
	kx     string
	cipher string
	mac    string
}

// knownSuites lists the suites crypto/tls implements, in its preference
// order, with their GnuTLS keywords.
var knownSuites = []suiteParts{
	{id: tls.TLS_AES_128_GCM_SHA256, tls13: true, cipher: "AES-128-GCM"},
	{id: tls.TLS_AES_256_GCM_SHA384, tls13: true, cipher: "AES-256-GCM"},
	{id: tls.TLS_CHACHA20_POLY1305_SHA256, tls13: true, cipher: "CHACHA20-POLY1305"},

	{id: tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, kx: "ECDHE-ECDSA", cipher: "AES-128-GCM", mac: "AEAD"},
	{id: tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, kx: "ECDHE-RSA", cipher: "AES-128-GCM", mac: "AEAD"},
	{id: tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, kx: "ECDHE-ECDSA", cipher: "AES-256-GCM", mac: "AEAD"},
	{id: tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, kx: "ECDHE-RSA", cipher: "AES-256-GCM", mac: "AEAD"},
	{id: tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, kx: "ECDHE-ECDSA", cipher: "CHACHA20-POLY1305", mac: "AEAD"},
	{id: tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256, kx: "ECDHE-RSA", cipher: "CHACHA20-POLY1305", mac: "AEAD"},
	{id: tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, kx: "ECDHE-ECDSA", cipher: "AES-128-CBC", mac: "SHA1"},
	{id: tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, kx: "ECDHE-RSA", cipher: "AES-128-CBC", mac: "SHA1"},
	{id: tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, kx: "ECDHE-ECDSA", cipher: "AES-256-CBC", mac: "SHA1"},
	{id: tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA, kx: "ECDHE-RSA", cipher: "AES-256-CBC", mac: "SHA1"},
	{id: tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256, kx: "ECDHE-ECDSA", cipher: "AES-128-CBC", mac: "SHA256"},
	{id: tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256, kx: "ECDHE-RSA", cipher: "AES-128-CBC", mac: "SHA256"},
	{id: tls.TLS_RSA_WITH_AES_128_GCM_SHA256, kx: "RSA", cipher: "AES-128-GCM", mac: "AEAD"},
	{id: tls.TLS_RSA_WITH_AES_256_GCM_SHA384, kx: "RSA", cipher: "AES-256-GCM", mac: "AEAD"},
	{id: tls.TLS_RSA_WITH_AES_128_CBC_SHA, kx: "RSA", cipher: "AES-128-CBC", mac: "SHA1"},
	{id: tls.TLS_RSA_WITH_AES_256_CBC_SHA, kx: "RSA", cipher: "AES-256-CBC", mac: "SHA1"},
	{id: tls.TLS_RSA_WITH_AES_128_CBC_SHA256, kx: "RSA", cipher: "AES-128-CBC", mac: "SHA256"},
	{id: tls.TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA, kx: "ECDHE-RSA", cipher: "3DES-CBC", mac: "SHA1"},
	{id: tls.TLS_RSA_WITH_3DES_EDE_CBC_SHA, kx: "RSA", cipher: "3DES-CBC", mac: "SHA1"},
	{id: tls.TLS_ECDHE_ECDSA_WITH_RC4_128_SHA, kx: "ECDHE-ECDSA", cipher: "ARCFOUR-128", mac: "SHA1"},
	{id: tls.TLS_ECDHE_RSA_WITH_RC4_128_SHA, kx: "ECDHE-RSA", cipher: "ARCFOUR-128", mac: "SHA1"},
	{id: tls.TLS_RSA_WITH_RC4_128_SHA, kx: "RSA", cipher: "ARCFOUR-128", mac: "SHA1"},
}

// Keywords of each kind that crypto/tls can honour, and keywords GnuTLS
// implements but crypto/tls does not: adding one of those is an error, removing one is
// a no-op.
var (
	supportedCiphers   = []string{"AES-128-GCM", "AES-256-GCM", "CHACHA20-POLY1305", "AES-128-CBC", "AES-256-CBC", "3DES-CBC", "ARCFOUR-128"}
	unsupportedCiphers = []string{"AES-128-CCM", "AES-256-CCM", "AES-128-CCM-8", "AES-256-CCM-8",
		"CAMELLIA-128-GCM", "CAMELLIA-256-GCM", "CAMELLIA-128-CBC", "CAMELLIA-256-CBC", "CAMELLIA-192-CBC",
		"AES-192-CBC", "ARCFOUR-40", "DES-CBC", "RC2-40", "NULL", "GOST28147-TC26Z-CNT",
		"MAGMA-CTR-ACPKM", "KUZNYECHIK-CTR-ACPKM"}
	supportedKx   = []string{"ECDHE-RSA", "ECDHE-ECDSA", "RSA"}
	unsupportedKx = []string{"DHE-RSA", "DHE-DSS", "SRP", "SRP-RSA", "SRP-DSS", "ANON-DH", "ANON-ECDH",
		"RSA-EXPORT", "VKO-GOST-12"}
	supportedMACs   = []string{"AEAD", "SHA1", "SHA256"}
	unsupportedMACs = []string{"MD5", "SHA384", "SHA512", "SHA224", "UMAC-96", "UMAC-128", "GOSTR341194",
		"STREEBOG-256", "STREEBOG-512", "GOST28147-TC26Z-IMIT", "MAGMA-OMAC", "KUZNYECHIK-OMAC"}
)

// groupIDs maps GnuTLS group keywords to crypto/tls curve IDs. The
// hybrid ML-KEM names are those of GnuTLS 3.8.9 and later.
var groupIDs = map[string]tls.CurveID{
	"X25519":              tls.X25519,
	"SECP256R1":           tls.CurveP256,
	"SECP384R1":           tls.CurveP384,
	"SECP521R1":           tls.CurveP521,
	"X25519-MLKEM768":     tls.X25519MLKEM768,
	"SECP256R1-MLKEM768":  tls.SecP256r1MLKEM768,
	"SECP384R1-MLKEM1024": tls.SecP384r1MLKEM1024,
}

var unsupportedGroups = []string{"X448", "FFDHE2048", "FFDHE3072", "FFDHE4096", "FFDHE6144", "FFDHE8192",
	"GC256A", "GC256B", "GC256C", "GC256D", "GC512A", "GC512B", "GC512C"}

// defaultGroups is crypto/tls's default key exchange set in Go 1.26
// (defaultCurvePreferences in crypto/tls/defaults.go), which is also
// every group in groupIDs.
var defaultGroups = []tls.CurveID{tls.X25519MLKEM768, tls.SecP256r1MLKEM768, tls.SecP384r1MLKEM1024,
	tls.X25519, tls.CurveP256, tls.CurveP384, tls.CurveP521}

// supportedSignatures are the GnuTLS signature keywords crypto/tls
// implements; "+SIGN-X" is accepted for these, and "-SIGN-X" is rejected
// for all since crypto/tls cannot disable signature algorithms.
var supportedSignatures = []string{"ALL", "RSA-SHA1", "RSA-SHA256", "RSA-SHA384", "RSA-SHA512",
	"ECDSA-SHA1", "ECDSA-SHA256", "ECDSA-SHA384", "ECDSA-SHA512",
	"ECDSA-SECP256R1-SHA256", "ECDSA-SECP384R1-SHA384", "ECDSA-SECP521R1-SHA512",
	"RSA-PSS-SHA256", "RSA-PSS-SHA384", "RSA-PSS-SHA512",
	"RSA-PSS-RSAE-SHA256", "RSA-PSS-RSAE-SHA384", "RSA-PSS-RSAE-SHA512", "EDDSA-ED25519"}

// priorityState is the sets a priority string builds up.
type priorityState struct {
	tls12, tls13 bool
	ciphers      map[string]bool
	kx           map[string]bool
	macs         map[string]bool
	groups       map[tls.CurveID]bool
}

func setOf[T comparable](items ...T) map[T]bool {
	m := make(map[T]bool, len(items))
	for _, it := range items {
		m[it] = true
	}
	return m
}

// baseState returns the sets of a base keyword, limited to what crypto/tls
// implements. Depending on the GnuTLS version and system configuration,
// GnuTLS's NORMAL, PERFORMANCE, SECURE128 and PFS also enable TLS 1.0/1.1,
// CCM ciphers and DHE key exchange, which crypto/tls lacks. They also
// enable static RSA key exchange, which gonbd leaves out as crypto/tls
// does by default ("+RSA" adds it). So each of them yields exactly
// crypto/tls's default configuration.
func baseState(keyword string) (priorityState, error) {
	normal := priorityState{
		tls12:   true,
		tls13:   true,
		ciphers: setOf("AES-128-GCM", "AES-256-GCM", "CHACHA20-POLY1305", "AES-128-CBC", "AES-256-CBC"),
		kx:      setOf("ECDHE-RSA", "ECDHE-ECDSA"),
		macs:    setOf("AEAD", "SHA1"),
		groups:  setOf(defaultGroups...),
	}
	switch keyword {
	case "NORMAL", "PERFORMANCE", "SECURE128", "SECURE", "PFS":
		return normal, nil
	case "SECURE192", "SECURE256":
		// GnuTLS's 192-bit level: 256-bit ciphers and P-384 or larger.
		normal.ciphers = setOf("AES-256-GCM", "CHACHA20-POLY1305", "AES-256-CBC")
		normal.groups = setOf(tls.CurveP384, tls.CurveP521, tls.SecP384r1MLKEM1024)
		return normal, nil
	case "NONE":
		return priorityState{ciphers: setOf[string](), kx: setOf[string](), macs: setOf[string](),
			groups: setOf[tls.CurveID]()}, nil
	}
	if strings.HasPrefix(keyword, "@") {
		for _, name := range strings.Split(keyword[1:], ",") {
			if name == "SYSTEM" {
				// NOTE: GnuTLS reads @SYSTEM from its system-wide
				// configuration file; gonbd does not parse that file
				// and uses crypto/tls's defaults instead.
				return normal, nil
			}
		}
		return priorityState{}, fmt.Errorf("invalid priority base %q: gonbd cannot read GnuTLS's system configuration and accepts only @SYSTEM (or a list containing SYSTEM), which selects crypto/tls's defaults", keyword)
	}
	switch keyword {
	case "LEGACY", "SUITEB128", "SUITEB192":
		return priorityState{}, fmt.Errorf("invalid priority base %q: not supported, use NORMAL, PERFORMANCE, SECURE128, SECURE192, SECURE256, PFS, NONE or @SYSTEM", keyword)
	}
	return priorityState{}, fmt.Errorf("invalid priority base %q: expected NORMAL, PERFORMANCE, SECURE128, SECURE192, SECURE256, PFS, NONE or @SYSTEM", keyword)
}

// ParsePriority parses a GnuTLS priority string such as
// "NORMAL:-VERS-TLS1.2:-CHACHA20-POLY1305" into what crypto/tls can
// honour. An empty string means NORMAL. Keywords that crypto/tls cannot
// honour, such as enabling DHE key exchange or TLS 1.1, or disabling a
// signature algorithm, are errors naming the keyword.
func ParsePriority(s string) (Priority, error) {
	if s == "" {
		s = "NORMAL"
	}
	items := strings.Split(s, ":")
	st, err := baseState(items[0])
	if err != nil {
		return Priority{}, err
	}
	for _, item := range items[1:] {
		if err := st.apply(item); err != nil {
			return Priority{}, fmt.Errorf("priority %q: %w", s, err)
		}
	}
	p, err := st.priority()
	if err != nil {
		return Priority{}, fmt.Errorf("priority %q: %w", s, err)
	}
	return p, nil
}

// apply applies one modifier.
func (st *priorityState) apply(item string) error {
	if item == "" {
		return errors.New("empty keyword (two colons in a row?)")
	}
	if item[0] == '%' {
		return applyFlag(item)
	}
	var add bool
	switch item[0] {
	case '+':
		add = true
	case '-', '!':
	default:
		return fmt.Errorf("keyword %q needs a + or - prefix", item)
	}
	name := item[1:]

	switch {
	case strings.HasPrefix(name, "VERS-"):
		return st.applyVersion(item, name[len("VERS-"):], add)
	case strings.HasPrefix(name, "GROUP-"):
		return st.applyGroup(item, name[len("GROUP-"):], add)
	case strings.HasPrefix(name, "CURVE-"):
		return st.applyGroup(item, name[len("CURVE-"):], add)
	case strings.HasPrefix(name, "SIGN-"):
		if add && slices.Contains(supportedSignatures, name[len("SIGN-"):]) {
			return nil
		}
		if add {
			return fmt.Errorf("%s: crypto/tls does not implement this signature algorithm", item)
		}
		return fmt.Errorf("%s: crypto/tls cannot disable signature algorithms", item)
	case strings.HasPrefix(name, "COMP-"), strings.HasPrefix(name, "CTYPE-"):
		return applyNoOpKeyword(item, name, add)
	}
	kinds := []struct {
		set                    map[string]bool
		all                    string
		supported, unsupported []string
	}{
		{st.ciphers, "CIPHER-ALL", supportedCiphers, unsupportedCiphers},
		{st.kx, "KX-ALL", supportedKx, unsupportedKx},
		{st.macs, "MAC-ALL", supportedMACs, unsupportedMACs},
	}
	for _, k := range kinds {
		if handled, err := applyComponent(k.set, item, name, add, k.all, k.supported, k.unsupported); handled {
			return err
		}
	}
	switch name {
	case "PSK", "DHE-PSK", "ECDHE-PSK", "RSA-PSK":
		// TLS-PSK key exchanges; QEMU appends +ECDHE-PSK:+DHE-PSK:+PSK
		// for tls-creds-psk. They change no certificate suite.
		// NOTE: removing them is accepted but not enforced.
		return nil
	}
	return fmt.Errorf("unknown priority keyword %q", item)
}

// applyComponent applies a cipher, key exchange or MAC keyword to set. It
// returns false if name is not a keyword of this kind.
func applyComponent(set map[string]bool, item, name string, add bool, all string, supported, unsupported []string) (bool, error) {
	if name == "ARCFOUR" {
		name = "ARCFOUR-128"
	}
	switch {
	case name == all:
		for _, n := range supported {
			set[n] = add
		}
		return true, nil
	case slices.Contains(supported, name):
		set[name] = add
		return true, nil
	case slices.Contains(unsupported, name):
		if add {
			return true, fmt.Errorf("%s: crypto/tls does not implement %s", item, name)
		}
		return true, nil
	}
	return false, nil
}

func (st *priorityState) applyVersion(item, version string, add bool) error {
	switch version {
	case "TLS1.3":
		st.tls13 = add
	case "TLS1.2":
		st.tls12 = add
	case "ALL", "TLS-ALL":
		st.tls12, st.tls13 = add, add
	case "TLS1.1", "TLS1.0", "SSL3.0":
		if add {
			return fmt.Errorf("%s: gonbd offers TLS 1.2 and 1.3 only", item)
		}
	case "DTLS0.9", "DTLS1.0", "DTLS1.2", "DTLS-ALL":
		// DTLS versions do not apply to TLS over a stream.
	default:
		return fmt.Errorf("unknown priority keyword %q", item)
	}
	return nil
}

func (st *priorityState) applyGroup(item, group string, add bool) error {
	switch group {
	case "ALL", "EC-ALL":
		for _, id := range groupIDs {
			st.groups[id] = add
		}
		return nil
	case "DH-ALL", "GOST-ALL":
		if add {
			return fmt.Errorf("%s: crypto/tls implements none of these groups", item)
		}
		return nil
	}
	if id, ok := groupIDs[group]; ok {
		st.groups[id] = add
		return nil
	}
	if slices.Contains(unsupportedGroups, group) {
		if add {
			return fmt.Errorf("%s: crypto/tls does not implement group %s", item, group)
		}
		return nil
	}
	return fmt.Errorf("unknown priority keyword %q", item)
}

// applyNoOpKeyword handles compression and certificate type keywords:
// crypto/tls never compresses and only uses X.509 certificates, so
// keeping those is a no-op, and anything else cannot be honoured.
func applyNoOpKeyword(item, name string, add bool) error {
	var keeps bool
	switch name {
	case "COMP-NULL", "COMP-ALL", "CTYPE-X509", "CTYPE-ALL", "CTYPE-SRV-X509", "CTYPE-CLI-X509",
		"CTYPE-SRV-ALL", "CTYPE-CLI-ALL":
		keeps = true
	case "COMP-DEFLATE", "COMP-ZLIB", "COMP-LZ4", "COMP-ZSTD", "COMP-BROTLI", "CTYPE-OPENPGP", "CTYPE-RAWPK",
		"CTYPE-SRV-RAWPK", "CTYPE-CLI-RAWPK", "CTYPE-SRV-OPENPGP", "CTYPE-CLI-OPENPGP":
	default:
		return fmt.Errorf("unknown priority keyword %q", item)
	}
	if add == keeps {
		return nil
	}
	if add {
		return fmt.Errorf("%s: crypto/tls does not implement it", item)
	}
	return fmt.Errorf("%s: crypto/tls cannot turn it off", item)
}

// applyFlag accepts the %FLAG keywords whose effect crypto/tls already
// has, or which do not apply to it, and rejects the rest.
func applyFlag(item string) error {
	switch item {
	case "%COMPAT", "%DUMBFW", "%NO_ETM", "%SAFE_RENEGOTIATION", "%STATELESS_COMPRESSION",
		"%NO_SHUFFLE_EXTENSIONS", "%ALLOW_SMALL_RECORDS", "%NO_STATUS_REQUEST":
		return nil
	case "%SERVER_PRECEDENCE":
		// crypto/tls servers already choose by their own preference
		// order (adjusted for AES hardware).
		return nil
	case "%NO_TICKETS":
		// gonbd servers never issue session tickets (see baseConfig),
		// and its clients keep no session cache.
		return nil
	}
	return fmt.Errorf("%s: flag not supported by crypto/tls: remove it", item)
}

// priority turns the sets into a Priority, leaving a field zero where it
// equals crypto/tls's default.
func (st *priorityState) priority() (Priority, error) {
	var p Priority
	switch {
	case st.tls12 && st.tls13:
	case st.tls13:
		p.MinVersion, p.MaxVersion = tls.VersionTLS13, tls.VersionTLS13
	case st.tls12:
		p.MinVersion, p.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	default:
		return Priority{}, errors.New("no TLS version left: keep VERS-TLS1.2 or VERS-TLS1.3")
	}

	var suites []uint16
	for _, s := range knownSuites {
		if !st.ciphers[s.cipher] {
			continue
		}
		if s.tls13 {
			if st.tls13 {
				suites = append(suites, s.id)
			}
			continue
		}
		if st.tls12 && st.kx[s.kx] && st.macs[s.mac] {
			suites = append(suites, s.id)
		}
	}
	if len(suites) == 0 {
		return Priority{}, errors.New("no cipher suite left: keep a cipher such as AES-128-GCM (and for TLS 1.2 a key exchange such as ECDHE-RSA and a MAC such as AEAD)")
	}
	if !slices.Equal(suites, defaultSuites()) {
		p.CipherSuites = suites
	}

	var groups []uint16
	for _, id := range defaultGroups {
		if st.groups[id] {
			groups = append(groups, uint16(id))
		}
	}
	if len(groups) == 0 {
		return Priority{}, errors.New("no key exchange group left: keep a group such as GROUP-X25519")
	}
	if len(groups) != len(defaultGroups) {
		p.Groups = groups
	}
	return p, nil
}

// defaultSuites returns the suites NORMAL yields, which are crypto/tls's
// defaults.
func defaultSuites() []uint16 {
	st, _ := baseState("NORMAL")
	var ids []uint16
	for _, s := range knownSuites {
		if st.ciphers[s.cipher] && (s.tls13 || st.kx[s.kx] && st.macs[s.mac]) {
			ids = append(ids, s.id)
		}
	}
	return ids
}

// applyPriority sets conf's versions, suites and groups from p. TLS 1.3
// suites cannot be restricted in crypto/tls, so a priority that removes
// one while allowing TLS 1.3 is rejected.
func applyPriority(conf *tls.Config, p Priority) error {
	if p.MinVersion != 0 {
		conf.MinVersion = p.MinVersion
	}
	if p.MaxVersion != 0 {
		conf.MaxVersion = p.MaxVersion
	}
	if p.MinVersion != 0 && p.MinVersion < tls.VersionTLS12 {
		return fmt.Errorf("priority: %s is not supported, gonbd offers TLS 1.2 and 1.3 only", tls.VersionName(p.MinVersion))
	}
	tls13 := conf.MaxVersion == 0 || conf.MaxVersion >= tls.VersionTLS13

	if p.CipherSuites != nil {
		var tls12Suites, tls13Suites []uint16
		for _, id := range p.CipherSuites {
			if isTLS13Suite(id) {
				tls13Suites = append(tls13Suites, id)
			} else {
				tls12Suites = append(tls12Suites, id)
			}
		}
		if tls13 {
			for _, s := range knownSuites {
				if s.tls13 && !slices.Contains(tls13Suites, s.id) {
					return fmt.Errorf("priority removes %s from TLS 1.3, which crypto/tls cannot do: keep %s or add -VERS-TLS1.3",
						tls.CipherSuiteName(s.id), s.cipher)
				}
			}
		}
		if len(tls12Suites) == 0 {
			if !tls13 {
				return errors.New("priority leaves no TLS 1.2 cipher suite and TLS 1.3 is off")
			}
			conf.MinVersion = tls.VersionTLS13
		}
		conf.CipherSuites = tls12Suites
	}

	if p.Groups != nil {
		conf.CurvePreferences = nil
		for _, g := range p.Groups {
			conf.CurvePreferences = append(conf.CurvePreferences, tls.CurveID(g))
		}
	}
	return nil
}

func isTLS13Suite(id uint16) bool {
	return id>>8 == 0x13
}
