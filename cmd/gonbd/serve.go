package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gonbd/gonbd/export"
	"github.com/gonbd/gonbd/nbd"
	"github.com/gonbd/gonbd/object"
	"github.com/hashicorp/go-hclog"
	flag "github.com/spf13/pflag"
)

// shutdownTimeout bounds how long SIGTERM waits for in-flight requests and
// the final flush.
const shutdownTimeout = 30 * time.Second

// listExports runs -L; see list.go.
var listExports = listRemoteExports

// run runs gonbd with args and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args)
	if err != nil {
		fmt.Fprintf(stderr, "gonbd: %v\n", err)
		return 1
	}
	switch {
	case o.help:
		printUsage(stdout)
		return 0
	case o.version:
		fmt.Fprintf(stdout, "gonbd %s\n", version)
		return 0
	case o.objectHelp != "":
		fmt.Fprint(stdout, o.objectHelp)
		return 0
	case o.list:
		return listExports(o, stdout, stderr)
	case printObjectHelp(o, stdout):
		return 0
	case o.fork && !isForkChild():
		return forkServer(stderr)
	}

	log := hclog.New(&hclog.LoggerOptions{
		Name:   "gonbd",
		Level:  hclog.Info,
		Output: stderr,
	})
	if o.verbose {
		log.SetLevel(hclog.Debug)
	}

	if err := serve(o, log); err != nil {
		var usage *errUsage
		if errors.As(err, &usage) {
			fmt.Fprintf(stderr, "gonbd: %v\n", err)
		} else {
			log.Error("server failed", "error", err)
		}
		return 1
	}
	return 0
}

// printObjectHelp prints help for the first --object that requests it
// ("--object help", "--object tls-creds-x509,help") and reports whether
// one did.
func printObjectHelp(o *options, stdout io.Writer) bool {
	for _, spec := range o.objects {
		if object.PrintHelp(stdout, spec) {
			return true
		}
	}
	return false
}

// serve opens the export, listens and serves until the last client leaves
// (without -t) or SIGTERM or SIGINT arrives.
func serve(o *options, log hclog.Logger) error {
	tls, err := buildTLS(o, log)
	if err != nil {
		return err
	}
	backend, driver, err := openExport(o)
	if err != nil {
		return err
	}
	defer closeBackend(backend, log)

	size, err := backend.Size()
	if err != nil {
		return fmt.Errorf("size of %s: %w", describeImage(o), err)
	}
	srv, err := nbd.NewServer(serverConfig(o, backend, tls, log))
	if err != nil {
		return fmt.Errorf("configure server: %w", err)
	}

	l, err := listen(o)
	if err != nil {
		return err
	}
	defer l.Close()

	if o.pidFile != "" {
		release, err := writePIDFile(o.pidFile)
		if err != nil {
			return err
		}
		defer release()
	}

	log.Info("serving", "address", describeAddr(l, o.exportName), "export", o.exportName,
		"image", describeImage(o), "driver", driver, "size", size, "flags", describeFlags(o))
	if driver == "raw" && o.format == "" && !o.imageOpts && !o.readOnly {
		log.Warn("image format probed as raw: writes of the qcow2 magic at offset 0 are rejected, give -f raw to allow them",
			"image", o.image)
	}
	notifyForkParent()

	signaled, shutdownDone := handleSignals(srv, log)
	err = srv.Serve(context.Background(), l)

	select {
	case <-signaled:
		// The signal's shutdown closed the listener: wait for it rather
		// than start a second one.
		<-shutdownDone
	default:
		// The last client left (or Serve failed): flush before exiting.
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		_ = srv.Shutdown(ctx)
		cancel()
	}
	if err != nil && !errors.Is(err, nbd.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	log.Info("stopped")
	return nil
}

// handleSignals shuts the server down on SIGTERM or SIGINT. The signaled
// channel is closed when the signal arrives, before the shutdown starts,
// and done once that shutdown has finished.
func handleSignals(srv *nbd.Server, log hclog.Logger) (signaled, done <-chan struct{}) {
	signaledCh, doneCh := make(chan struct{}), make(chan struct{})
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		sig := <-sigs
		signal.Stop(sigs)
		close(signaledCh)
		log.Info("shutting down", "signal", sig.String())
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			log.Error("shutdown failed", "error", err)
		}
		close(doneCh)
	}()
	return signaledCh, doneCh
}

// closeBackend flushes and closes the backend on exit.
func closeBackend(b export.Backend, log hclog.Logger) {
	if err := b.Sync(); err != nil {
		log.Error("flush failed", "error", err)
	}
	if c, ok := b.(io.Closer); ok {
		if err := c.Close(); err != nil {
			log.Error("close failed", "error", err)
		}
	}
}

// describeFlags lists the settings that change what clients see, for the
// start log line.
func describeFlags(o *options) string {
	var flags []string
	if o.readOnly {
		flags = append(flags, "read-only")
	}
	if o.persistent {
		flags = append(flags, "persistent")
	}
	if o.shared == 0 {
		flags = append(flags, "shared=unlimited")
	} else {
		flags = append(flags, "shared="+strconv.Itoa(o.shared))
	}
	if o.allocationDepth {
		flags = append(flags, "allocation-depth")
	}
	if o.cache != "" {
		flags = append(flags, "cache="+o.cache)
	}
	if o.discard != "" {
		flags = append(flags, "discard="+o.discard)
	}
	if o.detectZeroes != "" {
		flags = append(flags, "detect-zeroes="+o.detectZeroes)
	}
	if o.tlsCreds != "" {
		mode := o.tls
		if mode == "" {
			mode = "require"
		}
		flags = append(flags, "tls="+mode)
	}
	return strings.Join(flags, ",")
}

// printUsage writes --help.
func printUsage(w io.Writer) {
	fs := newFlagSet(&options{}, &rawFlags{})
	fmt.Fprintf(w, `Usage: gonbd [OPTIONS] IMAGE
  or:  gonbd -L [OPTIONS]
Serve a disk image over NBD (Network Block Device) with qemu-nbd's options.

%s
Image formats (-f, or driver= with --image-opts):
`, flagUsages(fs))
	for _, name := range export.Names() {
		p, _ := export.Lookup(name)
		fmt.Fprintf(w, "  %-8s %s\n", name, p.Description)
	}
}

// flagUsages formats the visible flags as qemu-nbd --help does:
// "-p, --port=PORT  text (default 10809)".
func flagUsages(fs *flag.FlagSet) string {
	var b strings.Builder
	fs.VisitAll(func(f *flag.Flag) {
		if f.Hidden {
			return
		}
		name, usage := flag.UnquoteUsage(f)
		left := "    "
		if f.Shorthand != "" {
			left = "-" + f.Shorthand + ", "
		}
		left += "--" + f.Name
		if f.Value.Type() != "bool" {
			if name == "string" || name == "stringArray" {
				name = "VALUE"
			}
			left += "=" + name
		}
		if f.Value.Type() == "string" && f.DefValue != "" {
			usage += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(&b, "  %-30s %s\n", left, usage)
	})
	return b.String()
}
