package tlscreds

import (
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// dnAttribute is one AttributeTypeAndValue of an X.501 name, with the
// value kept as raw DER so that it can be formatted as GnuTLS does.
type dnAttribute struct {
	Type  asn1.ObjectIdentifier
	Value asn1.RawValue
}

// dnAttributeSET is a RelativeDistinguishedName. encoding/asn1 treats a
// slice type whose name ends in "SET" as a SET OF.
type dnAttributeSET []dnAttribute

// dnString is GnuTLS's name and decoding rule for a known attribute type.
type dnString struct {
	name string
	// directory is true for DirectoryString values (a CHOICE of string
	// types); otherwise tag is the one universal tag the value must have.
	directory bool
	tag       int
}

// dnAttributeNames lists the attribute types GnuTLS 3.7 prints by name
// (the _oid2str table in its lib/x509/common.c). Other types print as a
// dotted OID with a hex value.
var dnAttributeNames = map[string]dnString{
	"1.3.6.1.5.5.7.9.2":          {name: "placeOfBirth", directory: true},
	"1.3.6.1.5.5.7.9.3":          {name: "gender", tag: asn1.TagPrintableString},
	"1.3.6.1.5.5.7.9.4":          {name: "countryOfCitizenship", tag: asn1.TagPrintableString},
	"1.3.6.1.5.5.7.9.5":          {name: "countryOfResidence", tag: asn1.TagPrintableString},
	"2.5.4.6":                    {name: "C", tag: asn1.TagPrintableString},
	"2.5.4.9":                    {name: "street", directory: true},
	"2.5.4.12":                   {name: "title", directory: true},
	"2.5.4.10":                   {name: "O", directory: true},
	"2.5.4.11":                   {name: "OU", directory: true},
	"2.5.4.3":                    {name: "CN", directory: true},
	"2.5.4.7":                    {name: "L", directory: true},
	"2.5.4.8":                    {name: "ST", directory: true},
	"2.5.4.13":                   {name: "description", directory: true},
	"2.5.4.5":                    {name: "serialNumber", tag: asn1.TagPrintableString},
	"2.5.4.20":                   {name: "telephoneNumber", tag: asn1.TagPrintableString},
	"2.5.4.4":                    {name: "surName", directory: true},
	"2.5.4.43":                   {name: "initials", directory: true},
	"2.5.4.44":                   {name: "generationQualifier", directory: true},
	"2.5.4.42":                   {name: "givenName", directory: true},
	"2.5.4.65":                   {name: "pseudonym", directory: true},
	"2.5.4.46":                   {name: "dnQualifier", tag: asn1.TagPrintableString},
	"2.5.4.17":                   {name: "postalCode", directory: true},
	"2.5.4.41":                   {name: "name", directory: true},
	"2.5.4.15":                   {name: "businessCategory", directory: true},
	"0.9.2342.19200300.100.1.25": {name: "DC", tag: asn1.TagIA5String},
	"0.9.2342.19200300.100.1.1":  {name: "UID", directory: true},
	"1.2.840.113556.1.4.656":     {name: "userPrincipalName", directory: true},
	"1.3.6.1.4.1.311.60.2.1.1":   {name: "jurisdictionOfIncorporationLocalityName", directory: true},
	"1.3.6.1.4.1.311.60.2.1.2":   {name: "jurisdictionOfIncorporationStateOrProvinceName", directory: true},
	"1.3.6.1.4.1.311.60.2.1.3":   {name: "jurisdictionOfIncorporationCountryName", tag: asn1.TagPrintableString},
	"1.2.840.113549.1.9.1":       {name: "EMAIL", tag: asn1.TagIA5String},
	"1.3.6.1.5.5.7.8.5":          {name: "XmppAddr", tag: asn1.TagUTF8String},
	"1.2.643.100.1":              {name: "OGRN", tag: asn1.TagNumericString},
	"1.2.643.100.3":              {name: "SNILS", tag: asn1.TagNumericString},
	"1.2.643.100.5":              {name: "OGRNIP", tag: asn1.TagNumericString},
	"1.2.643.3.131.1.1":          {name: "INN", tag: asn1.TagNumericString},
}

// Universal tags of DirectoryString choices that encoding/asn1 has no
// constant for.
const (
	tagTeletexString   = 20
	tagUniversalString = 28
	tagBMPString       = 30
)

var oidCommonName = asn1.ObjectIdentifier{2, 5, 4, 3}

var errDNEmbeddedNull = errors.New("distinguished name value contains a NUL byte")

// FormatDN formats a DER-encoded X.501 name (such as
// x509.Certificate.RawSubject) exactly as gnutls_x509_crt_get_dn does in
// GnuTLS 3.7, because that string is the identity QEMU checks against
// authz objects. RDNs keep their encoded order and are joined by ",", and
// multi-valued RDNs are joined by "+". Attribute names are GnuTLS's,
// values get RFC 4514 escaping, and values GnuTLS does not decode print as
// "#" and the hex of their DER. For a name encoded C, ST, L, O, CN (as
// certtool and Go write them) that is "C=GB,ST=London,...,CN=host".
// An empty name formats as "", where GnuTLS returns an error.
func FormatDN(der []byte) (string, error) {
	var rdns []dnAttributeSET
	rest, err := asn1.Unmarshal(der, &rdns)
	if err != nil {
		return "", fmt.Errorf("parse distinguished name: %w", err)
	}
	if len(rest) != 0 {
		return "", errors.New("parse distinguished name: trailing data")
	}

	var b strings.Builder
	for i, rdn := range rdns {
		for j, attr := range rdn {
			if i > 0 && j == 0 {
				b.WriteByte(',')
			} else if j > 0 {
				b.WriteByte('+')
			}
			value, err := formatDNValue(attr)
			if err != nil {
				return "", err
			}
			known, ok := dnAttributeNames[attr.Type.String()]
			if ok {
				b.WriteString(known.name)
			} else {
				b.WriteString(attr.Type.String())
			}
			b.WriteByte('=')
			b.WriteString(value)
		}
	}
	return b.String(), nil
}

// formatDNValue decodes and escapes one attribute value, or returns
// "#" and the hex of its DER when GnuTLS would not decode it.
func formatDNValue(attr dnAttribute) (string, error) {
	known, ok := dnAttributeNames[attr.Type.String()]
	if !ok {
		return hexDER(attr.Value), nil
	}

	v := attr.Value
	if v.Class != asn1.ClassUniversal || v.IsCompound {
		return hexDER(v), nil
	}
	var s string
	var decoded bool
	if known.directory {
		s, decoded = decodeDirectoryString(v)
	} else if v.Tag == known.tag {
		s, decoded = string(v.Bytes), true
	}
	if !decoded {
		return hexDER(v), nil
	}
	if strings.IndexByte(s, 0) >= 0 {
		return "", errDNEmbeddedNull
	}
	return escapeDNValue(s), nil
}

// decodeDirectoryString returns the text of a DirectoryString the way
// GnuTLS prints it: a TeletexString only if it is printable ASCII, a
// BMPString converted to UTF-8, a UniversalString as the hex of its
// content bytes.
func decodeDirectoryString(v asn1.RawValue) (string, bool) {
	switch v.Tag {
	case asn1.TagPrintableString, asn1.TagUTF8String:
		return string(v.Bytes), true
	case tagTeletexString:
		if !isPrintableASCII(v.Bytes) {
			return "#" + hex.EncodeToString(v.Bytes), true
		}
		return string(v.Bytes), true
	case tagBMPString:
		s, ok := decodeBMPString(v.Bytes)
		if !ok {
			return "#" + hex.EncodeToString(v.Bytes), true
		}
		return s, true
	case tagUniversalString:
		return "#" + hex.EncodeToString(v.Bytes), true
	}
	return "", false
}

func isPrintableASCII(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

func decodeBMPString(b []byte) (string, bool) {
	if len(b)%2 != 0 {
		return "", false
	}
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = uint16(b[2*i])<<8 | uint16(b[2*i+1])
	}
	s := string(utf16.Decode(u))
	return s, utf8.ValidString(s)
}

func hexDER(v asn1.RawValue) string {
	return "#" + hex.EncodeToString(v.FullBytes)
}

// escapeDNValue escapes as RFC 4514 section 2.4 requires: the special
// characters anywhere, "#" and space at the start, space at the end.
func escapeDNValue(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case strings.IndexByte(`,+"\<>;`, c) >= 0,
			i == 0 && (c == '#' || c == ' '),
			i == len(s)-1 && c == ' ':
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	return b.String()
}
