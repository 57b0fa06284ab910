// Package object parses QEMU's --object arguments (the QemuOpts
// "TYPE,id=ID,key=value" form and the JSON form) into typed objects and
// keeps them in a Registry by id, so that --tls-creds, --tls-authz and
// passwordid= can refer to them. It reads credential file names but no
// certificates or keys, and it uses no sockets.
package object

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
)

// QOM type names, as QEMU spells them in --object.
const (
	TypeTLSCredsX509  = "tls-creds-x509"
	TypeTLSCredsPSK   = "tls-creds-psk"
	TypeTLSCredsAnon  = "tls-creds-anon"
	TypeSecret        = "secret"
	TypeAuthzSimple   = "authz-simple"
	TypeAuthzList     = "authz-list"
	TypeAuthzListFile = "authz-list-file"
)

// Values of a TLS credentials object's endpoint property.
const (
	EndpointServer = "server"
	EndpointClient = "client"
)

// Object is one object created by --object.
type Object interface {
	// QOMType returns the object's type name, such as "tls-creds-psk".
	QOMType() string
}

// TLSCreds is a TLS credentials object that can secure a connection:
// *TLSCredsX509 or *TLSCredsPSK. Callers pick the implementation with a
// type switch.
type TLSCreds interface {
	Object
	tlsCredsEndpoint() string
}

// Authorizer decides whether a TLS identity (a PSK username or an x509
// distinguished name) may connect. It has the method set of
// nbd.Authorizer.
type Authorizer interface {
	Object
	IsAllowed(identity string) (bool, error)
}

// Error is an --object mistake. Its message is one line that names the
// object, the property and the bad value (never a secret's value) and
// gives the fix.
type Error struct {
	ID       string // object id, "" when the argument has none yet
	Type     string // QOM type, "" when unknown
	Property string // property name, "" when the mistake concerns the whole object
	Msg      string // what is wrong and how to fix it
	Err      error  // underlying error, such as a file system error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("--object")
	switch {
	case e.ID != "" && e.Type != "":
		fmt.Fprintf(&b, " %s (%s)", e.ID, e.Type)
	case e.ID != "":
		fmt.Fprintf(&b, " %s", e.ID)
	case e.Type != "":
		fmt.Fprintf(&b, " %s", e.Type)
	}
	if e.Property != "" {
		fmt.Fprintf(&b, ": property %s", e.Property)
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	// Values and paths from the command line may contain line breaks,
	// and the message must stay one line.
	return strings.NewReplacer("\n", `\n`, "\r", `\r`).Replace(b.String())
}

func (e *Error) Unwrap() error { return e.Err }

// errorf returns an *Error about the object c builds.
func (c *creation) errorf(property, format string, args ...any) *Error {
	return &Error{ID: c.id, Type: c.typ, Property: property, Msg: fmt.Sprintf(format, args...)}
}

// maxFileSize bounds the files objects read (secrets, keys.psk, authz
// lists), so that a path such as /dev/zero fails instead of exhausting
// memory. Real files of these kinds are a few kilobytes.
const maxFileSize = 16 << 20

// readFile reads a whole file of at most maxFileSize bytes.
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()

	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, &fs.PathError{Op: "read", Path: path, Err: err}
	}
	if len(data) > maxFileSize {
		return nil, &fs.PathError{Op: "read", Path: path, Err: fmt.Errorf("file is larger than %d MiB", maxFileSize>>20)}
	}
	return data, nil
}
