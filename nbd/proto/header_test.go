package proto

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRequestRoundTrip(t *testing.T) {
	in := Request{Flags: CmdFlagFUA, Command: CmdWrite, Cookie: 7, Offset: 1 << 40, Length: 4096}
	var buf [RequestHeaderSize]byte
	var out Request
	require.NoError(t, DecodeRequest(in.Encode(buf[:]), &out))
	assert.Equal(t, in, out)
}

func TestRequestBadMagic(t *testing.T) {
	var buf [RequestHeaderSize]byte
	var out Request
	assert.ErrorIs(t, DecodeRequest(buf[:], &out), ErrBadMagic)
}

func TestRequestShortHeader(t *testing.T) {
	var out Request
	assert.Error(t, DecodeRequest(make([]byte, 10), &out))
}

func TestOptionHeaderRoundTrip(t *testing.T) {
	in := OptionHeader{Option: OptGo, Length: 12}
	var buf [OptionHeaderSize]byte
	out, err := DecodeOptionHeader(in.Encode(buf[:]))
	require.NoError(t, err)
	assert.Equal(t, in, out)
}

func TestOptionReplyHeaderRoundTrip(t *testing.T) {
	in := OptionReplyHeader{Option: OptList, Reply: RepErrTLSReqd, Length: 3}
	var buf [OptionReplyHeaderSize]byte
	out, err := DecodeOptionReplyHeader(in.Encode(buf[:]))
	require.NoError(t, err)
	assert.Equal(t, in, out)
}

func TestNames(t *testing.T) {
	assert.Equal(t, "NBD_OPT_STARTTLS", OptStartTLS.String())
	assert.Equal(t, "NBD_REP_ERR_TLS_REQD", RepErrTLSReqd.String())
	assert.Equal(t, "NBD_OPT_99", Option(99).String())
	assert.Equal(t, []string{"readonly", "flush", "multi"}, (FlagHasFlags | FlagReadOnly | FlagSendFlush | FlagCanMultiConn).Names())
}
