package tls13

import (
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
)

// Record content types (RFC 8446 section 5.1).
const (
	recordTypeChangeCipherSpec uint8 = 20
	recordTypeAlert            uint8 = 21
	recordTypeHandshake        uint8 = 22
	recordTypeApplicationData  uint8 = 23
)

const (
	recordHeaderLen = 5
	// maxPlaintext is the largest record payload, 2^14 bytes.
	maxPlaintext = 1 << 14
	// maxCiphertext is the largest protected record payload: 2^14 plus
	// the 256 bytes RFC 8446 section 5.2 allows for the content type,
	// padding and the AEAD tag.
	maxCiphertext = maxPlaintext + 256
	maxRecord     = recordHeaderLen + maxCiphertext
	nonceLen      = 12

	// readBufferSize holds several full records, so that one read system
	// call can bring in more than one.
	readBufferSize = 4 * maxRecord
	// writeBatchRecords full records are sealed into one buffer and
	// written with one system call.
	writeBatchRecords = 8
	// sealOverhead is the largest AEAD tag here (16 bytes for AES-GCM and
	// ChaCha20-Poly1305) plus the inner content type byte.
	sealOverhead = 16 + 1

	// keyUpdateRecords is how many records one key protects before the
	// writer rotates it with a KeyUpdate. RFC 8446 section 5.5 allows
	// 2^24.5 full-size records for AES-GCM; ChaCha20-Poly1305 allows more,
	// and one limit keeps the code simple.
	keyUpdateRecords = 1 << 24
)

// errSequenceExhausted ends a connection whose 64-bit record sequence
// number would wrap (RFC 8446 section 5.3).
var errSequenceExhausted = errors.New("tls: record sequence number exhausted")

// cipherState protects one direction with one traffic secret.
type cipherState struct {
	suite  *Suite
	secret []byte
	aead   cipher.AEAD
	iv     [nonceLen]byte
	nonce  [nonceLen]byte
	seq    uint64
}

func newCipherState(s *Suite, secret []byte) (*cipherState, error) {
	key, iv := trafficKeys(s, secret)
	aead, err := s.NewAEAD(key)
	if err != nil {
		return nil, fmt.Errorf("tls: create %s cipher: %w", s.Name, err)
	}
	cs := &cipherState{suite: s, secret: secret, aead: aead}
	copy(cs.iv[:], iv)
	return cs, nil
}

// next returns the cipher state after a KeyUpdate.
func (cs *cipherState) next() (*cipherState, error) {
	return newCipherState(cs.suite, nextTrafficSecret(cs.suite, cs.secret))
}

// currentNonce is the per-record nonce: the IV XORed with the sequence
// number (RFC 8446 section 5.3). The caller advances seq on success.
func (cs *cipherState) currentNonce() ([]byte, error) {
	if cs.seq == ^uint64(0) {
		return nil, errSequenceExhausted
	}
	cs.nonce = cs.iv
	var seq [8]byte
	binary.BigEndian.PutUint64(seq[:], cs.seq)
	for i, b := range seq {
		cs.nonce[nonceLen-8+i] ^= b
	}
	return cs.nonce[:], nil
}

// recordReader reads records from the connection into one reused buffer
// and decrypts them in place.
type recordReader struct {
	conn   net.Conn
	buf    []byte
	r, w   int // buf[r:w] is read but not yet processed
	cipher *cipherState
	// plaintextAllowed accepts unprotected alert and change_cipher_spec
	// records after keys are in use, which happens only during the
	// handshake, when the peer may not have derived keys yet.
	plaintextAllowed bool
	// earlyDataBudget is how many bytes of records that fail to decrypt
	// are skipped as refused 0-RTT data (RFC 8446 section 4.2.10).
	earlyDataBudget int
}

func newRecordReader(conn net.Conn) *recordReader {
	return &recordReader{conn: conn, buf: make([]byte, readBufferSize), plaintextAllowed: true}
}

