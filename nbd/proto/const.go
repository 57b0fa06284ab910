// Package proto holds the NBD wire constants and the fixed-size header
// codecs shared by the gonbd server and client.
//
// Names follow the NBD protocol document (doc/proto.md of the
// NetworkBlockDevice project) in Go's MixedCaps: NBD_OPT_STARTTLS becomes
// OptStartTLS, NBD_REP_ERR_TLS_REQD becomes RepErrTLSReqd.
package proto

// Handshake magic numbers.
const (
	// NBDMagic is the first 8 bytes a newstyle server sends ("NBDMAGIC").
	NBDMagic uint64 = 0x4e42444d41474943
	// IHaveOpt follows NBDMagic in newstyle negotiation and starts each
	// client option ("IHAVEOPT").
	IHaveOpt uint64 = 0x49484156454F5054
	// OptReplyMagic starts each option reply.
	OptReplyMagic uint64 = 0x0003e889045565a9
	// OldstyleMagic follows NBDMagic in the oldstyle handshake.
	OldstyleMagic uint64 = 0x00420281861253
)

// Transmission magic numbers.
const (
	RequestMagic         uint32 = 0x25609513
	SimpleReplyMagic     uint32 = 0x67446698
	StructuredReplyMagic uint32 = 0x668e33ef
	ExtendedRequestMagic uint32 = 0x21e41c71
	ExtendedReplyMagic   uint32 = 0x6e8a278c
)

// Handshake flags sent by the server (16 bits).
const (
	FlagFixedNewstyle uint16 = 1 << 0
	FlagNoZeroes      uint16 = 1 << 1
)

// Client flags sent after the server's handshake flags (32 bits).
const (
	ClientFlagFixedNewstyle uint32 = 1 << 0
	ClientFlagNoZeroes      uint32 = 1 << 1

	// KnownClientFlags is every client flag gonbd understands; a client
	// setting any other bit is disconnected, as the protocol requires.
	KnownClientFlags = ClientFlagFixedNewstyle | ClientFlagNoZeroes
)

// TransmissionFlags are the per-export flags sent with NBD_INFO_EXPORT or
// in reply to NBD_OPT_EXPORT_NAME (16 bits).
type TransmissionFlags uint16

const (
	FlagHasFlags           TransmissionFlags = 1 << 0
	FlagReadOnly           TransmissionFlags = 1 << 1
	FlagSendFlush          TransmissionFlags = 1 << 2
	FlagSendFUA            TransmissionFlags = 1 << 3
	FlagRotational         TransmissionFlags = 1 << 4
	FlagSendTrim           TransmissionFlags = 1 << 5
	FlagSendWriteZeroes    TransmissionFlags = 1 << 6
	FlagSendDF             TransmissionFlags = 1 << 7
	FlagCanMultiConn       TransmissionFlags = 1 << 8
	FlagSendResize         TransmissionFlags = 1 << 9
	FlagSendCache          TransmissionFlags = 1 << 10
	FlagSendFastZero       TransmissionFlags = 1 << 11
	FlagBlockStatusPayload TransmissionFlags = 1 << 12
)

// Option is an NBD_OPT_* code.
type Option uint32

const (
	OptExportName      Option = 1
	OptAbort           Option = 2
	OptList            Option = 3
	OptPeekExport      Option = 4
	OptStartTLS        Option = 5
	OptInfo            Option = 6
	OptGo              Option = 7
	OptStructuredReply Option = 8
	OptListMetaContext Option = 9
	OptSetMetaContext  Option = 10
	OptExtendedHeaders Option = 11
)

// Reply is an NBD_REP_* code. Error replies have bit 31 set.
type Reply uint32

