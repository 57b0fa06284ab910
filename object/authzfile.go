package object

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
)

// AuthzListFile is an authz-list-file object: an authz-list whose policy
// and rules are read from a JSON file such as
//
//	{"policy": "deny", "rules": [{"match": "CN=alice*", "policy": "allow", "format": "glob"}]}
//
// With Refresh (the default, as in QEMU on Linux) the file is read again
// when it changes. A file that fails to load denies every identity until it
// loads again, as QEMU does.
type AuthzListFile struct {
	ID       string
	Filename string // absolute path
	Refresh  bool

	mu      sync.Mutex
	list    *AuthzList  // nil after a failed reload
	loadErr error       // error of the last load, set while list is nil
	info    fs.FileInfo // the file as last read, to detect changes
}

func (*AuthzListFile) QOMType() string { return TypeAuthzListFile }

// IsAllowed applies the file's rules to identity. With Refresh it first
// checks the file's size, modification time and inode and re-reads it if
// any changed. It returns an error, and false, while the file does not load.
func (a *AuthzListFile) IsAllowed(identity string) (bool, error) {
	a.mu.Lock()
	list, err := a.current()
	a.mu.Unlock()
	if err != nil {
		return false, err
	}
	return list.IsAllowed(identity)
}

// current returns the list to apply, reloading it if the file changed.
// The caller holds a.mu.
func (a *AuthzListFile) current() (*AuthzList, error) {
	if a.Refresh {
		info, err := os.Stat(a.Filename)
		if err != nil {
			a.list, a.info = nil, nil
			a.loadErr = fmt.Errorf("authz-list-file %s: %w", a.ID, err)
		} else if a.info == nil || !os.SameFile(a.info, info) ||
			!a.info.ModTime().Equal(info.ModTime()) || a.info.Size() != info.Size() {
			a.info = info
			a.list, a.loadErr = loadAuthzList(a.ID, a.Filename)
		}
	}
	if a.list == nil {
		return nil, a.loadErr
	}
	return a.list, nil
}

var authzListFileProperties = []property{
	{name: "filename", qapiType: "string", kind: kindString, desc: "JSON file with the authz-list policy and rules"},
	{name: "refresh", qapiType: "bool", kind: kindBool, def: "true", desc: "re-read the file when it changes"},
}

func createAuthzListFile(c *creation) (Object, error) {
	filename, err := c.requiredStr("filename", "filename=/path/to/acl.json")
	if err != nil {
		return nil, err
	}
	refresh, err := c.boolean("refresh", true)
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(filename)
	if err != nil {
		return nil, &Error{ID: c.id, Type: c.typ, Property: "filename", Err: err, Msg: fmt.Sprintf("%q: %v", filename, err)}
	}

	a := &AuthzListFile{ID: c.id, Filename: abs, Refresh: refresh}
	if refresh {
		if a.info, err = os.Stat(abs); err != nil {
			return nil, fileError(c, abs, err)
		}
	}
	if a.list, err = loadAuthzList(c.id, abs); err != nil {
		return nil, err
	}
	return a, nil
}

func fileError(c *creation, path string, err error) error {
	reason := err
	var pathErr *fs.PathError
	if errors.As(err, &pathErr) {
		reason = pathErr.Err
	}
	return &Error{ID: c.id, Type: c.typ, Property: "filename", Err: err,
		Msg: fmt.Sprintf("cannot read %s: %v", path, reason)}
}

// loadAuthzList reads an authz-list-file: one JSON object with the
// properties of authz-list (policy, rules) and nothing else.
func loadAuthzList(id, path string) (*AuthzList, error) {
	c := &creation{id: id, typ: TypeAuthzListFile}
	data, err := readFile(path)
	if err != nil {
		return nil, fileError(c, path, err)
	}

	inFile := func(err error) error {
		var objectErr *Error
		if !errors.As(err, &objectErr) {
			return err
		}
		detail := objectErr.Msg
		if objectErr.Property != "" {
			detail = fmt.Sprintf("property %s: %s", objectErr.Property, objectErr.Msg)
		}
		return &Error{ID: id, Type: TypeAuthzListFile, Property: "filename", Err: objectErr.Err,
			Msg: fmt.Sprintf("%s: %s", path, detail)}
	}

	tree, err := parseJSONObject(string(data))
	if err != nil {
		return nil, inFile(err)
	}
	c.values = tree
	if err := c.checkProperties(authzListType); err != nil {
		return nil, inFile(err)
	}
	list, err := createAuthzList(c)
	if err != nil {
		return nil, inFile(err)
	}
	return list.(*AuthzList), nil
}
