package tlscreds

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
)

// maxPSKKeyBytes is the largest key accepted, psktool's --keysize limit
// (512 bytes).
const maxPSKKeyBytes = 512

// pskEntry is one line of a keys.psk file.
type pskEntry struct {
	identity string
	key      []byte
	line     int
}

// parseKeysFile parses a keys.psk file in psktool's format: one
// "username:hexkey" per line. Empty lines are skipped. A username that
// starts with '#' is hex-encoded after the '#', as GnuTLS reads it, which
// allows usernames containing ':'. name is the file name for errors; no
// error or log message contains a key.
func parseKeysFile(name string, r io.Reader) ([]pskEntry, error) {
	var entries []pskEntry
	seen := map[string]int{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64<<10)
	lineNo := 0
	for sc.Scan() {
		lineNo++
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		e, err := parseKeysLine(line)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, lineNo, err)
		}
		if first, dup := seen[e.identity]; dup {
			return nil, fmt.Errorf("%s:%d: username %q already defined on line %d: remove one of the lines",
				name, lineNo, e.identity, first)
		}
		seen[e.identity] = lineNo
		e.line = lineNo
		entries = append(entries, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return entries, nil
}

func parseKeysLine(line string) (pskEntry, error) {
	user, hexKey, ok := strings.Cut(line, ":")

	if !ok {
		return pskEntry{}, fmt.Errorf("missing ':' between username and key: expected username:hexkey, as psktool writes")
	}
	if user == "" {
		return pskEntry{}, fmt.Errorf("empty username: expected username:hexkey")
	}
	if strings.HasPrefix(user, "#") {
		decoded, err := hex.DecodeString(user[1:])
		if err != nil || len(decoded) == 0 {
			return pskEntry{}, fmt.Errorf("username %q starts with '#' but is not hex after it", user)
		}
		user = string(decoded)
	}
	if len(user) > 65535 {
		return pskEntry{}, fmt.Errorf("username of %d bytes, max 65535", len(user))
	}

	hexKey = strings.TrimSpace(hexKey)
	if hexKey == "" {
		return pskEntry{}, fmt.Errorf("empty key for username %q: expected username:hexkey", user)
	}
	// The error from hex.DecodeString quotes the offending byte, which
	// would put part of the key in a log, so it is not wrapped.
	key, err := hex.DecodeString(hexKey)
	if err != nil {
		return pskEntry{}, fmt.Errorf("key for username %q is not an even number of hex digits", user)
	}
	if len(key) > maxPSKKeyBytes {
		return pskEntry{}, fmt.Errorf("key for username %q has %d bytes, max %d", user, len(key), maxPSKKeyBytes)
	}
	return pskEntry{identity: user, key: key}, nil
}
