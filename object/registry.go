package object

import (
	"fmt"
	"strings"
)

var authzListType = &objectType{name: TypeAuthzList, props: authzListProperties, create: createAuthzList}

// types lists the object types gonbd creates, sorted by name.
var types = []*objectType{
	authzListType,
	{name: TypeAuthzListFile, props: authzListFileProperties, create: createAuthzListFile},
	{name: TypeAuthzSimple, props: authzSimpleProperties, create: createAuthzSimple},
	{name: TypeSecret, props: secretProperties, create: createSecret},
	{name: TypeTLSCredsAnon, props: tlsCommonProperties, create: createTLSCredsAnon},
	{name: TypeTLSCredsPSK, props: withProperties(tlsCommonProperties,
		property{name: "username", qapiType: "string", kind: kindString, def: defaultPSKUsername,
			desc: "PSK identity a client sends (client only)"}),
		create: createTLSCredsPSK},
	{name: TypeTLSCredsX509, props: withProperties(tlsCommonProperties,
		property{name: "passwordid", qapiType: "string", kind: kindString, desc: "id of the secret that decrypts the private key"},
		property{name: "sanity-check", qapiType: "bool", kind: kindBool, def: "true", desc: "check the certificates when loading them"}),
		create: createTLSCredsX509},
}

// typeAliases maps other spellings to a type name. QEMU's ObjectType enum
// (qapi/qom.json) spells authz-list-file as "authz-listfile", while its
// QOM type and help use "authz-list-file". qemu-nbd 7.2 rejects both.
var typeAliases = map[string]string{"authz-listfile": TypeAuthzListFile}

// qemuOnlyTypes are types qemu-nbd 7.2 lists in --object help that gonbd
// does not implement.
var qemuOnlyTypes = []string{"authz-pam", "iothread", "main-loop", "pr-manager-helper",
	"secret_keyring", "thread-context", "throttle-group", "tls-cipher-suites"}

func withProperties(base []property, extra ...property) []property {
	return append(append([]property{}, base...), extra...)
}

func lookupType(name string) *objectType {
	if alias, ok := typeAliases[name]; ok {
		name = alias
	}
	for _, t := range types {
		if t.name == name {
			return t
		}
	}
	return nil
}

func typeNames() []string {
	names := make([]string, len(types))
	for i, t := range types {
		names[i] = t.name
	}
	return names
}

// Registry holds the objects created by --object, by id. Add is not safe
// for concurrent use, but lookups and the objects they return are once
// adding is done.
type Registry struct {
	objects map[string]Object
	order   []string
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{objects: map[string]Object{}}
}

