package export

import (
	"fmt"
	"sort"
	"sync"
)

// Options are the key=value settings an export is opened with, as given in
// --image-opts (driver=memory,size=1G) or derived from qemu-nbd's flags
// (filename, read-only, cache, discard, offset, ...).
type Options map[string]string

// OpenFunc opens a backend from options. It returns an error naming the
// option and value at fault.
type OpenFunc func(opts Options) (Backend, error)

// Plugin is a named export driver, like an nbdkit plugin.
type Plugin struct {
	// Name is the driver name used in --image-opts driver=NAME and -f NAME.
	Name string
	// Description is one line for --help.
	Description string
	// Keys lists the option keys the plugin accepts, for error messages.
	Keys []string
	Open OpenFunc
}

var (
	registryMu sync.RWMutex
	registry   = map[string]Plugin{}
)

// Register adds p to the registry. It panics if the name is empty or
// already registered, because that is a programming error.
func Register(p Plugin) {
	registryMu.Lock()
	defer registryMu.Unlock()

	if p.Name == "" || p.Open == nil {
		panic("export: Register needs a name and an Open function")
	}
	if _, dup := registry[p.Name]; dup {
		panic("export: plugin " + p.Name + " registered twice")
	}
	registry[p.Name] = p
}

// Lookup returns the plugin registered under name.
func Lookup(name string) (Plugin, bool) {
	registryMu.RLock()
	defer registryMu.RUnlock()

	p, ok := registry[name]
	return p, ok
}

// Names returns the registered plugin names, sorted.
func Names() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()

	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Open opens an export with the named plugin.
func Open(name string, opts Options) (Backend, error) {
	p, ok := Lookup(name)
	if !ok {
		return nil, fmt.Errorf("unknown export driver %q (known: %v)", name, Names())
	}
	return p.Open(opts)
}
