package nbdtest

import (
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/gonbd/gonbd/tlscreds"
	"github.com/gonbd/gonbd/tlscreds/gen"
	"github.com/hashicorp/go-hclog"
)

// credentials are the generated TLS files of one server.
type credentials struct {
	server tlscreds.Server
	// clientDir is the directory clients read: the tls-creds-psk dir
	// with keys.psk, or a tls-creds-x509 dir with ca-cert.pem,
	// client-cert.pem and client-key.pem.
	clientDir string
}

// x509ClientFiles are the files copied from the generated x509 directory
// into the client directory, so that clients never see the server or CA
// key.
var x509ClientFiles = []string{tlscreds.FileCACert, tlscreds.FileClientCert, tlscreds.FileClientKey}

// newCredentials generates credentials of kind k under dir.
func newCredentials(k tlsKind, dir string, log hclog.Logger) (*credentials, error) {
	switch k {
	case tlsPSK:
		return newPSKCredentials(filepath.Join(dir, "psk"), log)
	case tlsX509:
		return newX509Credentials(filepath.Join(dir, "x509-server"), filepath.Join(dir, "x509-client"), log)
	}
	return nil, nil
}

func newPSKCredentials(dir string, log hclog.Logger) (*credentials, error) {
	if _, err := gen.PSK(dir, PSKUsername, false); err != nil {
		return nil, fmt.Errorf("generate PSK: %w", err)
	}
	creds, err := tlscreds.LoadPSK(tlscreds.PSKConfig{Dir: dir, Endpoint: tlscreds.EndpointServer, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("load generated PSK: %w", err)
	}
	return &credentials{server: creds, clientDir: dir}, nil
}

func newX509Credentials(serverDir, clientDir string, log hclog.Logger) (*credentials, error) {
	err := gen.X509(gen.X509Options{
		Dir:       serverDir,
		Hostnames: []string{"localhost"},
		IPs:       []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		Days:      1,
	})
	if err != nil {
		return nil, fmt.Errorf("generate x509 credentials: %w", err)
	}
	if err := os.MkdirAll(clientDir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", clientDir, err)
	}
	for _, name := range x509ClientFiles {
		if err := copyFile(filepath.Join(serverDir, name), filepath.Join(clientDir, name)); err != nil {
			return nil, err
		}
	}

	creds, err := tlscreds.LoadX509(tlscreds.X509Config{
		Dir:         serverDir,
		Endpoint:    tlscreds.EndpointServer,
		VerifyPeer:  true,
		SanityCheck: true,
		Logger:      log,
	})
	if err != nil {
		return nil, fmt.Errorf("load generated x509 credentials: %w", err)
	}
	return &credentials{server: creds, clientDir: clientDir}, nil
}

// copyFile copies src to dst, keeping the permission bits.
func copyFile(src, dst string) error {
	fi, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	data, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if err := os.WriteFile(dst, data, fi.Mode().Perm()); err != nil {
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	return nil
}
