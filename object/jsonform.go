package object

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// maxJSONDepth bounds nesting in a JSON --object argument. The deepest
// valid object (authz-list rules) needs 3 levels.
const maxJSONDepth = 16

// parseJSONObject parses the JSON form of --object into a tree of
// map[string]any, []any, string, bool, json.Number and nil. As QEMU's
// JSON parser does, it rejects duplicate keys and trailing data.
func parseJSONObject(s string) (map[string]any, error) {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()

	value, err := readJSONValue(dec, 0)
	if err != nil {
		return nil, jsonError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, &Error{Msg: "invalid JSON: data after the closing brace: pass exactly one JSON object"}
	}

	tree, ok := value.(map[string]any)
	if !ok {
		return nil, &Error{Msg: "invalid JSON: expected an object such as {\"qom-type\":\"secret\",\"id\":\"sec0\",...}"}
	}
	return tree, nil
}

func jsonError(err error) error {
	var objectErr *Error
	if errors.As(err, &objectErr) {
		return objectErr
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return &Error{Msg: "invalid JSON: unexpected end of input: check the closing braces and quotes", Err: err}
	}
	return &Error{Msg: fmt.Sprintf("invalid JSON: %v", err), Err: err}
}

func readJSONValue(dec *json.Decoder, depth int) (any, error) {
	if depth > maxJSONDepth {
		return nil, &Error{Msg: fmt.Sprintf("invalid JSON: nested deeper than %d levels", maxJSONDepth)}
	}
	token, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch token {
	case json.Delim('{'):
		return readJSONMembers(dec, depth)
	case json.Delim('['):
		return readJSONElements(dec, depth)
	}
	return token, nil
}

func readJSONMembers(dec *json.Decoder, depth int) (map[string]any, error) {
	members := map[string]any{}
	for dec.More() {
		token, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, _ := token.(string)
		if _, dup := members[key]; dup {
			return nil, &Error{Msg: fmt.Sprintf("invalid JSON: duplicate key %q: give each property once", key)}
		}
		value, err := readJSONValue(dec, depth+1)
		if err != nil {
			return nil, err
		}
		members[key] = value
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return nil, err
	}
	return members, nil
}

func readJSONElements(dec *json.Decoder, depth int) ([]any, error) {
	elements := []any{}
	for dec.More() {
		value, err := readJSONValue(dec, depth+1)
		if err != nil {
			return nil, err
		}
		elements = append(elements, value)
	}
	if _, err := dec.Token(); err != nil { // the closing ']'
		return nil, err
	}
	return elements, nil
}
