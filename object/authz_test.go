package object

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestGlobMatch(t *testing.T) {
	tests := []struct {
		pattern, s string
		want       bool
	}{
		{"", "", true},
		{"", "a", false},
		{"*", "", true},
		{"*", "anything/at all", true},
		{"alice", "alice", true},
		{"alice", "alicex", false},
		{"a?ice", "alice", true},
		{"a?ice", "aice", false},
		{"?", "é", true}, // one UTF-8 character, two bytes
		{"??", "é", false},
		{"CN=*,O=Example", "CN=alice,O=Example", true},
		{"CN=*,O=Example", "CN=alice,O=Other", false},
		{"*.example.com", "host.sub.example.com", true},
		{"*a*b*c", "xaybzc", true},
		{"*a*b*c", "xaybzcd", false},
		{"a*", "b", false},
		{"[ab]", "a", false}, // no bracket expressions, as in GLib
		{"[ab]", "[ab]", true},
		{"\\*", "\\x", true}, // no escapes: '\' is literal
		{"**", "x", true},
		{"*?", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.pattern+"|"+tt.s, func(t *testing.T) {
			assert.Equal(t, tt.want, globMatch(tt.pattern, tt.s))
		})
	}
}

func TestAuthzSimple(t *testing.T) {
	r, err := ParseAll([]string{"authz-simple,id=auth0,identity=CN=laptop.example.com,,O=Example Org"})
	require.NoError(t, err)
	authz, err := r.Authz("auth0")
	require.NoError(t, err)

	for identity, want := range map[string]bool{
		"CN=laptop.example.com,O=Example Org": true,
		"CN=laptop.example.com":               false,
		"":                                    false,
	} {
		allowed, err := authz.IsAllowed(identity)
		require.NoError(t, err)
		assert.Equal(t, want, allowed, identity)
	}
}

func TestAuthzList(t *testing.T) {
	tests := []struct {
		name    string
		spec    string
		allowed map[string]bool
	}{
		{"DefaultDeny", "authz-list,id=a0,rules.0.match=alice,rules.0.policy=allow",
			map[string]bool{"alice": true, "bob": false}},
		{"DefaultAllow", "authz-list,id=a0,policy=allow,rules.0.match=mallory,rules.0.policy=deny",
			map[string]bool{"alice": true, "mallory": false}},
		{"NoRules", "authz-list,id=a0", map[string]bool{"alice": false}},
		{"FirstMatchWins", "authz-list,id=a0,rules.0.match=alice,rules.0.policy=deny,rules.1.match=*,rules.1.policy=allow,rules.1.format=glob",
			map[string]bool{"alice": false, "bob": true}},
		{"ExactIsNotGlob", "authz-list,id=a0,rules.0.match=*,rules.0.policy=allow",
			map[string]bool{"*": true, "alice": false}},
		{"GlobDN", "authz-list,id=a0,rules.0.match=CN=*,,O=Example,rules.0.policy=allow,rules.0.format=glob",
			map[string]bool{"CN=alice,O=Example": true, "CN=alice,O=Evil": false}},
		{"JSON", `{"qom-type":"authz-list","id":"a0","policy":"deny","rules":[` +
			`{"match":"bob","policy":"deny"},{"match":"b*","policy":"allow","format":"glob"}]}`,
			map[string]bool{"bob": false, "bert": true, "alice": false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseAll([]string{tt.spec})
			require.NoError(t, err)
			authz, err := r.Authz("a0")
			require.NoError(t, err)
			for identity, want := range tt.allowed {
				allowed, err := authz.IsAllowed(identity)
				require.NoError(t, err)
				assert.Equal(t, want, allowed, identity)
			}
		})
	}
}

func TestAuthzListParsedRules(t *testing.T) {
	r, err := ParseAll([]string{"authz-list,id=a0,rules.0.match=a,rules.0.policy=allow,rules.1.match=b*,rules.1.policy=deny,rules.1.format=glob"})
	require.NoError(t, err)
	obj, err := r.Lookup("a0")
	require.NoError(t, err)
	assert.Equal(t, &AuthzList{ID: "a0", Policy: PolicyDeny, Rules: []AuthzListRule{
		{Match: "a", Policy: PolicyAllow, Format: MatchExact},
		{Match: "b*", Policy: PolicyDeny, Format: MatchGlob},
	}}, obj)
}

func writeACL(t *testing.T, path, content string) {
	t.Helper()
	// Write a new file and rename it over the old one, as editors do, so
	// that the change is visible even within one mtime tick.
	tmp := path + ".tmp"
	require.NoError(t, os.WriteFile(tmp, []byte(content), 0o600))
	require.NoError(t, os.Rename(tmp, path))
}

