package object

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// maxKeyFragment is the longest key fragment QEMU's keyval parser accepts
// (127 characters, util/keyval.c).
const maxKeyFragment = 127

// parseKeyval parses QEMU's KEY=VALUE,... syntax as util/keyval.c of QEMU
// 7.2 does. The first element may omit "qom-type=". ",," is a literal
// comma in a value. Dotted keys build nested objects, and numeric
// fragments build arrays ("rules.0.match=x"). A later duplicate key
// replaces the earlier value. A bare "help" or "?" element sets help.
//
// The returned tree has string leaves, map[string]any objects and []any
// arrays.
func parseKeyval(s string) (tree map[string]any, help bool, err error) {
	tree = map[string]any{}
	first := true
	prevKey := ""
	for len(s) > 0 {
		n := strings.IndexAny(s, "=,")
		if n < 0 {
			n = len(s)
		}
		bare := n > 0 && (n == len(s) || s[n] != '=')

		if bare && (s[:n] == "help" || s[:n] == "?") {
			help = true
			s = strings.TrimPrefix(s[n:], ",")
			first = false
			continue
		}

		var key, value string
		if bare && first {
			key = "qom-type"
			value, s = scanValue(s)
		} else {
			key = s[:n]
			if err := checkKey(key); err != nil {
				return nil, false, err
			}
			if bare {
				return nil, false, missingEqualsError(tree, key, prevKey)
			}
			value, s = scanValue(s[n+1:])
		}
		first = false
		prevKey = key

		if err := putKeyval(tree, key, value); err != nil {
			return nil, false, err
		}
	}

	list, err := listify(tree, "")
	if err != nil {
		return nil, false, err
	}
	return list.(map[string]any), help, nil
}

// missingEqualsError reports an element without '=', which is often the
// rest of a value whose comma was not doubled (dir=/a,b for dir=/a,,b).
func missingEqualsError(tree map[string]any, key, prevKey string) error {
	typ, _ := tree["qom-type"].(string)
	msg := fmt.Sprintf("expected '=' after parameter %q: write %s=VALUE", key, key)
	if prevKey != "" {
		msg += fmt.Sprintf(", or write ,, for a comma inside the value of %s", prevKey)
	}
	return &Error{Type: typ, Msg: msg}
}

// scanValue reads a value up to the next single comma and returns it with
// ",," unescaped, and the rest after that comma.
func scanValue(s string) (value, rest string) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != ',' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] == ',' {
			b.WriteByte(',')
			i++
			continue
		}
		return b.String(), s[i+1:]
	}
	return b.String(), ""
}

// checkKey checks a dotted key: the first fragment is a name (a letter,
// then letters, digits, '-' and '_'), and later fragments are names or
// array indexes (decimal digits).
func checkKey(key string) error {
	for i, fragment := range strings.Split(key, ".") {
		valid := isName(fragment) || (i > 0 && isIndex(fragment))
		if !valid {
			return &Error{Msg: fmt.Sprintf("invalid parameter %q: a parameter is a name that starts with a letter, such as dir=/path", key)}
		}
		if len(fragment) > maxKeyFragment {
			return &Error{Msg: fmt.Sprintf("parameter %.20q... is too long: use at most %d characters per name", fragment, maxKeyFragment)}
		}
	}
	return nil
}

func isName(s string) bool {
	if s == "" || !isLetter(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !isLetter(c) && !isDigit(c) && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

func isIndex(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isDigit(c byte) bool  { return c >= '0' && c <= '9' }

// maxIndex caps array indexes, as QEMU caps them at INT_MAX. An index
// that large always leaves a gap, so the cap only keeps the number small.
const maxIndex = 1 << 30

// canonicalIndex rewrites an index fragment without leading zeros, so that
// "rules.07" and "rules.7" name the same element, as in QEMU.
func canonicalIndex(fragment string) string {
	trimmed := strings.TrimLeft(fragment, "0")
	if len(trimmed) > 10 {
		return strconv.Itoa(maxIndex)
	}
	n, _ := strconv.Atoi("0" + trimmed)
	return strconv.Itoa(min(n, maxIndex))
}

// putKeyval stores value at the dotted key in tree.
func putKeyval(tree map[string]any, key, value string) error {
	fragments := strings.Split(key, ".")
	cur := tree
	for i, fragment := range fragments {
		if i > 0 && isIndex(fragment) {
			fragment = canonicalIndex(fragment)
		}
		if i == len(fragments)-1 {
			if _, isObject := cur[fragment].(map[string]any); isObject {
				return inconsistent(strings.Join(fragments[:i+1], "."))
			}
			cur[fragment] = value
			return nil
		}
		switch next := cur[fragment].(type) {
		case nil:
			child := map[string]any{}
			cur[fragment] = child
			cur = child
		case map[string]any:
			cur = next
		default:
			return inconsistent(strings.Join(fragments[:i+1], "."))
		}
	}
	return nil
}

func inconsistent(prefix string) error {
	return &Error{Msg: fmt.Sprintf("parameters %s and %s.* used inconsistently: use either %s=VALUE or dotted members", prefix, prefix, prefix)}
}

// listify turns objects whose keys are all array indexes into arrays. The
// indexes must be 0..n-1 in any order.
func listify(node map[string]any, path string) (any, error) {
	indexes, names := 0, 0
	for _, key := range sortedKeys(node) {
		child := node[key]
		if isIndex(key) {
			indexes++
		} else {
			names++
		}
		if object, ok := child.(map[string]any); ok {
			converted, err := listify(object, path+key+".")
			if err != nil {
				return nil, err
			}
			node[key] = converted
		}
	}

	if indexes > 0 && names > 0 {
		return nil, &Error{Msg: fmt.Sprintf("parameters %s* mix array indexes and names: use only %s0, %s1, ... or only names", path, path, path)}
	}
	if indexes == 0 || path == "" {
		return node, nil
	}

	list := make([]any, len(node))
	for key, child := range node {
		i, _ := strconv.Atoi(key)
		if i < len(list) {
			list[i] = child
		}
	}
	for i, child := range list {
		if child == nil {
			return nil, &Error{Msg: fmt.Sprintf("parameter %s%d is missing: number array elements from 0 without gaps", path, i)}
		}
	}
	return list, nil
}

// sortedKeys returns the keys of m in order, for deterministic errors.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
