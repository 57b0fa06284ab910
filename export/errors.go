package export

import "errors"

// ErrFastZeroUnsupported is returned by Zero with ZeroFast when zeroing the
// range would be no faster than writing zeroes. The server replies ENOTSUP.
var ErrFastZeroUnsupported = errors.New("export: fast zero not supported for this range")

// ErrReadOnly is returned by writes to a read-only backend. The server
// replies EPERM.
var ErrReadOnly = errors.New("export: backend is read-only")
