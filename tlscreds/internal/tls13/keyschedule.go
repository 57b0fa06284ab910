package tls13

import (
	"crypto/hkdf"
	"crypto/hmac"
	"hash"
)

// Binder labels (RFC 8446 section 7.1): a PSK provisioned outside TLS
// uses "ext binder", one from a session ticket "res binder".
const (
	labelExternalBinder   = "ext binder"
	labelResumptionBinder = "res binder"
)

// expandLabel is HKDF-Expand-Label from RFC 8446 section 7.1.
func expandLabel(h func() hash.Hash, secret []byte, label string, context []byte, length int) []byte {
	const prefix = "tls13 "
	info := make([]byte, 0, 2+1+len(prefix)+len(label)+1+len(context))
	info = append(info, byte(length>>8), byte(length))
	info = append(info, byte(len(prefix)+len(label)))
	info = append(info, prefix...)
	info = append(info, label...)
	info = append(info, byte(len(context)))
	info = append(info, context...)
	out, err := hkdf.Expand(h, secret, string(info), length)
	if err != nil {
		// Expand fails only for lengths past 255 hash blocks. Callers
		// here request one hash length or a key or IV length.
		panic("tls13: HKDF-Expand-Label: " + err.Error())
	}
	return out
}

// deriveSecret is Derive-Secret from RFC 8446 section 7.1, taking the
// transcript hash rather than the messages.
func deriveSecret(h func() hash.Hash, secret []byte, label string, transcriptHash []byte) []byte {
	return expandLabel(h, secret, label, transcriptHash, h().Size())
}

func extract(h func() hash.Hash, ikm, salt []byte) []byte {
	if ikm == nil {
		ikm = make([]byte, h().Size())
	}
	out, err := hkdf.Extract(h, ikm, salt)
	if err != nil {
		panic("tls13: HKDF-Extract: " + err.Error())
	}
	return out
}

func emptyHash(h func() hash.Hash) []byte {
	return h().Sum(nil)
}

// earlySecret is the first stage of the key schedule: HKDF-Extract of the
// PSK with a zero salt.
func earlySecret(h func() hash.Hash, psk []byte) []byte {
	return extract(h, psk, nil)
}

// binderKey derives the key that PSK binders are computed with; external
// selects "ext binder" over "res binder".
func binderKey(h func() hash.Hash, early []byte, external bool) []byte {
	label := labelResumptionBinder
	if external {
		label = labelExternalBinder
	}
	return deriveSecret(h, early, label, emptyHash(h))
}

// handshakeSecret mixes the (EC)DHE shared secret into the schedule.
func handshakeSecret(h func() hash.Hash, early, sharedSecret []byte) []byte {
	salt := deriveSecret(h, early, "derived", emptyHash(h))
	return extract(h, sharedSecret, salt)
}

// masterSecret is the last extract stage, with no further input keying
// material.
func masterSecret(h func() hash.Hash, handshake []byte) []byte {
	salt := deriveSecret(h, handshake, "derived", emptyHash(h))
	return extract(h, nil, salt)
}

// finishedMAC computes the verify_data of a Finished message, or a PSK
// binder, from its base key and a transcript hash (RFC 8446 section 4.4.4).
func finishedMAC(h func() hash.Hash, baseKey, transcriptHash []byte) []byte {
	key := expandLabel(h, baseKey, "finished", nil, h().Size())
	mac := hmac.New(h, key)
	mac.Write(transcriptHash)
	return mac.Sum(nil)
}

// trafficKeys derives the AEAD key and the IV of one direction from its
// traffic secret (RFC 8446 section 7.3).
func trafficKeys(s *Suite, secret []byte) (key, iv []byte) {
	key = expandLabel(s.Hash, secret, "key", nil, s.KeyLen)
	iv = expandLabel(s.Hash, secret, "iv", nil, nonceLen)
	return key, iv
}

// nextTrafficSecret is the KeyUpdate step application_traffic_secret_N+1
// (RFC 8446 section 7.2).
func nextTrafficSecret(s *Suite, secret []byte) []byte {
	return expandLabel(s.Hash, secret, "traffic upd", nil, s.HashLen)
}

// messageHash builds the synthetic message_hash message that replaces
// ClientHello1 in the transcript after a HelloRetryRequest (RFC 8446
// section 4.4.1).
func messageHash(h func() hash.Hash, clientHello1 []byte) []byte {
	d := h()
	d.Write(clientHello1)
	sum := d.Sum(nil)
	msg := []byte{typeMessageHash, 0, 0, byte(len(sum))}
	return append(msg, sum...)
}