// ParseAll creates the objects of specs, in order, in a new registry.
// Help requests are errors here, so call PrintHelp first.
func ParseAll(specs []string) (*Registry, error) {
	r := NewRegistry()
	for _, spec := range specs {
		if err := r.Add(spec); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Add parses one --object argument, in the QemuOpts form
// ("TYPE,id=ID,key=value,...") or the JSON form ("{"qom-type":...}"),
// creates the object and registers it under its id. An object may refer
// only to objects added before it. Files named by the object (credentials,
// secret files, authz lists) are checked now, as QEMU checks them.
func (r *Registry) Add(spec string) error {
	c, help, err := parseSpec(spec)
	if err != nil {
		return err
	}
	if help {
		return &Error{ID: c.id, Type: c.typ, Msg: "help requested: call PrintHelp before Add"}
	}
	c.registry = r

	t := lookupType(c.typ)
	if t == nil {
		return unknownTypeError(c)
	}
	c.typ = t.name
	if c.id == "" {
		return c.errorf("", "missing property id: add id=NAME so that other options can refer to the object")
	}
	if err := checkID(c); err != nil {
		return err
	}
	if other, dup := r.objects[c.id]; dup {
		return c.errorf("", "duplicate id: an earlier --object %s already has id=%s: give each object its own id", other.QOMType(), c.id)
	}
	if err := c.checkProperties(t); err != nil {
		return err
	}

	obj, err := t.create(c)
	if err != nil {
		return err
	}
	r.objects[c.id] = obj
	r.order = append(r.order, c.id)
	return nil
}

// parseSpec parses an --object argument into a creation with its type and
// id taken out. The JSON form starts with '{', as in QEMU.
func parseSpec(spec string) (*creation, bool, error) {
	c := &creation{}
	var help bool
	var err error
	if strings.HasPrefix(spec, "{") {
		c.values, err = parseJSONObject(spec)
	} else {
		c.keyval = true
		c.values, help, err = parseKeyval(spec)
	}
	if err != nil {
		return nil, false, err
	}

	// Read the id first, so that a bad type's error can name the object.
	if v, ok := c.values["id"]; ok {
		delete(c.values, "id")
		if c.id, err = c.stringValue("id", v); err != nil {
			return nil, false, err
		}
	}
	v, ok := c.values["qom-type"]
	delete(c.values, "qom-type")
	switch {
	case ok:
		if c.typ, err = c.stringValue("qom-type", v); err != nil {
			return nil, false, err
		}
	case help:
	default:
		return nil, false, c.errorf("", "missing object type: start with the type, as in tls-creds-x509,id=tls0,... (--object help lists the types)")
	}
	return c, help, nil
}

// checkID checks an id as QEMU does: a letter, then letters, digits, '-',
// '.' and '_'.
func checkID(c *creation) error {
	valid := isLetter(c.id[0])
	for i := 1; i < len(c.id) && valid; i++ {
		ch := c.id[i]
		valid = isLetter(ch) || isDigit(ch) || ch == '-' || ch == '.' || ch == '_'
	}
	if !valid {
		return &Error{Type: c.typ, Property: "id",
			Msg: fmt.Sprintf("invalid id %q: an id starts with a letter and has only letters, digits, '-', '.' and '_'", c.id)}
	}
	return nil
}

func unknownTypeError(c *creation) error {
	for _, name := range qemuOnlyTypes {
		if c.typ == name {
			return &Error{ID: c.id, Msg: fmt.Sprintf("object type %s is a QEMU type that gonbd does not implement: remove this --object", c.typ)}
		}
	}
	msg := fmt.Sprintf("unknown object type %q: ", c.typ)
	if guess := closest(c.typ, typeNames()); guess != "" {
		msg += fmt.Sprintf("did you mean %s? ", guess)
	}
	msg += "--object help lists the types"
	return &Error{ID: c.id, Msg: msg}
}

// IDs returns the ids of the registered objects in creation order.
func (r *Registry) IDs() []string {
	return append([]string(nil), r.order...)
}

// Lookup returns the object with the given id.
func (r *Registry) Lookup(id string) (Object, error) {
	obj, ok := r.objects[id]
	if !ok {
		return nil, fmt.Errorf("no object with id %q: create it with --object TYPE,id=%s,...", id, id)
	}
	return obj, nil
}

// TLSCreds returns the TLS credentials with the given id, which must be
// tls-creds-x509 or tls-creds-psk with the given endpoint: EndpointServer
// to serve, EndpointClient to connect (gonbd -L, gonbdinfo).
func (r *Registry) TLSCreds(id, endpoint string) (TLSCreds, error) {
	obj, ok := r.objects[id]
	if !ok {
		return nil, fmt.Errorf("no TLS credentials with id %q: create them with --object tls-creds-x509,id=%s,endpoint=%s,dir=/path (or tls-creds-psk)", id, id, endpoint)
	}
	if _, anon := obj.(*TLSCredsAnon); anon {
		return nil, fmt.Errorf("TLS credentials %s are tls-creds-anon, which authenticate nobody: use tls-creds-psk or tls-creds-x509", id)
	}
	creds, ok := obj.(TLSCreds)
	if !ok {
		return nil, fmt.Errorf("object %s has type %s, not TLS credentials: pass the id of a tls-creds-x509 or tls-creds-psk object", id, obj.QOMType())
	}
	if creds.tlsCredsEndpoint() != endpoint {
		return nil, fmt.Errorf("TLS credentials %s have endpoint=%s, but this use needs endpoint=%s: set endpoint=%s in --object %s,id=%s",
			id, creds.tlsCredsEndpoint(), endpoint, endpoint, obj.QOMType(), id)
	}
	return creds, nil
}

// Authz returns the authorization object with the given id: authz-simple,
// authz-list or authz-list-file.
func (r *Registry) Authz(id string) (Authorizer, error) {
	obj, ok := r.objects[id]
	if !ok {
		return nil, fmt.Errorf("no authorization object with id %q: create it with --object authz-simple,id=%s,identity=NAME (or authz-list, authz-list-file)", id, id)
	}
	authz, ok := obj.(Authorizer)
	if !ok {
		return nil, fmt.Errorf("object %s has type %s, not an authorization object: pass the id of an authz-simple, authz-list or authz-list-file object", id, obj.QOMType())
	}
	return authz, nil
}

// Secret returns a copy of the value of the secret with the given id.
func (r *Registry) Secret(id string) ([]byte, error) {
	data, err := r.secretFor(id)
	if err != nil {
		return nil, err
	}
	return append([]byte(nil), data...), nil
}

// secretFor returns the value of a secret without copying it.
func (r *Registry) secretFor(id string) ([]byte, error) {
	obj, ok := r.objects[id]
	if !ok {
		return nil, fmt.Errorf("no secret with id %q: create it first with --object secret,id=%s,file=/path (objects are created in command-line order)", id, id)
	}
	secret, ok := obj.(*Secret)
	if !ok {
		return nil, fmt.Errorf("object %s has type %s, not a secret", id, obj.QOMType())
	}
	return secret.data, nil
}