// fill reads until at least n unprocessed bytes are buffered.
func (rr *recordReader) fill(n int) error {
	if rr.r+n > len(rr.buf) {
		rr.w = copy(rr.buf, rr.buf[rr.r:rr.w])
		rr.r = 0
	}
	for rr.w-rr.r < n {
		m, err := rr.conn.Read(rr.buf[rr.w:])
		rr.w += m
		if rr.w-rr.r >= n {
			return nil
		}
		if err == io.EOF {
			if rr.w == rr.r {
				return io.EOF
			}
			return fmt.Errorf("tls: connection closed inside a record: %w", io.ErrUnexpectedEOF)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// readRecord returns the content type and payload of the next record. The
// payload is valid until the next call. Records that carry nothing
// (change_cipher_spec, skipped early data) are returned too; the caller
// decides what is allowed when.
func (rr *recordReader) readRecord() (uint8, []byte, error) {
	for {
		if err := rr.fill(recordHeaderLen); err != nil {
			return 0, nil, err
		}
		hdr := rr.buf[rr.r : rr.r+recordHeaderLen]
		outerType := hdr[0]
		length := int(binary.BigEndian.Uint16(hdr[3:]))
		protected := rr.cipher != nil && outerType == recordTypeApplicationData
		if err := rr.checkHeader(outerType, length, protected); err != nil {
			return 0, nil, err
		}
		if err := rr.fill(recordHeaderLen + length); err != nil {
			return 0, nil, err
		}
		hdr = rr.buf[rr.r : rr.r+recordHeaderLen]
		payload := rr.buf[rr.r+recordHeaderLen : rr.r+recordHeaderLen+length]
		rr.r += recordHeaderLen + length
		if !protected {
			return outerType, payload, nil
		}

		typ, data, skip, err := rr.open(hdr, payload)
		if err != nil {
			return 0, nil, err
		}
		if !skip {
			return typ, data, nil
		}
	}
}

func (rr *recordReader) checkHeader(outerType uint8, length int, protected bool) error {
	switch {
	case protected:
		if length > maxCiphertext {
			return alertf(AlertRecordOverflow, "received a %d-byte protected record, max %d", length, maxCiphertext)
		}
		return nil
	case rr.cipher != nil && (!rr.plaintextAllowed || outerType == recordTypeHandshake):
		return alertf(AlertUnexpectedMessage, "received an unprotected record of type %d", outerType)
	case rr.cipher == nil && outerType == recordTypeApplicationData:
		return alertf(AlertUnexpectedMessage, "received application data before the handshake")
	case outerType != recordTypeHandshake && outerType != recordTypeAlert && outerType != recordTypeChangeCipherSpec:
		return alertf(AlertUnexpectedMessage, "received a record of unknown type %d", outerType)
	case length > maxPlaintext:
		return alertf(AlertRecordOverflow, "received a %d-byte record, max %d", length, maxPlaintext)
	}
	return nil
}

// open decrypts a protected record in place and strips its padding. skip
// reports a record dropped as refused early data.
func (rr *recordReader) open(hdr, payload []byte) (typ uint8, data []byte, skip bool, err error) {
	nonce, err := rr.cipher.currentNonce()
	if err != nil {
		return 0, nil, false, err
	}
	plain, err := rr.cipher.aead.Open(payload[:0], nonce, payload, hdr)
	if err != nil {
		if rr.earlyDataBudget >= len(payload) {
			rr.earlyDataBudget -= len(payload)
			return 0, nil, true, nil
		}
		return 0, nil, false, alertf(AlertBadRecordMAC, "record failed to decrypt")
	}
	rr.cipher.seq++
	rr.earlyDataBudget = 0

	// The inner content type is the last non-zero byte; zeros after it
	// are padding (RFC 8446 section 5.4).
	i := len(plain) - 1
	for i >= 0 && plain[i] == 0 {
		i--
	}
	if i < 0 {
		return 0, nil, false, alertf(AlertUnexpectedMessage, "protected record has no content type")
	}
	if i > maxPlaintext {
		return 0, nil, false, alertf(AlertRecordOverflow, "received a record of %d plaintext bytes, max %d", i, maxPlaintext)
	}
	return plain[i], plain[:i], false, nil
}

// recordWriter seals records into one reused buffer and writes a batch of
// them with a single system call.
type recordWriter struct {
	conn   net.Conn
	buf    []byte
	cipher *cipherState
}

func newRecordWriter(conn net.Conn) *recordWriter {
	size := writeBatchRecords * (recordHeaderLen + maxPlaintext + sealOverhead)
	return &recordWriter{conn: conn, buf: make([]byte, 0, size)}
}

// appendRecord adds one record of at most maxPlaintext bytes to the batch,
// flushing the batch first when it is full.
func (w *recordWriter) appendRecord(typ uint8, data []byte) error {
	need := recordHeaderLen + len(data) + sealOverhead
	if len(w.buf)+need > cap(w.buf) {
		if err := w.flush(); err != nil {
			return err
		}
	}
	off := len(w.buf)
	if w.cipher == nil {
		w.buf = append(w.buf, typ, 3, 3, byte(len(data)>>8), byte(len(data)))
		w.buf = append(w.buf, data...)
		return nil
	}

	nonce, err := w.cipher.currentNonce()
	if err != nil {
		return err
	}
	sealedLen := len(data) + 1 + w.cipher.aead.Overhead()
	w.buf = append(w.buf, recordTypeApplicationData, 3, 3, byte(sealedLen>>8), byte(sealedLen))
	w.buf = append(w.buf, data...)
	w.buf = append(w.buf, typ)
	hdr := w.buf[off : off+recordHeaderLen]
	inner := w.buf[off+recordHeaderLen:]
	sealed := w.cipher.aead.Seal(inner[:0], nonce, inner, hdr)
	w.buf = w.buf[:off+recordHeaderLen+len(sealed)]
	w.cipher.seq++
	return nil
}

// appendRecords splits data into full records.
func (w *recordWriter) appendRecords(typ uint8, data []byte) error {
	for len(data) > 0 {
		n := min(len(data), maxPlaintext)
		if err := w.appendRecord(typ, data[:n]); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

func (w *recordWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	_, err := w.conn.Write(w.buf)
	w.buf = w.buf[:0]
	return err
}
