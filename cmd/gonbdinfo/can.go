package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/gonbd/gonbd/nbd"
	"github.com/gonbd/gonbd/nbd/proto"
)

// canFlags maps the --can and --is names nbdinfo accepts to the
// transmission flag they test.
var canFlags = map[string]proto.TransmissionFlags{
	"readonly":   proto.FlagReadOnly,
	"read-only":  proto.FlagReadOnly,
	"read_only":  proto.FlagReadOnly,
	"rotational": proto.FlagRotational,
	"cache":      proto.FlagSendCache,
	"df":         proto.FlagSendDF,
	"fastzero":   proto.FlagSendFastZero,
	"fast-zero":  proto.FlagSendFastZero,
	"fast_zero":  proto.FlagSendFastZero,
	"flush":      proto.FlagSendFlush,
	"fua":        proto.FlagSendFUA,
	"multiconn":  proto.FlagCanMultiConn,
	"multi-conn": proto.FlagCanMultiConn,
	"multi_conn": proto.FlagCanMultiConn,
	"trim":       proto.FlagSendTrim,
	"zero":       proto.FlagSendWriteZeroes,
}

// structuredNames are nbdinfo's spellings of "structured replies".
var structuredNames = map[string]bool{
	"sr": true, "structured": true,
	"structured reply": true, "structured-reply": true, "structured_reply": true,
	"structured replies": true, "structured-replies": true, "structured_replies": true,
}

// doCan handles --can and --is and returns the exit code: 0 true, 2 false.
func (i *info) doCan(ctx context.Context) (int, error) {
	feature := strings.ToLower(i.opts.can)
	flag, isFlag := canFlags[feature]
	known := isFlag || structuredNames[feature] ||
		feature == "connect" || feature == "read" || feature == "tls" || feature == "write"
	if !known {
		return exitError, fmt.Errorf("%w: %s; known are connect, read, write, tls, structured, read-only, rotational, cache, df, fast-zero, flush, fua, multi-conn, trim, zero", errUnknownFeature, i.opts.can)
	}

	c, err := nbd.Dial(ctx, i.opts.uri, append(i.dialOpts, nbd.WithMetaContexts())...)
	if err != nil {
		return exitError, err
	}
	defer c.Close()
	info := c.Info()

	var ok bool
	switch {
	case isFlag:
		ok = info.Has(flag)
	case feature == "connect" || feature == "read":
		ok = true
	case feature == "write":
		ok = !info.Has(proto.FlagReadOnly)
	case feature == "tls":
		ok = c.TLS()
	default:
		ok = c.StructuredReplies()
	}
	if ok {
		return exitOK, nil
	}
	return exitFalse, nil
}
