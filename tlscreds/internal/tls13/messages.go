package tls13

import (
	"bytes"
	"crypto/sha256"

	"golang.org/x/crypto/cryptobyte"
)

// Handshake message types (RFC 8446 section 4).
const (
	typeClientHello         uint8 = 1
	typeServerHello         uint8 = 2
	typeNewSessionTicket    uint8 = 4
	typeEndOfEarlyData      uint8 = 5
	typeEncryptedExtensions uint8 = 8
	typeCertificate         uint8 = 11
	typeCertificateRequest  uint8 = 13
	typeCertificateVerify   uint8 = 15
	typeFinished            uint8 = 20
	typeKeyUpdate           uint8 = 24
	typeMessageHash         uint8 = 254
)

// Extension code points (RFC 8446 section 4.2).
const (
	extServerName          uint16 = 0
	extSupportedGroups     uint16 = 10
	extSignatureAlgorithms uint16 = 13
	extPreSharedKey        uint16 = 41
	extEarlyData           uint16 = 42
	extSupportedVersions   uint16 = 43
	extCookie              uint16 = 44
	extPSKKeyExchangeModes uint16 = 45
	extKeyShare            uint16 = 51
)

const (
	versionTLS12 uint16 = 0x0303
	versionTLS13 uint16 = 0x0304

	// pskModeDHE is psk_dhe_ke: PSK with (EC)DHE key establishment.
	pskModeDHE uint8 = 1

	// maxHandshakeMessage bounds one handshake message. A PSK ClientHello
	// is a few hundred bytes; the limit only stops a peer from making this
	// side buffer megabytes.
	maxHandshakeMessage = 64 << 10
)

// helloRetryRequestRandom is the ServerHello.random value that marks a
// HelloRetryRequest: SHA-256 of "HelloRetryRequest" (RFC 8446 section 4.1.3).
var helloRetryRequestRandom = sha256.Sum256([]byte("HelloRetryRequest"))

// keyShare is one KeyShareEntry.
type keyShare struct {
	group uint16
	data  []byte
}

// pskIdentity is one PskIdentity of the pre_shared_key extension.
type pskIdentity struct {
	identity []byte
	age      uint32
}

// clientHello is a parsed ClientHello. raw is the whole message with its
// four-byte header, as it enters the transcript.
type clientHello struct {
	raw               []byte
	random            []byte
	sessionID         []byte
	cipherSuites      []uint16
	compression       []byte
	supportedVersions []uint16
	supportedGroups   []uint16
	keyShares         []keyShare
	hasKeyShare       bool
	pskModes          []uint8
	earlyData         bool
	cookie            []byte
	hasPreSharedKey   bool
	pskIdentities     []pskIdentity
	pskBinders        [][]byte
	// bindersLen is the length of the binders vector with its length
	// prefix: raw[:len(raw)-bindersLen] is the partial ClientHello that
	// binders are computed over (RFC 8446 section 4.2.11.2).
	bindersLen int
}

// truncated returns the ClientHello up to, not including, the binders.
func (ch *clientHello) truncated() []byte {
	return ch.raw[:len(ch.raw)-ch.bindersLen]
}

// parseClientHello parses a ClientHello message including its header.
func parseClientHello(msg []byte) (*clientHello, error) {
	ch := &clientHello{raw: msg}
	s := cryptobyte.String(msg)
	var msgType uint8
	var body cryptobyte.String
	if !s.ReadUint8(&msgType) || msgType != typeClientHello || !s.ReadUint24LengthPrefixed(&body) || !s.Empty() {
		return nil, alertf(AlertDecodeError, "malformed ClientHello header")
	}

	var legacyVersion uint16
	var suites, exts cryptobyte.String
	if !body.ReadUint16(&legacyVersion) ||
		!body.ReadBytes(&ch.random, 32) ||
		!body.ReadUint8LengthPrefixed((*cryptobyte.String)(&ch.sessionID)) ||
		!body.ReadUint16LengthPrefixed(&suites) ||
		!body.ReadUint8LengthPrefixed((*cryptobyte.String)(&ch.compression)) {
		return nil, alertf(AlertDecodeError, "malformed ClientHello")
	}
	if len(ch.sessionID) > 32 {
		return nil, alertf(AlertIllegalParameter, "ClientHello legacy_session_id of %d bytes, max 32", len(ch.sessionID))
	}
	if len(suites)%2 != 0 || len(suites) == 0 {
		return nil, alertf(AlertDecodeError, "malformed ClientHello cipher_suites")
	}
	for !suites.Empty() {
		var id uint16
		suites.ReadUint16(&id)
		ch.cipherSuites = append(ch.cipherSuites, id)
	}
	if body.Empty() {
		// A ClientHello without extensions cannot offer TLS 1.3.
		return ch, nil
	}
	if !body.ReadUint16LengthPrefixed(&exts) || !body.Empty() {
		return nil, alertf(AlertDecodeError, "malformed ClientHello extensions")
	}

	seen := map[uint16]bool{}
	for !exts.Empty() {
		var ext uint16
		var data cryptobyte.String
		if !exts.ReadUint16(&ext) || !exts.ReadUint16LengthPrefixed(&data) {
			return nil, alertf(AlertDecodeError, "malformed ClientHello extension")
		}
		if seen[ext] {
			return nil, alertf(AlertIllegalParameter, "ClientHello repeats extension %d", ext)
		}
		seen[ext] = true
		if ch.hasPreSharedKey {
			return nil, alertf(AlertIllegalParameter, "ClientHello pre_shared_key is not the last extension")
		}
		if err := ch.parseExtension(ext, data, len(exts)); err != nil {
			return nil, err
		}
	}
	return ch, nil
}

