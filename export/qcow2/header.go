package qcow2

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// Header layout and limits from the qcow2 specification
// (docs/interop/qcow2.txt in the QEMU source tree).
const (
	magic = 0x514649fb // "QFI\xfb"

	headerV2Length    = 72
	headerV3MinLength = 104

	// Byte offsets of the header fields gonbd rewrites.
	offRefcountTable  = 48 // refcount_table_offset, then refcount_table_clusters at 56
	offIncompatible   = 72
	offAutoclear      = 88
	offCompressionTyp = 104

	minClusterBits = 9  // 512 bytes
	maxClusterBits = 21 // 2 MiB, QEMU's implementation limit

	// QEMU's implementation limits, which also bound what an untrusted
	// header can make gonbd allocate.
	maxL1Bytes            = 32 << 20
	maxRefcountTableBytes = 8 << 20
	maxSnapshots          = 65536
	maxBackingNameLength  = 1023
	maxVirtualSize        = 1 << 62

	// Bits 9-55 of L1, L2 and refcount table entries hold an offset.
	offsetMask = 0x00fffffffffffe00
)

// Incompatible feature bits.
const (
	incompatDirty       = 1 << 0
	incompatCorrupt     = 1 << 1
	incompatDataFile    = 1 << 2
	incompatCompression = 1 << 3
	incompatExtendedL2  = 1 << 4
	incompatKnown       = incompatDirty | incompatCorrupt | incompatDataFile | incompatCompression | incompatExtendedL2
)

// compatLazyRefcounts is compatible feature bit 0.
const compatLazyRefcounts = 1 << 0

// Header extension types.
const (
	extEnd           = 0x00000000
	extBackingFormat = 0xe2792aca
	extFeatureTable  = 0x6803f857
	extBitmaps       = 0x23852875
	extCrypto        = 0x0537be77
	extDataFile      = 0x44415441
)

// Compression types (header byte 104).
const (
	compressionZlib = 0
	compressionZstd = 1
)

// header is the parsed and validated image header with the header
// extensions gonbd uses.
type header struct {
	version               uint32
	backingFileOffset     uint64
	backingFileSize       uint32
	clusterBits           uint32
	size                  uint64
	cryptMethod           uint32
	l1Size                uint32
	l1TableOffset         uint64
	refcountTableOffset   uint64
	refcountTableClusters uint32
	nbSnapshots           uint32
	snapshotsOffset       uint64
	incompatible          uint64
	compatible            uint64
	autoclear             uint64
	refcountOrder         uint32
	headerLength          uint32
	compressionType       uint8

	backingFile   string
	backingFormat string
	hasBitmaps    bool
	// featureNames maps (type<<8 | bit) to the name in the feature name
	// table, for error messages about unknown features.
	featureNames map[uint16]string
}

func (h *header) clusterSize() int64 { return 1 << h.clusterBits }

func (h *header) extendedL2() bool { return h.incompatible&incompatExtendedL2 != 0 }

// parseHeader parses and validates the first cluster of an image (or the
// whole file when it is shorter). It returns one error line naming the
// field at fault.
func parseHeader(buf []byte) (*header, error) {
	if len(buf) < headerV2Length {
		return nil, fmt.Errorf("file too short for a qcow2 header (%d bytes)", len(buf))
	}
	be := binary.BigEndian
	if be.Uint32(buf) != magic {
		return nil, fmt.Errorf("not a qcow2 image: magic %#x", be.Uint32(buf))
	}
	h := &header{
		version:               be.Uint32(buf[4:]),
		backingFileOffset:     be.Uint64(buf[8:]),
		backingFileSize:       be.Uint32(buf[16:]),
		clusterBits:           be.Uint32(buf[20:]),
		size:                  be.Uint64(buf[24:]),
		cryptMethod:           be.Uint32(buf[32:]),
		l1Size:                be.Uint32(buf[36:]),
		l1TableOffset:         be.Uint64(buf[40:]),
		refcountTableOffset:   be.Uint64(buf[48:]),
		refcountTableClusters: be.Uint32(buf[56:]),
		nbSnapshots:           be.Uint32(buf[60:]),
		snapshotsOffset:       be.Uint64(buf[64:]),
		refcountOrder:         4,
		headerLength:          headerV2Length,
	}
	if h.version != 2 && h.version != 3 {
		return nil, fmt.Errorf("unsupported qcow2 version %d (supported: 2 and 3)", h.version)
	}
	if h.version == 3 {
		if len(buf) < headerV3MinLength {
			return nil, fmt.Errorf("file too short for a qcow2 version 3 header (%d bytes)", len(buf))
		}
		h.incompatible = be.Uint64(buf[72:])
		h.compatible = be.Uint64(buf[80:])
		h.autoclear = be.Uint64(buf[88:])
		h.refcountOrder = be.Uint32(buf[96:])
		h.headerLength = be.Uint32(buf[100:])
	}
	if err := h.validateGeometry(len(buf)); err != nil {
		return nil, err
	}
	if h.version == 3 && h.headerLength > offCompressionTyp {
		h.compressionType = buf[offCompressionTyp]
	}
	if err := h.parseExtensions(buf); err != nil {
		return nil, err
	}
	if err := h.validateFeatures(); err != nil {
		return nil, err
	}
	if err := h.parseBackingName(buf); err != nil {
		return nil, err
	}
	return h, nil
}

