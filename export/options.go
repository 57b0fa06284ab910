package export

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// CommonKeys are the option keys that qemu-nbd's flags set for any driver
// (-r, --cache, --discard, --detect-zeroes, --aio, and multi-conn from -e).
// A driver that has no use for one accepts and ignores it, as QEMU's block
// layer does.
var CommonKeys = []string{"read-only", "cache", "discard", "detect-zeroes", "aio", "multi-conn"}

// ParseOptions parses QEMU's key=value,key=value option syntax, as in
// --image-opts. A doubled comma stands for a literal comma in a value, and
// a bare key with no "=" is an error. A key given twice keeps the last value,
// as QemuOpts does.
func ParseOptions(s string) (Options, error) {
	opts := Options{}
	if s == "" {
		return opts, nil
	}

	for _, field := range splitOptions(s) {
		key, value, ok := strings.Cut(field, "=")
		if !ok {
			return nil, fmt.Errorf("invalid option %q: expected key=value", field)
		}
		if key == "" {
			return nil, fmt.Errorf("invalid option %q: empty key before '='", field)
		}
		opts[key] = value
	}
	return opts, nil
}

// splitOptions splits s at single commas, turning ",," into ",".
func splitOptions(s string) []string {
	var fields []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != ',' {
			cur.WriteByte(s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] == ',' {
			cur.WriteByte(',')
			i++
			continue
		}
		fields = append(fields, cur.String())
		cur.Reset()
	}
	return append(fields, cur.String())
}

// Check returns an error naming the first key (in sorted order) that is
// neither in keys nor in CommonKeys.
func (o Options) Check(driver string, keys []string) error {
	allowed := map[string]bool{}
	for _, k := range keys {
		allowed[k] = true
	}
	for _, k := range CommonKeys {
		allowed[k] = true
	}

	var unknown []string
	for k := range o {
		if !allowed[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	return fmt.Errorf("%s: unknown option %q (valid: %s)", driver, unknown[0], strings.Join(keys, ", "))
}

// Bool returns the value of a QEMU boolean option: on/off, yes/no,
// true/false, or def when the key is absent.
func (o Options) Bool(key string, def bool) (bool, error) {
	v, ok := o[key]
	if !ok {
		return def, nil
	}
	switch v {
	case "on", "yes", "true":
		return true, nil
	case "off", "no", "false":
		return false, nil
	}
	return false, fmt.Errorf("invalid %s=%q: use on or off", key, v)
}

// MultiConn returns the multi-conn option (default on): whether a backend
// that supports several connections reports it (MultiConner), so that the
// server advertises NBD_FLAG_CAN_MULTI_CONN. gonbd sets multi-conn=off for
// -e 1, as qemu-nbd 7.2 advertises multi-conn only when -e is not 1: a
// client that sees the flag opens several connections, and the server
// would not accept the second.
// NOTE: this is a property of the server's connection limit, which the
// nbd server could apply itself; the option lets cmd/gonbd apply it.
func (o Options) MultiConn() (bool, error) {
	return o.Bool("multi-conn", true)
}

// Size returns the value of a size option parsed by ParseSize, or def when
// the key is absent.
func (o Options) Size(key string, def int64) (int64, error) {
	v, ok := o[key]
	if !ok {
		return def, nil
	}
	n, err := ParseSize(v)
	if err != nil {
		return 0, fmt.Errorf("invalid %s=%q: %w", key, v, err)
	}
	return n, nil
}

// Choice returns the value of key, which must be one of choices, or def
// when the key is absent.
func (o Options) Choice(key, def string, choices ...string) (string, error) {
	v, ok := o[key]
	if !ok {
		return def, nil
	}
	for _, c := range choices {
		if v == c {
			return v, nil
		}
	}
	return "", fmt.Errorf("invalid %s=%q: use one of %s", key, v, strings.Join(choices, ", "))
}

// sizeUnits are QEMU's size suffixes, powers of 1024 (1G is 1 GiB).
var sizeUnits = map[byte]int64{
	'b': 1,
	'k': 1 << 10,
	'm': 1 << 20,
	'g': 1 << 30,
	't': 1 << 40,
	'p': 1 << 50,
	'e': 1 << 60,
}

// ParseSize parses a byte count the way QEMU does for size= options: a
// decimal number with an optional suffix B, K, M, G, T, P or E (either case,
// powers of 1024). A fraction ("1.5G") needs a suffix of K or more, and the
// result must fit in an int64.
func ParseSize(s string) (int64, error) {
	if s == "" {
		return 0, fmt.Errorf("empty size: use a number with an optional K, M, G or T suffix")
	}

	num := s
	unit := int64(1)
	hasUnit := false
	last := s[len(s)-1]
	if m, ok := sizeUnits[last|0x20]; ok && (last < '0' || last > '9') {
		num, unit, hasUnit = s[:len(s)-1], m, true
	}

	whole, frac, hasFrac := strings.Cut(num, ".")
	if whole == "" || !allDigits(whole) || (hasFrac && (frac == "" || !allDigits(frac))) {
		return 0, fmt.Errorf("invalid size %q: use a number with an optional K, M, G or T suffix", s)
	}
	if hasFrac && (!hasUnit || unit == 1) {
		return 0, fmt.Errorf("invalid size %q: a fraction needs a K, M, G or T suffix", s)
	}

	w, err := strconv.ParseUint(whole, 10, 64)
	if err != nil || w > math.MaxInt64/uint64(unit) {
		return 0, fmt.Errorf("invalid size %q: exceeds the maximum of 9223372036854775807 bytes", s)
	}
	n := int64(w) * unit

	if hasFrac {
		// Keep 18 digits at most, so the fraction fits an int64 exactly.
		if len(frac) > 18 {
			frac = frac[:18]
		}
		f, _ := strconv.ParseFloat("0."+frac, 64)
		add := int64(f * float64(unit))
		if n > math.MaxInt64-add {
			return 0, fmt.Errorf("invalid size %q: exceeds the maximum of 9223372036854775807 bytes", s)
		}
		n += add
	}
	return n, nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