// parseExtension parses one ClientHello extension; rest is the number of
// extension bytes after it.
func (ch *clientHello) parseExtension(ext uint16, data cryptobyte.String, rest int) error {
	ok := true
	switch ext {
	case extSupportedVersions:
		var list cryptobyte.String
		ok = data.ReadUint8LengthPrefixed(&list) && len(list) >= 2 && len(list)%2 == 0
		for ok && !list.Empty() {
			var v uint16
			list.ReadUint16(&v)
			ch.supportedVersions = append(ch.supportedVersions, v)
		}
	case extSupportedGroups:
		var list cryptobyte.String
		ok = data.ReadUint16LengthPrefixed(&list) && len(list) >= 2 && len(list)%2 == 0
		for ok && !list.Empty() {
			var g uint16
			list.ReadUint16(&g)
			ch.supportedGroups = append(ch.supportedGroups, g)
		}
	case extKeyShare:
		ch.hasKeyShare = true
		var list cryptobyte.String
		ok = data.ReadUint16LengthPrefixed(&list)
		for ok && !list.Empty() {
			var ks keyShare
			ok = list.ReadUint16(&ks.group) && list.ReadUint16LengthPrefixed((*cryptobyte.String)(&ks.data)) && len(ks.data) > 0
			ch.keyShares = append(ch.keyShares, ks)
		}
	case extPSKKeyExchangeModes:
		ok = data.ReadUint8LengthPrefixed((*cryptobyte.String)(&ch.pskModes)) && len(ch.pskModes) > 0
	case extEarlyData:
		ch.earlyData = true
	case extCookie:
		ok = data.ReadUint16LengthPrefixed((*cryptobyte.String)(&ch.cookie)) && len(ch.cookie) > 0
	case extPreSharedKey:
		ch.hasPreSharedKey = true
		if err := ch.parsePreSharedKey(&data, rest); err != nil {
			return err
		}
	default:
		// Extensions this side does not implement are ignored (RFC 8446
		// section 4.2).
		return nil
	}
	if !ok || !data.Empty() {
		return alertf(AlertDecodeError, "malformed ClientHello extension %d", ext)
	}
	return nil
}

func (ch *clientHello) parsePreSharedKey(data *cryptobyte.String, rest int) error {
	var identities, binders cryptobyte.String
	if !data.ReadUint16LengthPrefixed(&identities) || identities.Empty() {
		return alertf(AlertDecodeError, "malformed pre_shared_key identities")
	}
	for !identities.Empty() {
		var id pskIdentity
		if !identities.ReadUint16LengthPrefixed((*cryptobyte.String)(&id.identity)) || len(id.identity) == 0 ||
			!identities.ReadUint32(&id.age) {
			return alertf(AlertDecodeError, "malformed pre_shared_key identity")
		}
		ch.pskIdentities = append(ch.pskIdentities, id)
	}
	ch.bindersLen = len(*data) + rest
	if !data.ReadUint16LengthPrefixed(&binders) || binders.Empty() {
		return alertf(AlertDecodeError, "malformed pre_shared_key binders")
	}
	for !binders.Empty() {
		var b []byte
		if !binders.ReadUint8LengthPrefixed((*cryptobyte.String)(&b)) || len(b) < 32 {
			return alertf(AlertDecodeError, "malformed pre_shared_key binder")
		}
		ch.pskBinders = append(ch.pskBinders, b)
	}
	if len(ch.pskBinders) != len(ch.pskIdentities) {
		return alertf(AlertIllegalParameter, "pre_shared_key has %d identities but %d binders",
			len(ch.pskIdentities), len(ch.pskBinders))
	}
	return nil
}

