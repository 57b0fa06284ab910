package main

import (
	"fmt"
	"io"
	"math"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/gonbd/gonbd/nbd/proto"
	"github.com/gonbd/gonbd/object"
	flag "github.com/spf13/pflag"
)

// options are gonbd's command-line settings, named after qemu-nbd's flags.
type options struct {
	image string // IMAGE, or the --image-opts string

	port        int
	bind        string
	addrSet     bool // -p or -b given
	socket      string
	shared      int // max clients at once; 0 = unlimited
	persistent  bool
	exportName  string
	description string

	readOnly        bool
	format          string // "" = probe the image
	offset          int64
	allocationDepth bool
	snapshot        bool
	loadSnapshot    string
	cache           string // "" = the driver's default (writeback)
	aio             string
	discard         string
	detectZeroes    string
	imageOpts       bool

	fork           bool
	pidFile        string
	verbose        bool
	handshakeLimit time.Duration
	list           bool

	objects     []string
	tlsCreds    string
	tlsAuthz    string
	tlsHostname string
	tls         string // off, on or require; "" = require with --tls-creds

	help, version bool
	// objectHelp is the text an --object help request (help or
	// TYPE,help) prints; "" without one.
	objectHelp string
}

// errUsage is a usage error whose message is complete: main prints it as
// "gonbd: MESSAGE" and exits 1.
type errUsage struct{ msg string }

func (e *errUsage) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &errUsage{msg: fmt.Sprintf(format, args...)}
}

// rawFlags holds flag values that need checks pflag cannot do, so the error
// can name the value and the fix.
type rawFlags struct {
	port, shared, offset, handshakeLimit string
	nocache                              bool
	connect, bitmap, trace, selinux      string
	disconnect                           bool
}

