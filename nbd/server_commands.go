package nbd

import (
	"errors"
	"fmt"
	"io"

	"github.com/gonbd/gonbd/export"
	"github.com/gonbd/gonbd/nbd/proto"
)

// check validates a request before any backend call and returns the errno
// to reply with, or 0. It follows the protocol's "Error values": EINVAL
// for unknown commands and flags and for reads past the end, ENOSPC for
// writes past the end, EPERM for writes to a read-only export.
func (t *transmission) check(q *proto.Request) (proto.Errno, string) {
	allowed, known := t.allowedFlags(q.Command)
	if !known {
		return proto.EINVAL, fmt.Sprintf("unknown command %s", q.Command)
	}
	if extra := q.Flags &^ allowed; extra != 0 {
		return proto.EINVAL, fmt.Sprintf("command flags %#x are not valid for %s on this connection", uint16(extra), q.Command)
	}
	readOnly := t.flags&proto.FlagReadOnly != 0

	switch q.Command {
	case proto.CmdRead:
		if q.Length > proto.MaxPayloadSize {
			if q.Flags&proto.CmdFlagDF != 0 {
				return proto.EOVERFLOW, fmt.Sprintf("read of %d bytes exceeds the maximum payload of %d", q.Length, proto.MaxPayloadSize)
			}
			return proto.EINVAL, fmt.Sprintf("read of %d bytes exceeds the maximum payload of %d", q.Length, proto.MaxPayloadSize)
		}
		return t.checkRange(q, proto.EINVAL)
	case proto.CmdWrite:
		if readOnly {
			return proto.EPERM, "export is read-only"
		}
		return t.checkRange(q, proto.ENOSPC)
	case proto.CmdFlush:
		return 0, ""
	case proto.CmdTrim:
		if readOnly {
			return proto.EPERM, "export is read-only"
		}
		if t.trimmer == nil {
			return proto.EINVAL, "trim is not supported by this export"
		}
		return t.checkRange(q, proto.EINVAL)
	case proto.CmdWriteZeroes:
		if readOnly {
			return proto.EPERM, "export is read-only"
		}
		if t.zeroer == nil {
			return proto.EINVAL, "write zeroes is not supported by this export"
		}
		return t.checkRange(q, proto.ENOSPC)
	case proto.CmdCache:
		if t.cacher == nil {
			return proto.EINVAL, "cache is not supported by this export"
		}
		return t.checkRange(q, proto.EINVAL)
	case proto.CmdBlockStatus:
		if !t.structured || !t.meta.any() {
			return proto.EINVAL, "no meta context was selected with NBD_OPT_SET_META_CONTEXT"
		}
		if q.Length == 0 {
			return proto.EINVAL, "block status of 0 bytes"
		}
		return t.checkRange(q, proto.EINVAL)
	}
	return proto.EINVAL, fmt.Sprintf("unknown command %s", q.Command)
}

// allowedFlags returns the command flags valid for cmd on this
// connection, and whether the server implements cmd.
func (t *transmission) allowedFlags(cmd proto.Command) (proto.CommandFlags, bool) {
	var f proto.CommandFlags
	if t.flags&proto.FlagSendFUA != 0 {
		// The protocol allows FUA on every command once negotiated.
		f |= proto.CmdFlagFUA
	}
	switch cmd {
	case proto.CmdRead:
		if t.flags&proto.FlagSendDF != 0 {
			f |= proto.CmdFlagDF
		}
	case proto.CmdWriteZeroes:
		f |= proto.CmdFlagNoHole
		if t.flags&proto.FlagSendFastZero != 0 {
			f |= proto.CmdFlagFastZero
		}
	case proto.CmdBlockStatus:
		f |= proto.CmdFlagReqOne
	case proto.CmdWrite, proto.CmdFlush, proto.CmdTrim, proto.CmdCache:
	default:
		return 0, false
	}
	return f, true
}

// checkRange returns errno when offset+length passes the end of the
// export.
func (t *transmission) checkRange(q *proto.Request, errno proto.Errno) (proto.Errno, string) {
	if q.Offset > t.size || uint64(q.Length) > t.size-q.Offset {
		return errno, fmt.Sprintf("request at offset %d for %d bytes passes the export size %d", q.Offset, q.Length, t.size)
	}
	return 0, ""
}

