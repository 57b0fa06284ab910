package object

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseKeyval(t *testing.T) {
	tests := []struct {
		name     string
		spec     string
		want     map[string]any
		wantHelp bool
	}{
		{"ImpliedType", "secret,id=s0,data=x",
			map[string]any{"qom-type": "secret", "id": "s0", "data": "x"}, false},
		{"ExplicitType", "qom-type=secret,id=s0",
			map[string]any{"qom-type": "secret", "id": "s0"}, false},
		{"TypeAfterID", "id=s0,qom-type=secret",
			map[string]any{"qom-type": "secret", "id": "s0"}, false},
		{"CommaEscape", "secret,id=s0,data=a,,b",
			map[string]any{"qom-type": "secret", "id": "s0", "data": "a,b"}, false},
		{"CommaEscapeAtEnd", "secret,id=s0,data=a,,",
			map[string]any{"qom-type": "secret", "id": "s0", "data": "a,"}, false},
		{"DoubleEscape", "secret,data=,,,,x",
			map[string]any{"qom-type": "secret", "data": ",,x"}, false},
		{"TrailingComma", "secret,id=s0,",
			map[string]any{"qom-type": "secret", "id": "s0"}, false},
		{"EmptyValue", "secret,data=",
			map[string]any{"qom-type": "secret", "data": ""}, false},
		{"EqualsInValue", "secret,data=a=b",
			map[string]any{"qom-type": "secret", "data": "a=b"}, false},
		{"LastDuplicateWins", "secret,id=a,id=b",
			map[string]any{"qom-type": "secret", "id": "b"}, false},
		{"RulesArray", "authz-list,rules.0.match=a,rules.0.policy=allow,rules.1.match=b",
			map[string]any{"qom-type": "authz-list", "rules": []any{
				map[string]any{"match": "a", "policy": "allow"},
				map[string]any{"match": "b"},
			}}, false},
		{"RulesOutOfOrder", "authz-list,rules.1.match=b,rules.0.match=a",
			map[string]any{"qom-type": "authz-list", "rules": []any{
				map[string]any{"match": "a"},
				map[string]any{"match": "b"},
			}}, false},
		{"IndexLeadingZero", "authz-list,rules.00.match=a",
			map[string]any{"qom-type": "authz-list", "rules": []any{map[string]any{"match": "a"}}}, false},
		{"HelpAlone", "help", map[string]any{}, true},
		{"HelpQuestionMark", "?", map[string]any{}, true},
		{"TypeHelp", "secret,help", map[string]any{"qom-type": "secret"}, true},
		{"HelpBeforeID", "secret,help,id=x", map[string]any{"qom-type": "secret", "id": "x"}, true},
		{"Empty", "", map[string]any{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, help, err := parseKeyval(tt.spec)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
			assert.Equal(t, tt.wantHelp, help)
		})
	}
}

func TestParseKeyvalErrors(t *testing.T) {
	tests := []struct {
		name    string
		spec    string
		wantErr string
	}{
		{"EmptyKey", ",id=x", `invalid parameter ""`},
		{"EmptyKeyWithValue", "secret,=x", `invalid parameter ""`},
		{"KeyStartsWithDigit", "secret,1data=x", `invalid parameter "1data"`},
		{"KeyWithSpace", "secret,da ta=x", `invalid parameter "da ta"`},
		{"FirstFragmentIndex", "secret,0=x", `invalid parameter "0"`},
		{"EmptyFragment", "secret,rules..match=x", `invalid parameter "rules..match"`},
		{"MissingEquals", "secret,id=a,data", `expected '=' after parameter "data"`},
		{"SingleCommaInValue", "tls-creds-psk,id=a,dir=/tmp/ke,ys", `expected '=' after parameter "ys": write ys=VALUE, or write ,, for a comma inside the value of dir`},
		{"KeyTooLong", "secret,a" + repeat("b", 127) + "=x", "too long"},
		{"ScalarThenObject", "secret,data=a,data.x=1", "parameters data and data.* used inconsistently"},
		{"ObjectThenScalar", "secret,data.x=1,data=a", "parameters data and data.* used inconsistently"},
		{"MixedIndexAndName", "authz-list,rules.0.match=a,rules.x=b", "rules.* mix array indexes and names"},
		{"ArrayGap", "authz-list,rules.1.match=a", "parameter rules.0 is missing"},
		{"ArrayGapMiddle", "authz-list,rules.0.match=a,rules.2.match=b", "parameter rules.1 is missing"},
		{"HugeIndex", "authz-list,rules.99999999999999999999.match=a", "parameter rules.0 is missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := parseKeyval(tt.spec)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.wantErr)
		})
	}
}

func repeat(s string, n int) string {
	out := make([]byte, 0, len(s)*n)
	for range n {
		out = append(out, s...)
	}
	return string(out)
}

func TestParseJSONObjectErrors(t *testing.T) {
	tests := []struct {
		name    string
		spec    string
		wantErr string
	}{
		{"Truncated", `{"qom-type":"secret","id":"s0"`, "unexpected end of input"},
		{"DuplicateKey", `{"qom-type":"secret","data":"x","data":"y"}`, `duplicate key "data"`},
		{"TrailingData", `{"qom-type":"secret"} {}`, "data after the closing brace"},
		{"TrailingGarbage", `{"qom-type":"secret"}x`, "invalid JSON"},
		{"NotObject", `[1]`, "expected an object"},
		{"TooDeep", `{"a":` + repeat("[", 40) + repeat("]", 40) + `}`, "nested deeper than"},
		{"BadToken", `{"a":tru}`, "invalid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseJSONObject(tt.spec)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.wantErr)
		})
	}
}

func TestParseJSONObjectTrailingSpace(t *testing.T) {
	tree, err := parseJSONObject(`{"qom-type":"secret","id":"s0","n":1.5,"b":true,"z":null} `)
	require.NoError(t, err)
	assert.Equal(t, "secret", tree["qom-type"])
	assert.Equal(t, true, tree["b"])
	assert.Nil(t, tree["z"])
}
