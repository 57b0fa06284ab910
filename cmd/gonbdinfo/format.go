package main

import (
	"fmt"
	"io"
	"strings"
)

// humanSize formats a byte count the way nbdinfo does: as a whole number
// of the largest power-of-1024 unit that divides it exactly ("64M",
// "1344K"). The flag reports whether a unit was used.
func humanSize(bytes uint64) (string, bool) {
	units := []string{"", "K", "M", "G", "T", "P", "E"}
	i := 0
	if bytes != 0 {
		for bytes%1024 == 0 && i < len(units)-1 {
			bytes /= 1024
			i++
		}
	}
	return fmt.Sprintf("%d%s", bytes, units[i]), i > 0
}

// writeJSONString writes s as a JSON string with nbdinfo's escaping:
// backslash, quote and control characters are escaped, other bytes are
// written as they are.
func writeJSONString(w io.Writer, s string) {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' || c == '"':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < ' ':
			fmt.Fprintf(&b, "\\u%04x", c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	io.WriteString(w, b.String())
}

func jsonBool(b bool) string {
	if b {
		return "true"
	}
	return "false"
}