// newFlagSet defines every flag of qemu-nbd 7.2 that gonbd accepts, with
// the same names and defaults, plus --handshake-limit (qemu-nbd 10.0) and
// --tls (nbdkit's optional TLS).
func newFlagSet(o *options, raw *rawFlags) *flag.FlagSet {
	fs := flag.NewFlagSet("gonbd", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.SortFlags = false

	fs.BoolVarP(&o.help, "help", "h", false, "display this help and exit")
	fs.BoolVarP(&o.version, "version", "V", false, "output version information and exit")

	fs.StringVarP(&raw.port, "port", "p", "10809", "TCP `PORT` to listen on")
	fs.StringVarP(&o.bind, "bind", "b", "0.0.0.0", "IP `ADDRESS` to listen on (IPv4 or IPv6)")
	fs.StringVarP(&o.socket, "socket", "k", "", "listen on the Unix socket at `PATH` instead of TCP")
	fs.StringVarP(&raw.shared, "shared", "e", "1", "serve up to `NUM` clients at once (0 = unlimited)")
	fs.BoolVarP(&o.persistent, "persistent", "t", false, "keep serving after the last client disconnects")
	fs.BoolVarP(&o.verbose, "verbose", "v", false, "log at debug level")
	fs.StringVarP(&o.exportName, "export-name", "x", "", "export `NAME` (default is the empty string)")
	fs.StringVarP(&o.description, "description", "D", "", "human-readable export description `TEXT`")

	fs.StringVarP(&raw.offset, "offset", "o", "0", "serve the image from `OFFSET` bytes on")
	fs.BoolVarP(&o.allocationDepth, "allocation-depth", "A", false, "expose the qemu:allocation-depth meta context")

	fs.BoolVarP(&o.list, "list", "L", false, "list the exports of another NBD server")
	fs.StringArrayVar(&o.objects, "object", nil, "define an `OBJECT` such as tls-creds-x509,id=ID,... (repeatable)")
	fs.StringVar(&o.tlsCreds, "tls-creds", "", "use the object with this `ID` for TLS")
	fs.StringVar(&o.tlsAuthz, "tls-authz", "", "use the object with this `ID` to authorize TLS clients")
	fs.StringVar(&o.tlsHostname, "tls-hostname", "", "`HOSTNAME` the server certificate must match (with -L)")
	fs.StringVar(&o.tls, "tls", "", "`MODE`: off, on (TLS optional) or require (default with --tls-creds)")
	fs.BoolVar(&o.fork, "fork", false, "run in the background once the server is listening")
	fs.StringVar(&o.pidFile, "pid-file", "", "write the server's process ID to `PATH`")
	fs.StringVar(&raw.handshakeLimit, "handshake-limit", "10", "drop clients that have not finished the handshake in `SECONDS` (0 = no limit)")

	fs.StringVarP(&o.format, "format", "f", "", "image `FORMAT` (raw, qcow2, ...; default: probe)")
	fs.BoolVarP(&o.readOnly, "read-only", "r", false, "export read-only")
	fs.BoolVarP(&o.snapshot, "snapshot", "s", false, "write to a temporary overlay, leaving IMAGE unchanged")
	fs.StringVarP(&o.loadSnapshot, "load-snapshot", "l", "", "export the internal snapshot `SNAPSHOT_PARAM` read-only")
	fs.BoolVarP(&raw.nocache, "nocache", "n", false, "same as --cache=none")
	fs.StringVar(&o.cache, "cache", "", "cache `MODE`: none, writeback (default), writethrough, directsync or unsafe")
	fs.StringVar(&o.aio, "aio", "", "AIO `MODE` (accepted for compatibility; gonbd uses threads)")
	fs.StringVar(&o.discard, "discard", "", "discard `MODE`: ignore (default) or unmap")
	fs.StringVar(&o.detectZeroes, "detect-zeroes", "", "detect-zeroes `MODE`: off (default), on or unmap")
	fs.BoolVar(&o.imageOpts, "image-opts", false, "treat IMAGE as driver options, such as driver=memory,size=1G")

	// qemu-nbd flags that gonbd rejects with a reason.
	fs.StringVarP(&raw.connect, "connect", "c", "", "")
	fs.BoolVarP(&raw.disconnect, "disconnect", "d", false, "")
	fs.StringVarP(&raw.bitmap, "bitmap", "B", "", "")
	fs.StringVarP(&raw.trace, "trace", "T", "", "")
	fs.StringVar(&raw.selinux, "selinux-label", "", "")
	for _, name := range []string{"connect", "disconnect", "bitmap", "trace", "selinux-label"} {
		_ = fs.MarkHidden(name)
	}
	return fs
}

// parseFlags parses gonbd's arguments (without the program name) and
// checks every value. Errors are *errUsage with one line that names the
// value and what to do.
func parseFlags(args []string) (*options, error) {
	o := &options{}
	raw := &rawFlags{}
	fs := newFlagSet(o, raw)

	if err := fs.Parse(args); err != nil {
		return nil, usageErrorf("%v: see gonbd --help", err)
	}
	if o.help || o.version {
		return o, nil
	}
	// Like qemu-nbd, handle --object help before checking anything else,
	// so that it needs no IMAGE.
	for _, spec := range o.objects {
		var help strings.Builder
		if object.PrintHelp(&help, spec) {
			o.objectHelp = help.String()
			return o, nil
		}
	}
	if err := checkUnsupported(raw); err != nil {
		return nil, err
	}
	if err := o.parseNumbers(fs, raw); err != nil {
		return nil, err
	}
	if raw.nocache {
		if o.cache != "" && o.cache != "none" {
			return nil, usageErrorf("-n (--nocache) conflicts with --cache=%s: give only one", o.cache)
		}
		o.cache = "none"
	}
	if err := o.checkChoices(); err != nil {
		return nil, err
	}
	if err := o.checkImage(fs.Args()); err != nil {
		return nil, err
	}
	return o, nil
}

func checkUnsupported(raw *rawFlags) error {
	switch {
	case raw.connect != "" || raw.disconnect:
		return usageErrorf("-c/-d (kernel NBD device) is not supported by gonbd: serve with gonbd and attach with nbd-client")
	case raw.bitmap != "":
		return usageErrorf("-B %s: dirty bitmaps are not supported by gonbd: remove -B", raw.bitmap)
	case raw.trace != "":
		return usageErrorf("-T %s: QEMU tracing is not supported by gonbd: use -v for debug logs", raw.trace)
	case raw.selinux != "":
		return usageErrorf("--selinux-label is not supported by gonbd: label the socket with chcon")
	}
	return nil
}

func (o *options) parseNumbers(fs *flag.FlagSet, raw *rawFlags) error {
	port, err := strconv.Atoi(raw.port)
	if err != nil || port < 1 || port > 65535 {
		return usageErrorf("invalid port %q: use a number from 1 to 65535", raw.port)
	}
	o.port = port

	shared, err := strconv.Atoi(raw.shared)
	if err != nil || shared < 0 {
		return usageErrorf("invalid shared device number %q (-e): use 0 for unlimited or a positive count", raw.shared)
	}
	o.shared = shared

	// qemu-nbd parses -o with base 0 (strtoll), so 0x200 is accepted too.
	offset, err := strconv.ParseInt(raw.offset, 0, 64)
	if err != nil || offset < 0 {
		return usageErrorf("invalid offset %q (-o): use a byte count of 0 or more", raw.offset)
	}
	o.offset = offset

	limit, err := strconv.ParseUint(raw.handshakeLimit, 10, 32)
	if err != nil {
		return usageErrorf("invalid handshake limit %q: use a number of seconds (0 = no limit)", raw.handshakeLimit)
	}
	o.handshakeLimit = time.Duration(limit) * time.Second
	if limit == 0 {
		o.handshakeLimit = math.MaxInt64
	}

	o.addrSet = fs.Changed("port") || fs.Changed("bind")
	if o.socket != "" && o.addrSet {
		return usageErrorf("-k (--socket) conflicts with -p/-b: listen on a Unix socket or on TCP, not both")
	}
	return nil
}

func (o *options) checkChoices() error {
	choices := []struct {
		flag, value string
		valid       []string
	}{
		{"--cache", o.cache, []string{"none", "writeback", "writethrough", "directsync", "unsafe"}},
		{"--discard", o.discard, []string{"ignore", "off", "unmap", "on"}},
		{"--detect-zeroes", o.detectZeroes, []string{"off", "on", "unmap"}},
		{"--aio", o.aio, []string{"threads", "native", "io_uring"}},
		{"--tls", o.tls, []string{"off", "on", "require"}},
	}
	for _, c := range choices {
		if c.value == "" {
			continue
		}
		ok := false
		for _, v := range c.valid {
			ok = ok || c.value == v
		}
		if !ok {
			return usageErrorf("invalid %s mode %q: use one of %s", c.flag, c.value, strings.Join(c.valid, ", "))
		}
	}

	if o.detectZeroes == "unmap" && o.discard != "unmap" && o.discard != "on" {
		return usageErrorf("--detect-zeroes=unmap needs --discard=unmap: add --discard=unmap or use --detect-zeroes=on")
	}
	if o.tls != "" && o.tls != "off" && o.tlsCreds == "" && !o.list {
		return usageErrorf("--tls=%s needs --tls-creds: add --object tls-creds-x509,... and --tls-creds ID", o.tls)
	}
	if o.tlsAuthz != "" && o.tlsCreds == "" {
		return usageErrorf("--tls-authz needs --tls-creds: add --tls-creds ID")
	}
	if len(o.exportName) > proto.MaxStringLen {
		return usageErrorf("export name of %d bytes is too long (-x): the NBD protocol allows at most %d", len(o.exportName), proto.MaxStringLen)
	}
	if len(o.description) > proto.MaxStringLen {
		return usageErrorf("description of %d bytes is too long (-D): the NBD protocol allows at most %d", len(o.description), proto.MaxStringLen)
	}
	if o.bind != "" && net.ParseIP(strings.Trim(o.bind, "[]")) == nil && !validHostname(o.bind) {
		return usageErrorf("invalid bind address %q (-b): use an IP address such as 127.0.0.1 or ::1", o.bind)
	}
	return nil
}

func validHostname(s string) bool {
	return s != "" && !strings.ContainsAny(s, " /:[]")
}

func (o *options) checkImage(args []string) error {
	if o.list {
		if len(args) > 0 {
			return usageErrorf("-L takes no IMAGE argument, but %q was given: remove it", args[0])
		}
		return nil
	}

	switch len(args) {
	case 0:
		return usageErrorf("missing IMAGE argument: give an image file, such as gonbd disk.img")
	case 1:
		o.image = args[0]
	default:
		return usageErrorf("too many arguments %q: give one IMAGE", strings.Join(args[1:], " "))
	}

	if o.imageOpts && o.format != "" {
		return usageErrorf("--image-opts and -f (--format) are mutually exclusive: give driver=%s in IMAGE", o.format)
	}
	if o.loadSnapshot != "" && o.snapshot {
		return usageErrorf("-l (--load-snapshot) and -s (--snapshot) are mutually exclusive: give only one")
	}
	if o.loadSnapshot != "" {
		o.readOnly = true // qemu-nbd exports a loaded snapshot read-only
	}
	return nil
}
