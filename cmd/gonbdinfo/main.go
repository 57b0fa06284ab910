// Command gonbdinfo prints information about an NBD server and its
// exports, given an NBD URI. Its options and output follow nbdinfo 1.14
// (libnbd), so scripts written for nbdinfo work with it.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/gonbd/gonbd/nbd"
	"github.com/hashicorp/go-hclog"
	flag "github.com/spf13/pflag"
)

const version = "0.1.0"

// Exit codes, as nbdinfo's: --can and --is exit 2 for false.
const (
	exitOK    = 0
	exitError = 1
	exitFalse = 2
)

// options are the parsed command line.
type options struct {
	json      bool
	list      bool
	size      bool
	can       string
	mapCtx    string
	totals    bool
	content   bool
	noContent bool
	objects   []string
	tlsCreds  string
	verbose   bool
	uri       string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func usage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprint(w, `Display information and metadata about NBD servers and exports:

    gonbdinfo [--json] NBD-URI
    gonbdinfo --size [--json] NBD-URI
    gonbdinfo --is read-only|rotational NBD-URI
    gonbdinfo --can cache|connect|df|fast-zero|flush|fua|multi-conn|trim|zero|... NBD-URI
    gonbdinfo --map[=CONTEXT] [--totals] [--json] NBD-URI
    gonbdinfo -L|--list [--json] NBD-URI

Examples:

    gonbdinfo nbd://localhost
    gonbdinfo "nbd+unix:///?socket=/tmp/unixsock"
    gonbdinfo --map nbd://localhost/disk
    gonbdinfo --list --json nbds://localhost?tls-certificates=/etc/pki/qemu

Options:
`)
	fs.SetOutput(w)
	fs.PrintDefaults()
}