// validateGeometry checks the fields that size tables and offsets.
func (h *header) validateGeometry(bufLen int) error {
	if h.clusterBits < minClusterBits || h.clusterBits > maxClusterBits {
		return fmt.Errorf("invalid cluster_bits %d: must be %d to %d (512 bytes to 2 MiB)", h.clusterBits, minClusterBits, maxClusterBits)
	}
	cs := h.clusterSize()
	if h.version == 3 {
		if h.headerLength < headerV3MinLength || h.headerLength%8 != 0 || int64(h.headerLength) > cs {
			return fmt.Errorf("invalid header_length %d: must be a multiple of 8 from %d to the cluster size %d", h.headerLength, headerV3MinLength, cs)
		}
		if int(h.headerLength) > bufLen {
			return fmt.Errorf("header_length %d is past the end of the file (%d bytes)", h.headerLength, bufLen)
		}
	}
	if h.refcountOrder > 6 {
		return fmt.Errorf("invalid refcount_order %d: must be at most 6 (64-bit refcounts)", h.refcountOrder)
	}
	if h.size > maxVirtualSize {
		return fmt.Errorf("invalid virtual size %d: larger than %d", h.size, uint64(maxVirtualSize))
	}
	if h.cryptMethod != 0 {
		return fmt.Errorf("encrypted qcow2 images are not supported (crypt_method %d, %s): decrypt the image with qemu-img convert first", h.cryptMethod, cryptName(h.cryptMethod))
	}
	if uint64(h.l1Size)*8 > maxL1Bytes {
		return fmt.Errorf("invalid l1_size %d: the L1 table would be larger than %d bytes", h.l1Size, maxL1Bytes)
	}
	if h.l1TableOffset%uint64(cs) != 0 || h.l1TableOffset > offsetMask {
		return fmt.Errorf("invalid l1_table_offset %#x: must be cluster aligned", h.l1TableOffset)
	}
	if h.refcountTableClusters == 0 || uint64(h.refcountTableClusters)*uint64(cs) > maxRefcountTableBytes {
		return fmt.Errorf("invalid refcount_table_clusters %d: the table must be 1 cluster to %d bytes", h.refcountTableClusters, maxRefcountTableBytes)
	}
	if h.refcountTableOffset == 0 || h.refcountTableOffset%uint64(cs) != 0 || h.refcountTableOffset > offsetMask {
		return fmt.Errorf("invalid refcount_table_offset %#x: must be non-zero and cluster aligned", h.refcountTableOffset)
	}
	if h.nbSnapshots > maxSnapshots {
		return fmt.Errorf("invalid nb_snapshots %d: more than %d", h.nbSnapshots, maxSnapshots)
	}
	if h.nbSnapshots > 0 && (h.snapshotsOffset%uint64(cs) != 0 || h.snapshotsOffset > offsetMask) {
		return fmt.Errorf("invalid snapshots_offset %#x: must be cluster aligned", h.snapshotsOffset)
	}

	// The L1 table must map the whole virtual disk.
	need := (h.size + uint64(cs)*uint64(h.l2Entries()) - 1) / (uint64(cs) * uint64(h.l2Entries()))
	if uint64(h.l1Size) < need {
		return fmt.Errorf("invalid l1_size %d: a %d-byte disk needs %d L1 entries", h.l1Size, h.size, need)
	}
	return nil
}

// l2Entries is the number of entries in one L2 table.
func (h *header) l2Entries() int64 {
	if h.extendedL2() {
		return h.clusterSize() / 16
	}
	return h.clusterSize() / 8
}

func cryptName(m uint32) string {
	switch m {
	case 1:
		return "AES"
	case 2:
		return "LUKS"
	}
	return "unknown"
}

