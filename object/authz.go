package object

import (
	"fmt"
	"unicode/utf8"
)

// Values of authz-list's policy properties.
const (
	PolicyDeny  = "deny"
	PolicyAllow = "allow"
)

// Values of an authz-list rule's format.
const (
	MatchExact = "exact"
	MatchGlob  = "glob"
)

var (
	policyValues = []string{PolicyDeny, PolicyAllow}
	formatValues = []string{MatchExact, MatchGlob}
)

// AuthzSimple is an authz-simple object: it allows exactly one identity.
type AuthzSimple struct {
	ID       string
	Identity string
}

func (*AuthzSimple) QOMType() string { return TypeAuthzSimple }

// IsAllowed reports whether identity equals the configured one.
func (a *AuthzSimple) IsAllowed(identity string) (bool, error) {
	return identity == a.Identity, nil
}

// AuthzListRule is one rule of an authz-list.
type AuthzListRule struct {
	Match  string // identity or glob pattern
	Policy string // PolicyAllow or PolicyDeny, the result when Match matches
	Format string // MatchExact or MatchGlob
}

// AuthzList is an authz-list object: the first rule that matches decides,
// and Policy decides when none matches.
type AuthzList struct {
	ID     string
	Policy string // PolicyDeny unless policy= is set
	Rules  []AuthzListRule
}

func (*AuthzList) QOMType() string { return TypeAuthzList }

// IsAllowed applies the rules in order to identity.
func (a *AuthzList) IsAllowed(identity string) (bool, error) {
	for _, rule := range a.Rules {
		matched := rule.Match == identity
		if rule.Format == MatchGlob {
			matched = globMatch(rule.Match, identity)
		}
		if matched {
			return rule.Policy == PolicyAllow, nil
		}
	}
	return a.Policy == PolicyAllow, nil
}

var authzSimpleProperties = []property{
	{name: "identity", qapiType: "string", kind: kindString, desc: "the one identity allowed: a PSK username or an x509 distinguished name"},
}

var authzListProperties = []property{
	{name: "policy", qapiType: "QAuthZListPolicy", kind: kindEnum, values: policyValues, def: PolicyDeny,
		desc: "allow or deny: the result when no rule matches"},
	{name: "rules", qapiType: "QAuthZListRule", kind: kindRules,
		desc: "rules tried in order: rules.N.match=IDENTITY,rules.N.policy=allow|deny,rules.N.format=exact|glob"},
}

func createAuthzSimple(c *creation) (Object, error) {
	identity, err := c.requiredStr("identity", "identity=NAME (a PSK username or an x509 distinguished name)")
	if err != nil {
		return nil, err
	}
	return &AuthzSimple{ID: c.id, Identity: identity}, nil
}

func createAuthzList(c *creation) (Object, error) {
	list := &AuthzList{ID: c.id}
	var err error
	if list.Policy, err = c.enum("policy", PolicyDeny, policyValues); err != nil {
		return nil, err
	}
	if list.Rules, err = c.rules("rules"); err != nil {
		return nil, err
	}
	return list, nil
}

// rules converts the rules property: an array of objects with match,
// policy and an optional format (default exact).
func (c *creation) rules(name string) ([]AuthzListRule, error) {
	v, ok := c.values[name]
	if !ok {
		return nil, nil
	}
	elements, ok := v.([]any)
	if !ok {
		return nil, c.errorf(name, "invalid type: expected an array, got %s: write %s.0.match=NAME,%s.0.policy=allow", describe(v), name, name)
	}

	rules := make([]AuthzListRule, 0, len(elements))
	for i, element := range elements {
		path := fmt.Sprintf("%s.%d", name, i)
		rule, err := c.rule(path, element)
		if err != nil {
			return nil, err
		}
		rules = append(rules, rule)
	}
	return rules, nil
}

func (c *creation) rule(path string, element any) (AuthzListRule, error) {
	var rule AuthzListRule
	members, ok := element.(map[string]any)
	if !ok {
		return rule, c.errorf(path, "invalid type: expected an object with match, policy and format, got %s", describe(element))
	}
	for _, key := range sortedKeys(members) {
		if key != "match" && key != "policy" && key != "format" {
			msg := fmt.Sprintf("unknown rule member %q: a rule has match, policy and format", key)
			if guess := closest(key, []string{"match", "policy", "format"}); guess != "" {
				msg = fmt.Sprintf("unknown rule member %q: did you mean %s? A rule has match, policy and format", key, guess)
			}
			return rule, c.errorf(path, "%s", msg)
		}
	}

	match, ok := members["match"]
	if !ok {
		return rule, c.errorf(path, "missing match: add %s.match=IDENTITY", path)
	}
	var err error
	if rule.Match, err = c.stringValue(path+".match", match); err != nil {
		return rule, err
	}

	policy, ok := members["policy"]
	if !ok {
		return rule, c.errorf(path, "missing policy: add %s.policy=allow or %s.policy=deny", path, path)
	}
	if rule.Policy, err = c.enumValue(path+".policy", policy, policyValues); err != nil {
		return rule, err
	}

	rule.Format = MatchExact
	if format, ok := members["format"]; ok {
		if rule.Format, err = c.enumValue(path+".format", format, formatValues); err != nil {
			return rule, err
		}
	}
	return rule, nil
}

// globMatch matches s against pattern as GLib's g_pattern_match_simple
// does, which QEMU's authz-list uses: '*' matches any run of characters
// (including '/' and none), '?' matches one UTF-8 character, and every
// other character matches itself. There are no bracket expressions and
// no escapes.
func globMatch(pattern, s string) bool {
	// Backtracking over the last '*' keeps this linear in practice and
	// O(len(pattern)*len(s)) at worst.
	p, i := 0, 0
	starP, starI := -1, 0
	for i < len(s) {
		if p < len(pattern) {
			switch pattern[p] {
			case '*':
				starP, starI = p, i
				p++
				continue
			case '?':
				_, size := utf8.DecodeRuneInString(s[i:])
				p++
				i += size
				continue
			default:
				if pattern[p] == s[i] {
					p++
					i++
					continue
				}
			}
		}
		if starP < 0 {
			return false
		}
		// Let the last '*' absorb one more character and retry.
		_, size := utf8.DecodeRuneInString(s[starI:])
		starI += size
		p, i = starP+1, starI
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}