// parseArgs parses the command line. It returns a nil *options, and the
// exit code, when the run ends here (--help, --version, bad usage).
func parseArgs(args []string, stdout, stderr io.Writer) (*options, int) {
	var o options
	var showVersion, help bool
	fs := flag.NewFlagSet("gonbdinfo", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.BoolVar(&o.json, "json", false, "print JSON instead of text")
	fs.BoolVarP(&o.list, "list", "L", false, "list every export on the server")
	fs.BoolVar(&o.size, "size", false, "print only the export size in bytes")
	fs.StringVar(&o.can, "can", "", "exit 0 if the export can do `FEATURE`, 2 if not")
	fs.StringVar(&o.can, "is", "", "exit 0 if the export is `PROPERTY` (read-only, rotational), 2 if not")
	fs.StringVar(&o.mapCtx, "map", "", "print the block status map of meta context `CONTEXT` (default base:allocation)")
	fs.Lookup("map").NoOptDefVal = "base:allocation"
	fs.BoolVar(&o.totals, "totals", false, "with --map, print the total size of each extent type")
	fs.BoolVar(&o.totals, "total", false, "same as --totals")
	fs.BoolVar(&o.content, "content", false, "describe the first bytes of each export with file(1) (default without --list)")
	fs.BoolVar(&o.noContent, "no-content", false, "do not run file(1) on the export")
	fs.StringArrayVar(&o.objects, "object", nil, "define an object such as tls-creds-x509 or tls-creds-psk, as in QEMU (`TYPE,id=ID,...`)")
	fs.StringVar(&o.tlsCreds, "tls-creds", "", "use the TLS credentials object `ID` defined with --object")
	fs.BoolVarP(&o.verbose, "verbose", "v", false, "log the negotiation to stderr")
	fs.BoolVarP(&showVersion, "version", "V", false, "print the version and exit")
	fs.BoolVarP(&help, "help", "h", false, "print this help and exit")
	var colour bool
	for _, name := range []string{"color", "colour", "colors", "colours", "no-color", "no-colour", "no-colors", "no-colours"} {
		fs.BoolVar(&colour, name, false, "accepted for nbdinfo compatibility; gonbdinfo never colours")
		_ = fs.MarkHidden(name)
	}
	_ = fs.MarkHidden("total")

	if err := fs.Parse(args); err != nil {
		fmt.Fprintf(stderr, "gonbdinfo: %v\nRun gonbdinfo --help for the options.\n", err)
		return nil, exitError
	}
	switch {
	case help:
		usage(stdout, fs)
		return nil, exitOK
	case showVersion:
		fmt.Fprintf(stdout, "gonbdinfo %s\n", version)
		return nil, exitOK
	case printObjectHelp(stdout, o.objects):
		return nil, exitOK
	case fs.NArg() != 1:
		fmt.Fprintln(stderr, "gonbdinfo: expected one NBD URI, such as nbd://localhost/export; run gonbdinfo --help")
		return nil, exitError
	}
	o.uri = fs.Arg(0)

	modes := 0
	for _, set := range []bool{o.list, o.can != "", o.mapCtx != "", o.size} {
		if set {
			modes++
		}
	}
	switch {
	case modes > 1:
		fmt.Fprintln(stderr, "gonbdinfo: --list, --can/--is, --map and --size cannot be used together; pick one")
		return nil, exitError
	case o.content && o.noContent:
		fmt.Fprintln(stderr, "gonbdinfo: --content and --no-content cannot be used together; pick one")
		return nil, exitError
	case o.totals && o.mapCtx == "":
		fmt.Fprintln(stderr, "gonbdinfo: --totals only works with --map; add --map")
		return nil, exitError
	}
	return &o, exitOK
}

// probeContent reports whether to describe the export content, as
// nbdinfo decides it.
func (o *options) probeContent() bool {
	probe := !o.list
	if o.content {
		probe = true
	}
	if o.noContent || o.can != "" || o.mapCtx != "" {
		probe = false
	}
	return probe
}

// run runs gonbdinfo and returns its exit code. Output is collected and
// written at the end, so an error prints nothing on stdout.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, code := parseArgs(args, stdout, stderr)
	if o == nil {
		return code
	}
	logger := hclog.NewNullLogger()
	if o.verbose {
		logger = hclog.New(&hclog.LoggerOptions{Name: "gonbdinfo", Level: hclog.Debug, Output: stderr})
	}

	dialOpts := []nbd.DialOption{nbd.WithLogger(logger)}
	if o.tlsCreds != "" {
		creds, err := tlsCredsFromObjects(o.objects, o.tlsCreds, logger)
		if err != nil {
			fmt.Fprintf(stderr, "gonbdinfo: %v\n", err)
			return exitError
		}
		dialOpts = append(dialOpts, nbd.WithTLS(creds))
	} else if len(o.objects) > 0 {
		fmt.Fprintln(stderr, "gonbdinfo: --object without --tls-creds has no effect; name the credentials with --tls-creds ID")
		return exitError
	}

	var out bytes.Buffer
	i := &info{opts: o, out: &out, stderr: stderr, dialOpts: dialOpts}
	code, err := i.dispatch(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "gonbdinfo: %v\n", err)
		return exitError
	}
	if _, err := stdout.Write(out.Bytes()); err != nil {
		fmt.Fprintf(stderr, "gonbdinfo: write output: %v\n", err)
		return exitError
	}
	return code
}

// info holds one gonbdinfo run.
type info struct {
	opts     *options
	out      *bytes.Buffer
	stderr   io.Writer
	dialOpts []nbd.DialOption
}

func (i *info) dispatch(ctx context.Context) (int, error) {
	u, err := nbd.ParseURI(i.opts.uri)
	if err != nil {
		return exitError, err
	}
	switch {
	case i.opts.size:
		return i.doSize(ctx)
	case i.opts.can != "":
		return i.doCan(ctx)
	case i.opts.mapCtx != "":
		return i.doMap(ctx)
	default:
		return i.doShow(ctx, u)
	}
}

func (i *info) doSize(ctx context.Context) (int, error) {
	c, err := nbd.Dial(ctx, i.opts.uri, i.dialOpts...)
	if err != nil {
		return exitError, err
	}
	defer c.Close()
	fmt.Fprintf(i.out, "%d\n", c.Size())
	return exitOK, nil
}

var errUnknownFeature = errors.New("unknown --can or --is option")
