package nbd

import (
	"errors"
	"syscall"

	"github.com/gonbd/gonbd/export"
	"github.com/gonbd/gonbd/nbd/proto"
)

// errorMessage returns the text of an error chunk. It names the system
// error but not the backend's full error, which may contain server-side
// file names.
func errorMessage(cmd proto.Command, err error, errno proto.Errno) string {
	var se syscall.Errno
	if errors.As(err, &se) {
		return cmd.String() + " failed: " + se.Error()
	}
	return cmd.String() + " failed: " + errno.String()
}

// errnoFor maps a backend error to the NBD error sent to the client. The
// protocol defines only a few values; the rest become EIO. EDQUOT and
// EFBIG become ENOSPC, as the protocol recommends.
func errnoFor(err error) proto.Errno {
	var pe proto.Errno
	switch {
	case errors.As(err, &pe):
		return pe
	case errors.Is(err, export.ErrReadOnly):
		return proto.EPERM
	case errors.Is(err, export.ErrFastZeroUnsupported):
		return proto.ENOTSUP
	}

	var se syscall.Errno
	if !errors.As(err, &se) {
		return proto.EIO
	}
	switch se {
	case syscall.EPERM, syscall.EACCES, syscall.EROFS:
		return proto.EPERM
	case syscall.ENOMEM:
		return proto.ENOMEM
	case syscall.EINVAL:
		return proto.EINVAL
	case syscall.ENOSPC, syscall.EDQUOT, syscall.EFBIG:
		return proto.ENOSPC
	case syscall.EOVERFLOW:
		return proto.EOVERFLOW
	case syscall.ENOTSUP:
		return proto.ENOTSUP
	case syscall.ESHUTDOWN:
		return proto.ESHUTDOWN
	}
	return proto.EIO
}
