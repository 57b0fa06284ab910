package object

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoadAuthzList feeds arbitrary authz-list-file contents to the
// loader. It must not panic, an error is one line, and a list that loads
// can be applied to identities.
func FuzzLoadAuthzList(f *testing.F) {
	for _, seed := range []string{
		`{"policy": "deny", "rules": [{"match": "CN=alice*", "policy": "allow", "format": "glob"}]}`,
		`{"policy": "allow", "rules": []}`,
		`{"rules": [{"match": "O=gonbd,CN=laptop.example.com", "policy": "deny", "format": "exact"}]}`,
		`{"policy": "deny", "rules": [{"match": 5}]}`,
		`{"policy": "deny", "extra": 1}`,
		`{"policy": "deny", "rules": [{"match": "a", "policy": "allow"}, {"match": "*", "policy": "deny", "format": "glob"}]}`,
		`[]`,
		`{"policy": "deny"`,
		"",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, content string) {
		path := filepath.Join(t.TempDir(), "acl.json")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		list, err := loadAuthzList("acl0", path)
		if err != nil {
			if strings.ContainsAny(err.Error(), "\r\n") {
				t.Fatalf("error is not one line: %q", err.Error())
			}
			return
		}
		for _, identity := range []string{"", "CN=alice", "O=gonbd,CN=laptop.example.com", "\xff*?"} {
			_, _ = list.IsAllowed(identity)
		}
	})
}