// clientHelloParams are the fields of a ClientHello that a client chooses.
type clientHelloParams struct {
	random       []byte
	sessionID    []byte
	cipherSuites []uint16
	groups       []uint16
	keyShare     keyShare
	cookie       []byte
	identity     []byte
	binderLen    int
	// pskModes and earlyData exist for tests that send what this client
	// never does; nil pskModes means psk_dhe_ke only.
	pskModes  []uint8
	earlyData bool
}

// marshalClientHello builds a ClientHello whose single PSK binder is
// zeros. The caller computes the binder over the partial message and
// writes it into the last binderLen bytes.
func marshalClientHello(p *clientHelloParams) []byte {
	var b cryptobyte.Builder
	b.AddUint8(typeClientHello)
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint16(versionTLS12)
		b.AddBytes(p.random)
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(p.sessionID) })
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			for _, s := range p.cipherSuites {
				b.AddUint16(s)
			}
		})
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint8(0) })
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { addClientExtensions(b, p) })
	})
	return b.BytesOrPanic()
}

func addClientExtensions(b *cryptobyte.Builder, p *clientHelloParams) {
	addExtension(b, extSupportedVersions, func(b *cryptobyte.Builder) {
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint16(versionTLS13) })
	})
	addExtension(b, extSupportedGroups, func(b *cryptobyte.Builder) {
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			for _, g := range p.groups {
				b.AddUint16(g)
			}
		})
	})
	// Certificates are never used, but some servers check that the
	// extension is present before they look at the PSK.
	addExtension(b, extSignatureAlgorithms, func(b *cryptobyte.Builder) {
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			for _, alg := range []uint16{0x0804, 0x0403, 0x0807, 0x0805, 0x0503} {
				b.AddUint16(alg)
			}
		})
	})
	addExtension(b, extKeyShare, func(b *cryptobyte.Builder) {
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			b.AddUint16(p.keyShare.group)
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(p.keyShare.data) })
		})
	})
	if len(p.cookie) > 0 {
		addExtension(b, extCookie, func(b *cryptobyte.Builder) {
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(p.cookie) })
		})
	}
	modes := p.pskModes
	if modes == nil {
		modes = []uint8{pskModeDHE}
	}
	addExtension(b, extPSKKeyExchangeModes, func(b *cryptobyte.Builder) {
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(modes) })
	})
	if p.earlyData {
		addExtension(b, extEarlyData, func(b *cryptobyte.Builder) {})
	}
	// pre_shared_key must be the last extension (RFC 8446 section 4.2.11).
	addExtension(b, extPreSharedKey, func(b *cryptobyte.Builder) {
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(p.identity) })
			// An external PSK has no ticket age; it is sent as 0.
			b.AddUint32(0)
		})
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(make([]byte, p.binderLen)) })
		})
	})
}

func addExtension(b *cryptobyte.Builder, ext uint16, body func(*cryptobyte.Builder)) {
	b.AddUint16(ext)
	b.AddUint16LengthPrefixed(body)
}

// serverHello is a ServerHello or HelloRetryRequest.
type serverHello struct {
	raw              []byte
	random           []byte
	sessionID        []byte
	cipherSuite      uint16
	compression      uint8
	supportedVersion uint16
	keyShare         keyShare // HelloRetryRequest: group only
	hasKeyShare      bool
	hasPreSharedKey  bool
	selectedIdentity uint16
	cookie           []byte
}

func (sh *serverHello) isHelloRetryRequest() bool {
	return bytes.Equal(sh.random, helloRetryRequestRandom[:])
}

