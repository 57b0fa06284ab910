// Command gonbd-creds creates TLS credentials that gonbd and QEMU both
// load: an x509 CA with server and client certificates (tls-creds-x509)
// or a psktool-format key (tls-creds-psk).
package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"

	"github.com/gonbd/gonbd/tlscreds/gen"
	flag "github.com/spf13/pflag"
)

const usage = `Usage:
  gonbd-creds x509 --dir DIR --hostname NAME [--hostname NAME...] [--ip ADDR...]
                   [--client-name CN] [--days N] [--force]
  gonbd-creds psk --dir DIR --username NAME [--force]

x509 writes ca-cert.pem, ca-key.pem, server-cert.pem, server-key.pem,
client-cert.pem and client-key.pem to DIR, which then works as both an
endpoint=server and an endpoint=client tls-creds-x509 directory.
psk adds a random 256-bit key for NAME to DIR/keys.psk (psktool's format).
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	if args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, usage)
		return 0
	}
	var err error
	switch args[0] {
	case "x509":
		err = runX509(args[1:], stdout, stderr)
	case "psk":
		err = runPSK(args[1:], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "gonbd-creds: unknown command %q: use x509 or psk\n\n%s", args[0], usage)
		return 2
	}
	if err == errUsage {
		return 2
	}
	if err == errHelp {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "gonbd-creds: %v\n", err)
		return 1
	}
	return 0
}

var (
	errUsage = errors.New("usage")      // reported already: exit 2
	errHelp  = errors.New("help shown") // --help: exit 0
)

// parseSubcommand parses a subcommand's flags. --help prints the usage and
// the flags to stdout; a flag error prints them to stderr.
func parseSubcommand(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) error {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := fs.Parse(args)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprintf(stdout, "%s\nFlags of %s:\n%s", usage, fs.Name(), fs.FlagUsages())
		return errHelp
	}
	fmt.Fprintf(stderr, "%s: %v\nFlags of %s:\n%s", fs.Name(), err, fs.Name(), fs.FlagUsages())
	return errUsage
}

// checkHostname returns an error unless name is a DNS name that a server
// certificate can carry.
func checkHostname(name string) error {
	if net.ParseIP(name) != nil {
		return fmt.Errorf("invalid --hostname %q: it is an IP address, give it with --ip", name)
	}
	if !validDNSName(name) {
		return fmt.Errorf("invalid --hostname %q: give a DNS name such as nbd.example.com", name)
	}
	return nil
}

// validDNSName reports whether name is labels of letters, digits, '-' and
// '_' joined by dots, with an optional '*' at the start of the first label
// (a wildcard) and an optional final dot.
func validDNSName(name string) bool {
	if name == "" || len(name) > 253 {
		return false
	}
	for i, label := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		if i == 0 && strings.HasPrefix(label, "*") {
			label = label[1:]
			if label == "" {
				continue
			}
		}
		if label == "" || len(label) > 63 {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

func runX509(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("gonbd-creds x509", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory to write the credentials to (created with mode 0700)")
	hostnames := fs.StringArray("hostname", nil, "DNS name of the server, repeatable; the first is also the certificate's CN")
	ips := fs.StringArray("ip", nil, "IP address of the server, repeatable")
	clientName := fs.String("client-name", "gonbd-client", "CN of the client certificate")
	days := fs.Int("days", 365, "validity of the certificates in days")
	force := fs.Bool("force", false, "replace existing files")
	if err := parseSubcommand(fs, args, stdout, stderr); err != nil {
		return err
	}
	if *dir == "" {
		return fmt.Errorf("missing --dir: give the directory to write to")
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	for _, name := range *hostnames {
		if err := checkHostname(name); err != nil {
			return err
		}
	}
	opts := gen.X509Options{Dir: *dir, Hostnames: *hostnames, ClientName: *clientName, Days: *days, Force: *force}
	for _, s := range *ips {
		ip := net.ParseIP(s)
		if ip == nil {
			return fmt.Errorf("invalid --ip %q: give an IPv4 or IPv6 address", s)
		}
		opts.IPs = append(opts.IPs, ip)
	}
	if len(opts.Hostnames) == 0 && len(opts.IPs) == 0 {
		return fmt.Errorf("missing --hostname: give the server's host name (or --ip)")
	}
	if *days <= 0 {
		return fmt.Errorf("invalid --days %d: give a positive number of days", *days)
	}
	if err := gen.X509(opts); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote x509 credentials to %s\n", *dir)
	return nil
}

func runPSK(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("gonbd-creds psk", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory of keys.psk (created with mode 0700)")
	username := fs.String("username", "", "PSK identity to add (QEMU clients default to \"qemu\")")
	force := fs.Bool("force", false, "replace an existing key for the user name")
	if err := parseSubcommand(fs, args, stdout, stderr); err != nil {
		return err
	}
	if *dir == "" {
		return fmt.Errorf("missing --dir: give the directory of keys.psk")
	}
	if *username == "" {
		return fmt.Errorf("missing --username: give the PSK identity")
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if _, err := gen.PSK(*dir, *username, *force); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "added a key for %s to %s/%s\n", *username, *dir, gen.PSKFile)
	return nil
}
