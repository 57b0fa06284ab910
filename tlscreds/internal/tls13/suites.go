// Package tls13 implements the part of TLS 1.3 (RFC 8446) that an external
// pre-shared key session needs: psk_dhe_ke handshakes for both roles, the key
// schedule, and the record layer. It has no certificates, session tickets,
// 0-RTT data or older protocol versions.
package tls13

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"crypto/sha512"
	"hash"
	"runtime"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/sys/cpu"
)

// Cipher suite code points (RFC 8446 appendix B.4).
const (
	TLSAES128GCMSHA256        uint16 = 0x1301
	TLSAES256GCMSHA384        uint16 = 0x1302
	TLSChaCha20Poly1305SHA256 uint16 = 0x1303
)

// Suite is a TLS 1.3 cipher suite: an AEAD and the hash of the key schedule.
type Suite struct {
	ID      uint16
	Name    string
	KeyLen  int
	Hash    func() hash.Hash
	HashLen int
	NewAEAD func(key []byte) (cipher.AEAD, error)
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

var suites = []*Suite{
	{TLSAES128GCMSHA256, "TLS_AES_128_GCM_SHA256", 16, sha256.New, sha256.Size, newGCM},
	{TLSChaCha20Poly1305SHA256, "TLS_CHACHA20_POLY1305_SHA256", chacha20poly1305.KeySize, sha256.New, sha256.Size, chacha20poly1305.New},
	{TLSAES256GCMSHA384, "TLS_AES_256_GCM_SHA384", 32, sha512.New384, sha512.Size384, newGCM},
}

// SuiteByID returns the suite with code point id, or nil if this package
// does not implement it.
func SuiteByID(id uint16) *Suite {
	for _, s := range suites {
		if s.ID == id {
			return s
		}
	}
	return nil
}

func isAESGCM(id uint16) bool {
	return id == TLSAES128GCMSHA256 || id == TLSAES256GCMSHA384
}

// hasAESHardware reports whether AES-GCM runs in hardware here, so that it
// is faster than ChaCha20-Poly1305.
var hasAESHardware = func() bool {
	switch runtime.GOARCH {
	case "amd64", "386":
		return cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ
	case "arm64":
		return cpu.ARM64.HasAES && cpu.ARM64.HasPMULL
	case "s390x":
		return cpu.S390X.HasAES && cpu.S390X.HasAESGCM
	case "ppc64", "ppc64le":
		return true
	}
	return false
}()

// defaultSuiteOrder lists the suites in local preference order: AES-GCM
// first where the CPU accelerates it, ChaCha20-Poly1305 first elsewhere.
func defaultSuiteOrder() []uint16 {
	if hasAESHardware {
		return []uint16{TLSAES128GCMSHA256, TLSChaCha20Poly1305SHA256, TLSAES256GCMSHA384}
	}
	return []uint16{TLSChaCha20Poly1305SHA256, TLSAES128GCMSHA256, TLSAES256GCMSHA384}
}

// Named group code points (RFC 8446 section 4.2.7).
const (
	GroupSecp256r1 uint16 = 23
	GroupSecp384r1 uint16 = 24
	GroupX25519    uint16 = 29
)

// DefaultGroups is the group preference order of both roles.
var DefaultGroups = []uint16{GroupX25519, GroupSecp256r1, GroupSecp384r1}

// GroupName returns the IANA name of a named group.
func GroupName(g uint16) string {
	switch g {
	case GroupX25519:
		return "x25519"
	case GroupSecp256r1:
		return "secp256r1"
	case GroupSecp384r1:
		return "secp384r1"
	}
	return "unknown"
}