// validateFeatures rejects feature bits gonbd cannot honour.
func (h *header) validateFeatures() error {
	if unknown := h.incompatible &^ incompatKnown; unknown != 0 {
		return fmt.Errorf("unsupported incompatible qcow2 features %s: this image needs a newer qcow2 driver", h.describeBits(0, unknown))
	}
	if h.incompatible&incompatDataFile != 0 {
		return fmt.Errorf("qcow2 images with an external data file are not supported: convert the image with qemu-img convert first")
	}
	if h.extendedL2() && h.clusterBits < 14 {
		return fmt.Errorf("invalid image: extended L2 entries need clusters of at least 16 KiB, not %d bytes", h.clusterSize())
	}
	if h.incompatible&incompatCompression != 0 {
		if h.compressionType == compressionZlib {
			return fmt.Errorf("invalid image: the compression type bit is set but compression_type is 0 (zlib)")
		}
	} else if h.compressionType != compressionZlib {
		return fmt.Errorf("invalid image: compression_type %d without the compression type feature bit", h.compressionType)
	}
	if h.compressionType != compressionZlib && h.compressionType != compressionZstd {
		return fmt.Errorf("unsupported compression_type %d (supported: 0 zlib, 1 zstd)", h.compressionType)
	}
	return nil
}

// describeBits names the set bits of a feature bitmap, using the image's
// feature name table where it has an entry.
func (h *header) describeBits(kind uint8, bits uint64) string {
	var parts []string
	for b := 0; b < 64; b++ {
		if bits&(1<<b) == 0 {
			continue
		}
		if name, ok := h.featureNames[uint16(kind)<<8|uint16(b)]; ok {
			parts = append(parts, fmt.Sprintf("bit %d (%s)", b, name))
		} else {
			parts = append(parts, fmt.Sprintf("bit %d", b))
		}
	}
	return strings.Join(parts, ", ")
}

// parseExtensions reads the header extensions between the header and the
// end of the first cluster.
func (h *header) parseExtensions(buf []byte) error {
	be := binary.BigEndian
	end := len(buf)
	if int64(end) > h.clusterSize() {
		end = int(h.clusterSize())
	}
	if h.backingFileOffset != 0 && h.backingFileOffset < uint64(end) {
		end = int(h.backingFileOffset)
	}
	seen := map[uint32]bool{}
	for pos := int(h.headerLength); pos+8 <= end; {
		typ := be.Uint32(buf[pos:])
		length := int(be.Uint32(buf[pos+4:]))
		if typ == extEnd {
			return nil
		}
		data := pos + 8
		if length > end-data {
			return fmt.Errorf("invalid header extension %#x at byte %d: length %d runs past the header area", typ, pos, length)
		}
		if seen[typ] {
			return fmt.Errorf("invalid header extension %#x at byte %d: appears twice", typ, pos)
		}
		seen[typ] = true
		body := buf[data : data+length]
		switch typ {
		case extBackingFormat:
			if length > 16 {
				return fmt.Errorf("invalid backing format extension: %d bytes, at most 16", length)
			}
			h.backingFormat = string(body)
		case extFeatureTable:
			h.featureNames = map[uint16]string{}
			for i := 0; i+48 <= len(body); i += 48 {
				name := strings.TrimRight(string(body[i+2:i+48]), "\x00")
				h.featureNames[uint16(body[i])<<8|uint16(body[i+1])] = name
			}
		case extBitmaps:
			h.hasBitmaps = true
		case extCrypto:
			return fmt.Errorf("encrypted qcow2 images are not supported: decrypt the image with qemu-img convert first")
		case extDataFile:
			// Only meaningful with the external data file bit, which
			// validateFeatures rejects.
		}
		pos = data + (length+7)&^7
	}
	return nil
}

// parseBackingName reads the backing file name, which must lie in the
// first cluster.
func (h *header) parseBackingName(buf []byte) error {
	if h.backingFileOffset == 0 {
		return nil
	}
	if h.backingFileSize == 0 || h.backingFileSize > maxBackingNameLength {
		return fmt.Errorf("invalid backing_file_size %d: must be 1 to %d bytes", h.backingFileSize, maxBackingNameLength)
	}
	end := h.backingFileOffset + uint64(h.backingFileSize)
	if end > uint64(h.clusterSize()) || end > uint64(len(buf)) {
		return fmt.Errorf("invalid backing_file_offset %d: the name must lie within the first cluster", h.backingFileOffset)
	}
	h.backingFile = string(buf[h.backingFileOffset:end])
	return nil
}
