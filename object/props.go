package object

import (
	"encoding/json"
	"fmt"
	"strings"
)

type propertyKind int

const (
	kindString propertyKind = iota
	kindBool
	kindEnum
	kindRules // authz-list rules: an array of {match, policy, format}
)

// property describes one settable property of an object type.
type property struct {
	name     string
	qapiType string // type name that help prints, as QEMU names it
	kind     propertyKind
	values   []string // allowed values of an enum
	def      string   // default that help prints, "" for none
	desc     string
}

// objectType describes one QOM type that --object can create.
type objectType struct {
	name   string
	props  []property
	create func(c *creation) (Object, error)
}

func (t *objectType) property(name string) *property {
	for i := range t.props {
		if t.props[i].name == name {
			return &t.props[i]
		}
	}
	return nil
}

func (t *objectType) propertyNames() []string {
	names := make([]string, len(t.props))
	for i, p := range t.props {
		names[i] = p.name
	}
	return names
}

// creation holds one --object argument while its object is built.
type creation struct {
	id  string
	typ string
	// keyval is set for the QemuOpts form, where every leaf is a string
	// and booleans are spelled on/off. The JSON form needs JSON types.
	keyval   bool
	values   map[string]any // properties other than qom-type and id
	registry *Registry
}

// checkProperties rejects properties that t does not have.
func (c *creation) checkProperties(t *objectType) error {
	for _, name := range sortedKeys(c.values) {
		if t.property(name) != nil {
			continue
		}
		msg := fmt.Sprintf("unknown property %q", name)
		if guess := closest(name, t.propertyNames()); guess != "" {
			msg += fmt.Sprintf(": did you mean %s? ", guess)
		} else {
			msg += ": "
		}
		msg += fmt.Sprintf("--object %s,help lists the properties", t.name)
		return &Error{ID: c.id, Type: c.typ, Msg: msg}
	}
	return nil
}

// describe names a value's kind for type errors, without its content.
func describe(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	case nil:
		return "null"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return "an unsupported value"
}

// stringValue converts v, the value of the property named path, to a string.
func (c *creation) stringValue(path string, v any) (string, error) {
	s, ok := v.(string)
	if !ok {
		return "", c.errorf(path, "invalid type: expected a string, got %s", describe(v))
	}
	return s, nil
}

// str returns a string property and whether it was set.
func (c *creation) str(name string) (string, bool, error) {
	v, ok := c.values[name]
	if !ok {
		return "", false, nil
	}
	s, err := c.stringValue(name, v)
	return s, err == nil, err
}

// requiredStr returns a string property that must be set; example shows a
// valid setting for the error message.
func (c *creation) requiredStr(name, example string) (string, error) {
	s, ok, err := c.str(name)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", c.errorf("", "missing property %s: add %s", name, example)
	}
	return s, nil
}

// boolean returns a boolean property, or def when it is not set. The
// QemuOpts form accepts what QEMU 7.2's qapi_bool_parse accepts.
func (c *creation) boolean(name string, def bool) (bool, error) {
	v, ok := c.values[name]
	if !ok {
		return def, nil
	}
	if b, ok := v.(bool); ok && !c.keyval {
		return b, nil
	}
	s, ok := v.(string)
	if !ok || !c.keyval {
		return false, c.errorf(name, "invalid type: expected a boolean (true or false), got %s", describe(v))
	}
	switch s {
	case "on", "yes", "true", "y":
		return true, nil
	case "off", "no", "false", "n":
		return false, nil
	}
	return false, c.errorf(name, "invalid boolean %q: use on or off", s)
}

// enum returns an enum property, or def when it is not set.
func (c *creation) enum(name, def string, allowed []string) (string, error) {
	v, ok := c.values[name]
	if !ok {
		return def, nil
	}
	return c.enumValue(name, v, allowed)
}

func (c *creation) enumValue(path string, v any, allowed []string) (string, error) {
	s, err := c.stringValue(path, v)
	if err != nil {
		return "", err
	}
	for _, a := range allowed {
		if s == a {
			return s, nil
		}
	}
	return "", c.errorf(path, "invalid value %q: use %s", s, orList(allowed))
}

// orList formats values as "a or b" or "a, b or c".
func orList(values []string) string {
	if len(values) == 1 {
		return values[0]
	}
	return strings.Join(values[:len(values)-1], ", ") + " or " + values[len(values)-1]
}

// closest returns the candidate nearest to name, or "" when none is close
// enough to be a likely misspelling.
func closest(name string, candidates []string) string {
	best, bestDistance := "", 0
	for _, candidate := range candidates {
		d := editDistance(strings.ToLower(name), strings.ToLower(candidate))
		if best == "" || d < bestDistance {
			best, bestDistance = candidate, d
		}
	}
	limit := max(1, min(3, len(name)/3))
	if best == "" || bestDistance > limit {
		return ""
	}
	return best
}

// editDistance returns the optimal string alignment distance between a and
// b: insertions, deletions, substitutions and swaps of adjacent bytes.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return max(len(a), len(b))
	}
	rows := make([][]int, len(a)+1)
	for i := range rows {
		rows[i] = make([]int, len(b)+1)
		rows[i][0] = i
	}
	for j := range rows[0] {
		rows[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d := min(rows[i-1][j]+1, rows[i][j-1]+1, rows[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d = min(d, rows[i-2][j-2]+1)
			}
			rows[i][j] = d
		}
	}
	return rows[len(a)][len(b)]
}