// parseServerHello parses a ServerHello or HelloRetryRequest including its
// header.
func parseServerHello(msg []byte) (*serverHello, error) {
	sh := &serverHello{raw: msg}
	s := cryptobyte.String(msg)
	var msgType uint8
	var body, exts cryptobyte.String
	if !s.ReadUint8(&msgType) || msgType != typeServerHello || !s.ReadUint24LengthPrefixed(&body) || !s.Empty() {
		return nil, alertf(AlertDecodeError, "malformed ServerHello header")
	}
	var legacyVersion uint16
	if !body.ReadUint16(&legacyVersion) ||
		!body.ReadBytes(&sh.random, 32) ||
		!body.ReadUint8LengthPrefixed((*cryptobyte.String)(&sh.sessionID)) ||
		!body.ReadUint16(&sh.cipherSuite) ||
		!body.ReadUint8(&sh.compression) {
		return nil, alertf(AlertDecodeError, "malformed ServerHello")
	}
	if body.Empty() {
		// Without extensions there is no supported_versions, so this is
		// TLS 1.2 or older.
		return sh, nil
	}
	if !body.ReadUint16LengthPrefixed(&exts) || !body.Empty() {
		return nil, alertf(AlertDecodeError, "malformed ServerHello extensions")
	}
	hrr := sh.isHelloRetryRequest()
	seen := map[uint16]bool{}
	for !exts.Empty() {
		var ext uint16
		var data cryptobyte.String
		if !exts.ReadUint16(&ext) || !exts.ReadUint16LengthPrefixed(&data) {
			return nil, alertf(AlertDecodeError, "malformed ServerHello extension")
		}
		if seen[ext] {
			return nil, alertf(AlertIllegalParameter, "ServerHello repeats extension %d", ext)
		}
		seen[ext] = true
		ok := true
		switch {
		case ext == extSupportedVersions:
			ok = data.ReadUint16(&sh.supportedVersion)
		case ext == extKeyShare && hrr:
			sh.hasKeyShare = true
			ok = data.ReadUint16(&sh.keyShare.group)
		case ext == extKeyShare:
			sh.hasKeyShare = true
			ok = data.ReadUint16(&sh.keyShare.group) &&
				data.ReadUint16LengthPrefixed((*cryptobyte.String)(&sh.keyShare.data)) && len(sh.keyShare.data) > 0
		case ext == extPreSharedKey && !hrr:
			sh.hasPreSharedKey = true
			ok = data.ReadUint16(&sh.selectedIdentity)
		case ext == extCookie && hrr:
			ok = data.ReadUint16LengthPrefixed((*cryptobyte.String)(&sh.cookie)) && len(sh.cookie) > 0
		default:
			// The client offered no other extension that a ServerHello
			// may carry in reply (RFC 8446 section 4.2).
			return nil, alertf(AlertUnsupportedExtension, "ServerHello carries unexpected extension %d", ext)
		}
		if !ok || !data.Empty() {
			return nil, alertf(AlertDecodeError, "malformed ServerHello extension %d", ext)
		}
	}
	return sh, nil
}

// marshalServerHello builds a ServerHello, or a HelloRetryRequest when
// sh.random is helloRetryRequestRandom.
func marshalServerHello(sh *serverHello) []byte {
	hrr := sh.isHelloRetryRequest()
	var b cryptobyte.Builder
	b.AddUint8(typeServerHello)
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint16(versionTLS12)
		b.AddBytes(sh.random)
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(sh.sessionID) })
		b.AddUint16(sh.cipherSuite)
		b.AddUint8(0)
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			addExtension(b, extSupportedVersions, func(b *cryptobyte.Builder) { b.AddUint16(versionTLS13) })
			addExtension(b, extKeyShare, func(b *cryptobyte.Builder) {
				b.AddUint16(sh.keyShare.group)
				if !hrr {
					b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(sh.keyShare.data) })
				}
			})
			if !hrr {
				addExtension(b, extPreSharedKey, func(b *cryptobyte.Builder) { b.AddUint16(sh.selectedIdentity) })
			}
		})
	})
	return b.BytesOrPanic()
}

// parseEncryptedExtensions checks an EncryptedExtensions message from the
// server. The client offered nothing that needs a reply there, so any
// extension is ignored except those that must never appear here.
func parseEncryptedExtensions(msg []byte) error {
	s := cryptobyte.String(msg[4:])
	var exts cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&exts) || !s.Empty() {
		return alertf(AlertDecodeError, "malformed EncryptedExtensions")
	}
	for !exts.Empty() {
		var ext uint16
		var data cryptobyte.String
		if !exts.ReadUint16(&ext) || !exts.ReadUint16LengthPrefixed(&data) {
			return alertf(AlertDecodeError, "malformed EncryptedExtensions")
		}
		switch ext {
		case extEarlyData:
			return alertf(AlertUnsupportedExtension, "server accepted early data the client did not offer")
		case extPreSharedKey, extKeyShare, extSupportedVersions, extPSKKeyExchangeModes, extCookie, extSignatureAlgorithms:
			return alertf(AlertIllegalParameter, "EncryptedExtensions carries extension %d", ext)
		}
	}
	return nil
}

// marshalHandshake frames a handshake message body with its header.
func marshalHandshake(msgType uint8, body []byte) []byte {
	msg := make([]byte, 4, 4+len(body))
	msg[0] = msgType
	msg[1], msg[2], msg[3] = byte(len(body)>>16), byte(len(body)>>8), byte(len(body))
	return append(msg, body...)
}