func TestAuthzListFileRefresh(t *testing.T) {
	acl := filepath.Join(t.TempDir(), "acl.json")
	writeACL(t, acl, `{"policy":"deny","rules":[{"match":"alice","policy":"allow"}]}`)
	r, err := ParseAll([]string{"authz-list-file,id=acl0,filename=" + acl})
	require.NoError(t, err)
	authz, err := r.Authz("acl0")
	require.NoError(t, err)

	allowed, err := authz.IsAllowed("alice")
	require.NoError(t, err)
	assert.True(t, allowed, "alice before the change")
	allowed, err = authz.IsAllowed("bob")
	require.NoError(t, err)
	assert.False(t, allowed, "bob before the change")

	writeACL(t, acl, `{"policy":"deny","rules":[{"match":"bob","policy":"allow"}]}`)
	allowed, err = authz.IsAllowed("alice")
	require.NoError(t, err)
	assert.False(t, allowed, "alice after the change")
	allowed, err = authz.IsAllowed("bob")
	require.NoError(t, err)
	assert.True(t, allowed, "bob after the change")

	// A broken file denies everyone until it loads again.
	writeACL(t, acl, `{"policy":"allow",`)
	allowed, err = authz.IsAllowed("bob")
	assert.ErrorContains(t, err, "acl.json: invalid JSON")
	assert.False(t, allowed, "bob while the file is broken")

	require.NoError(t, os.Remove(acl))
	allowed, err = authz.IsAllowed("bob")
	assert.Error(t, err)
	assert.False(t, allowed, "bob while the file is missing")

	writeACL(t, acl, `{"policy":"allow"}`)
	allowed, err = authz.IsAllowed("carol")
	require.NoError(t, err)
	assert.True(t, allowed, "carol after the repair")
}

func TestAuthzListFileNoRefresh(t *testing.T) {
	acl := filepath.Join(t.TempDir(), "acl.json")
	writeACL(t, acl, `{"policy":"allow"}`)
	r, err := ParseAll([]string{"authz-list-file,id=acl0,refresh=off,filename=" + acl})
	require.NoError(t, err)
	authz, err := r.Authz("acl0")
	require.NoError(t, err)

	writeACL(t, acl, `{"policy":"deny"}`)
	allowed, err := authz.IsAllowed("alice")
	require.NoError(t, err)
	assert.True(t, allowed, "refresh=off keeps the first load")
}

func TestAuthzListFileRelativeName(t *testing.T) {
	dir := t.TempDir()
	writeACL(t, filepath.Join(dir, "acl.json"), `{"policy":"allow"}`)
	t.Chdir(dir)

	r, err := ParseAll([]string{"authz-list-file,id=acl0,filename=acl.json"})
	require.NoError(t, err)
	obj, err := r.Lookup("acl0")
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(dir, "acl.json"), obj.(*AuthzListFile).Filename)
}

func TestAuthzListFileErrors(t *testing.T) {
	tests := []struct {
		name    string
		content string
		wantErr string
	}{
		{"NotJSON", `policy=allow`, "invalid JSON"},
		{"NotObject", `[1]`, "expected an object"},
		{"UnknownKey", `{"policy":"allow","bad":1}`, `unknown property "bad"`},
		{"IDNotAllowed", `{"id":"x"}`, `unknown property "id"`},
		{"BadPolicy", `{"policy":"maybe"}`, `property policy: invalid value "maybe"`},
		{"RuleNoPolicy", `{"rules":[{"match":"x"}]}`, "property rules.0: missing policy"},
		{"RuleBadFormat", `{"rules":[{"match":"x","policy":"allow","format":"regex"}]}`, `property rules.0.format: invalid value "regex"`},
		{"PolicyNotString", `{"policy":true}`, "expected a string, got a boolean"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			acl := filepath.Join(t.TempDir(), "acl.json")
			writeACL(t, acl, tt.content)
			err := NewRegistry().Add("authz-list-file,id=acl0,filename=" + acl)
			require.Error(t, err)
			assert.Contains(t, err.Error(), "--object acl0 (authz-list-file): property filename: "+acl+": ")
			assert.Contains(t, err.Error(), tt.wantErr)
		})
	}
}

// TestAuthzListFileSameSizeEdit catches an in-place edit that keeps the
// size and inode, which only the modification time reveals.
func TestAuthzListFileSameSizeEdit(t *testing.T) {
	acl := filepath.Join(t.TempDir(), "acl.json")
	require.NoError(t, os.WriteFile(acl, []byte(`{"policy":"allow"}`), 0o600))
	past := time.Now().Add(-time.Hour)
	require.NoError(t, os.Chtimes(acl, past, past))

	r, err := ParseAll([]string{"authz-list-file,id=acl0,filename=" + acl})
	require.NoError(t, err)
	authz, err := r.Authz("acl0")
	require.NoError(t, err)
	allowed, err := authz.IsAllowed("x")
	require.NoError(t, err)
	assert.True(t, allowed)

	require.NoError(t, os.WriteFile(acl, []byte(`{"policy":"deny"} `), 0o600))
	allowed, err = authz.IsAllowed("x")
	require.NoError(t, err)
	assert.False(t, allowed)
}
