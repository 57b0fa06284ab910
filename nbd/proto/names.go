package proto

import "fmt"

var optionNames = map[Option]string{
	OptExportName:      "NBD_OPT_EXPORT_NAME",
	OptAbort:           "NBD_OPT_ABORT",
	OptList:            "NBD_OPT_LIST",
	OptPeekExport:      "NBD_OPT_PEEK_EXPORT",
	OptStartTLS:        "NBD_OPT_STARTTLS",
	OptInfo:            "NBD_OPT_INFO",
	OptGo:              "NBD_OPT_GO",
	OptStructuredReply: "NBD_OPT_STRUCTURED_REPLY",
	OptListMetaContext: "NBD_OPT_LIST_META_CONTEXT",
	OptSetMetaContext:  "NBD_OPT_SET_META_CONTEXT",
	OptExtendedHeaders: "NBD_OPT_EXTENDED_HEADERS",
}

func (o Option) String() string {
	if s, ok := optionNames[o]; ok {
		return s
	}
	return fmt.Sprintf("NBD_OPT_%d", uint32(o))
}

var replyNames = map[Reply]string{
	RepAck:              "NBD_REP_ACK",
	RepServer:           "NBD_REP_SERVER",
	RepInfo:             "NBD_REP_INFO",
	RepMetaContext:      "NBD_REP_META_CONTEXT",
	RepErrUnsup:         "NBD_REP_ERR_UNSUP",
	RepErrPolicy:        "NBD_REP_ERR_POLICY",
	RepErrInvalid:       "NBD_REP_ERR_INVALID",
	RepErrPlatform:      "NBD_REP_ERR_PLATFORM",
	RepErrTLSReqd:       "NBD_REP_ERR_TLS_REQD",
	RepErrUnknown:       "NBD_REP_ERR_UNKNOWN",
	RepErrShutdown:      "NBD_REP_ERR_SHUTDOWN",
	RepErrBlockSizeReqd: "NBD_REP_ERR_BLOCK_SIZE_REQD",
	RepErrTooBig:        "NBD_REP_ERR_TOO_BIG",
	RepErrExtHeaderReqd: "NBD_REP_ERR_EXT_HEADER_REQD",
}

func (r Reply) String() string {
	if s, ok := replyNames[r]; ok {
		return s
	}
	if r.IsError() {
		return fmt.Sprintf("NBD_REP_ERR_%d", uint32(r&^repErrBit))
	}
	return fmt.Sprintf("NBD_REP_%d", uint32(r))
}

var infoNames = map[Info]string{
	InfoExport:      "NBD_INFO_EXPORT",
	InfoName:        "NBD_INFO_NAME",
	InfoDescription: "NBD_INFO_DESCRIPTION",
	InfoBlockSize:   "NBD_INFO_BLOCK_SIZE",
}

func (i Info) String() string {
	if s, ok := infoNames[i]; ok {
		return s
	}
	return fmt.Sprintf("NBD_INFO_%d", uint16(i))
}

var commandNames = map[Command]string{
	CmdRead:        "NBD_CMD_READ",
	CmdWrite:       "NBD_CMD_WRITE",
	CmdDisc:        "NBD_CMD_DISC",
	CmdFlush:       "NBD_CMD_FLUSH",
	CmdTrim:        "NBD_CMD_TRIM",
	CmdCache:       "NBD_CMD_CACHE",
	CmdWriteZeroes: "NBD_CMD_WRITE_ZEROES",
	CmdBlockStatus: "NBD_CMD_BLOCK_STATUS",
	CmdResize:      "NBD_CMD_RESIZE",
}

func (c Command) String() string {
	if s, ok := commandNames[c]; ok {
		return s
	}
	return fmt.Sprintf("NBD_CMD_%d", uint16(c))
}

var replyTypeNames = map[ReplyType]string{
	ReplyTypeNone:           "NBD_REPLY_TYPE_NONE",
	ReplyTypeOffsetData:     "NBD_REPLY_TYPE_OFFSET_DATA",
	ReplyTypeOffsetHole:     "NBD_REPLY_TYPE_OFFSET_HOLE",
	ReplyTypeBlockStatus:    "NBD_REPLY_TYPE_BLOCK_STATUS",
	ReplyTypeBlockStatusExt: "NBD_REPLY_TYPE_BLOCK_STATUS_EXT",
	ReplyTypeError:          "NBD_REPLY_TYPE_ERROR",
	ReplyTypeErrorOffset:    "NBD_REPLY_TYPE_ERROR_OFFSET",
}

func (t ReplyType) String() string {
	if s, ok := replyTypeNames[t]; ok {
		return s
	}
	return fmt.Sprintf("NBD_REPLY_TYPE_%d", uint16(t))
}

var errnoNames = map[Errno]string{
	EPERM:     "EPERM",
	EIO:       "EIO",
	ENOMEM:    "ENOMEM",
	EINVAL:    "EINVAL",
	ENOSPC:    "ENOSPC",
	EOVERFLOW: "EOVERFLOW",
	ENOTSUP:   "ENOTSUP",
	ESHUTDOWN: "ESHUTDOWN",
}

func (e Errno) String() string {
	if s, ok := errnoNames[e]; ok {
		return s
	}
	return fmt.Sprintf("errno %d", uint32(e))
}

// Error makes Errno usable as an error value.
func (e Errno) Error() string { return "nbd: " + e.String() }

// flagNames lists the transmission flags in bit order, with the names
// qemu-nbd -L prints.
var flagNames = []struct {
	flag TransmissionFlags
	name string
}{
	{FlagReadOnly, "readonly"},
	{FlagSendFlush, "flush"},
	{FlagSendFUA, "fua"},
	{FlagRotational, "rotational"},
	{FlagSendTrim, "trim"},
	{FlagSendWriteZeroes, "zeroes"},
	{FlagSendDF, "df"},
	{FlagCanMultiConn, "multi"},
	{FlagSendResize, "resize"},
	{FlagSendCache, "cache"},
	{FlagSendFastZero, "fast-zero"},
	{FlagBlockStatusPayload, "block-status-payload"},
}

// Names returns the names of the flags set in f, in bit order, leaving out
// FlagHasFlags.
func (f TransmissionFlags) Names() []string {
	var names []string
	for _, fn := range flagNames {
		if f&fn.flag != 0 {
			names = append(names, fn.name)
		}
	}
	return names
}