const (
	RepAck         Reply = 1
	RepServer      Reply = 2
	RepInfo        Reply = 3
	RepMetaContext Reply = 4

	repErrBit           Reply = 1 << 31
	RepErrUnsup         Reply = repErrBit | 1
	RepErrPolicy        Reply = repErrBit | 2
	RepErrInvalid       Reply = repErrBit | 3
	RepErrPlatform      Reply = repErrBit | 4
	RepErrTLSReqd       Reply = repErrBit | 5
	RepErrUnknown       Reply = repErrBit | 6
	RepErrShutdown      Reply = repErrBit | 7
	RepErrBlockSizeReqd Reply = repErrBit | 8
	RepErrTooBig        Reply = repErrBit | 9
	RepErrExtHeaderReqd Reply = repErrBit | 10
)

// IsError reports whether r is an error reply.
func (r Reply) IsError() bool { return r&repErrBit != 0 }

// Info is an NBD_INFO_* code used with OptInfo and OptGo.
type Info uint16

const (
	InfoExport      Info = 0
	InfoName        Info = 1
	InfoDescription Info = 2
	InfoBlockSize   Info = 3
)

// Command is an NBD_CMD_* code.
type Command uint16

const (
	CmdRead        Command = 0
	CmdWrite       Command = 1
	CmdDisc        Command = 2
	CmdFlush       Command = 3
	CmdTrim        Command = 4
	CmdCache       Command = 5
	CmdWriteZeroes Command = 6
	CmdBlockStatus Command = 7
	CmdResize      Command = 8
)

// CommandFlags are the NBD_CMD_FLAG_* bits of a request.
type CommandFlags uint16

const (
	CmdFlagFUA        CommandFlags = 1 << 0
	CmdFlagNoHole     CommandFlags = 1 << 1
	CmdFlagDF         CommandFlags = 1 << 2
	CmdFlagReqOne     CommandFlags = 1 << 3
	CmdFlagFastZero   CommandFlags = 1 << 4
	CmdFlagPayloadLen CommandFlags = 1 << 5
)

// ReplyType is an NBD_REPLY_TYPE_* code of a structured reply chunk.
type ReplyType uint16

const (
	ReplyTypeNone           ReplyType = 0
	ReplyTypeOffsetData     ReplyType = 1
	ReplyTypeOffsetHole     ReplyType = 2
	ReplyTypeBlockStatus    ReplyType = 5
	ReplyTypeBlockStatusExt ReplyType = 6

	replyTypeErrBit      ReplyType = 1 << 15
	ReplyTypeError       ReplyType = replyTypeErrBit | 1
	ReplyTypeErrorOffset ReplyType = replyTypeErrBit | 2
)

// IsError reports whether t is an error chunk type.
func (t ReplyType) IsError() bool { return t&replyTypeErrBit != 0 }

// ReplyFlagDone marks the last chunk of a structured reply.
const ReplyFlagDone uint16 = 1 << 0

// Errno is an NBD error value carried in replies. The values are the
// protocol's, which match Linux errno numbers.
type Errno uint32

const (
	EPERM     Errno = 1
	EIO       Errno = 5
	ENOMEM    Errno = 12
	EINVAL    Errno = 22
	ENOSPC    Errno = 28
	EOVERFLOW Errno = 75
	ENOTSUP   Errno = 95
	ESHUTDOWN Errno = 108
)

// Block status flags of the base:allocation meta context.
const (
	StateHole uint32 = 1 << 0
	StateZero uint32 = 1 << 1
)

// Meta context names.
const (
	ContextBaseAllocation  = "base:allocation"
	ContextAllocationDepth = "qemu:allocation-depth"
)

// Limits from the protocol document.
const (
	// MaxStringLen is the longest export name, description or meta context
	// name the protocol allows.
	MaxStringLen = 4096
	// MinBlockSize is the smallest block size a server may advertise.
	MinBlockSize = 1
	// PreferredBlockSize is gonbd's default preferred block size.
	PreferredBlockSize = 4096
	// MaxPayloadSize is the largest read or write gonbd accepts (32 MiB,
	// the value qemu-nbd and nbdkit advertise).
	MaxPayloadSize = 32 << 20
)