// handle runs one checked request and builds its reply.
func (t *transmission) handle(r *serverRequest) {
	if r.errno != 0 {
		t.replyError(r, r.errno, r.message)
		return
	}

	var err error
	switch r.req.Command {
	case proto.CmdRead:
		err = t.cmdRead(r)
	case proto.CmdWrite:
		err = t.cmdWrite(r)
	case proto.CmdFlush:
		err = t.backend.Sync()
	case proto.CmdTrim:
		err = t.cmdTrim(r)
	case proto.CmdWriteZeroes:
		err = t.cmdWriteZeroes(r)
	case proto.CmdCache:
		err = t.cacher.Cache(int64(r.req.Offset), int64(r.req.Length))
	case proto.CmdBlockStatus:
		err = t.cmdBlockStatus(r)
	}
	if err != nil {
		r.resetReply()
		errno := errnoFor(err)
		logArgs := []any{"export", t.export.Name, "command", r.req.Command, "offset", r.req.Offset, "length", r.req.Length, "errno", errno, "error", err}
		if errors.Is(err, export.ErrFastZeroUnsupported) {
			t.c.log.Debug("request failed", logArgs...)
		} else {
			// NOTE: a failing disk logs once per failed request; there
			// is no rate limit.
			t.c.log.Warn("request failed", logArgs...)
		}
		t.replyError(r, errno, errorMessage(r.req.Command, err, errno))
		return
	}
	if len(r.segments) == 0 {
		// Commands without reply data use a simple reply even with
		// structured replies, as the protocol allows.
		r.simpleReply(0)
	}
}

// replyError builds an error reply: an error chunk with a message when
// structured replies are on, else a simple reply.
func (t *transmission) replyError(r *serverRequest, errno proto.Errno, message string) {
	if t.structured {
		r.errorChunk(errno, message)
		return
	}
	r.simpleReply(errno)
}

func (t *transmission) cmdRead(r *serverRequest) error {
	n := int(r.req.Length)
	if n == 0 {
		if t.structured {
			r.noneChunk()
		} else {
			r.simpleReply(0)
		}
		return nil
	}
	if t.structured && r.req.Flags&proto.CmdFlagDF == 0 && t.extenter != nil {
		if done, err := t.readSparse(r); done || err != nil {
			return err
		}
	}

	if t.sectioner != nil {
		if f, pos, ok := t.sectioner.FileSection(int64(r.req.Offset), int64(n)); ok {
			if t.structured {
				r.dataChunkHeader(proto.ReplyFlagDone, r.req.Offset, n)
			} else {
				r.simpleReply(0)
			}
			r.appendFile(f, pos, n)
			return nil
		}
	}

	t.acquirePayload(r, n)
	data := r.payload[:n]
	if err := readFullAt(t.backend, data, int64(r.req.Offset)); err != nil {
		return err
	}
	if t.structured {
		r.dataChunk(proto.ReplyFlagDone, r.req.Offset, data)
	} else {
		r.simpleReply(0)
		r.appendData(data)
	}
	return nil
}

// readFullAt reads len(p) bytes at off. A short read is an error.
func readFullAt(b export.Backend, p []byte, off int64) error {
	n, err := b.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = fmt.Errorf("read %d bytes at offset %d: backend returned %d: %w", len(p), off, n, io.ErrUnexpectedEOF)
	}
	return err
}

func (t *transmission) cmdWrite(r *serverRequest) error {
	n := int(r.req.Length)
	if n == 0 {
		return nil
	}
	data := r.payload[:n]
	off := int64(r.req.Offset)

	fua := r.req.Flags&proto.CmdFlagFUA != 0
	var (
		written int
		err     error
	)
	if fua && t.fuaWriter != nil {
		written, err = t.fuaWriter.WriteAtFUA(data, off)
	} else {
		written, err = t.backend.WriteAt(data, off)
	}
	if err == nil && written != n {
		err = fmt.Errorf("write %d bytes at offset %d: backend wrote %d: %w", n, off, written, io.ErrShortWrite)
	}
	if err != nil {
		return err
	}
	if fua && t.fuaWriter == nil {
		return t.backend.Sync()
	}
	return nil
}

func (t *transmission) cmdTrim(r *serverRequest) error {
	if err := t.trimmer.Trim(int64(r.req.Offset), int64(r.req.Length)); err != nil {
		return err
	}
	return t.syncIfFUA(r)
}

func (t *transmission) cmdWriteZeroes(r *serverRequest) error {
	var flags export.ZeroFlags
	if r.req.Flags&proto.CmdFlagNoHole == 0 {
		flags |= export.ZeroMayTrim
	}
	if r.req.Flags&proto.CmdFlagFastZero != 0 {
		flags |= export.ZeroFast
	}
	if err := t.zeroer.Zero(int64(r.req.Offset), int64(r.req.Length), flags); err != nil {
		return err
	}
	return t.syncIfFUA(r)
}

func (t *transmission) syncIfFUA(r *serverRequest) error {
	if r.req.Flags&proto.CmdFlagFUA != 0 {
		return t.backend.Sync()
	}
	return nil
}
