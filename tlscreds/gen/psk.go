package gen

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// PSKFile is the key file name inside a tls-creds-psk directory.
const PSKFile = "keys.psk"

// PSKKeySize is the size of generated keys: 256 bits, as psktool's
// default in GnuTLS 3.7.
const PSKKeySize = 32

// PSK adds a random 256-bit key for username to dir/keys.psk in psktool's
// "username:hexkey" format, creating dir with mode 0700 and the file with
// mode 0600. An existing key for username is replaced only with force.
// It returns the new key.
func PSK(dir, username string, force bool) ([]byte, error) {
	if username == "" || strings.ContainsAny(username, ":\n\r") {
		return nil, fmt.Errorf("invalid PSK username %q: it must be non-empty and contain no colon or newline", username)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	path := filepath.Join(dir, PSKFile)

	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	var out bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(old))
	for sc.Scan() {
		line := sc.Text()
		if name, _, ok := strings.Cut(line, ":"); ok && name == username {
			if !force {
				return nil, fmt.Errorf("%s already has a key for %q: use --force to replace it", path, username)
			}
			continue
		}
		out.WriteString(line)
		out.WriteByte('\n')
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}

	key := make([]byte, PSKKeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate PSK: %w", err)
	}
	fmt.Fprintf(&out, "%s:%s\n", username, hex.EncodeToString(key))
	if err := writeFileAtomic(path, out.Bytes(), 0o600); err != nil {
		return nil, err
	}
	return key, nil
}
