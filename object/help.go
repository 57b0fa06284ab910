package object

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// PrintHelp prints help if spec requests it and reports whether it did:
// "help" (or "?") lists the object types, and "TYPE,help" lists TYPE's
// properties, in the layout of qemu-nbd's --object help. A help request
// for an unknown type lists the types, as QEMU does. The JSON form never
// requests help.
func PrintHelp(w io.Writer, spec string) (handled bool) {
	if strings.HasPrefix(spec, "{") {
		return false
	}
	tree, help, err := parseKeyval(spec)
	if err != nil || !help {
		return false
	}

	name, _ := tree["qom-type"].(string)
	if t := lookupType(name); t != nil {
		printTypeHelp(w, t)
	} else {
		printTypes(w)
	}
	return true
}

func printTypes(w io.Writer) {
	fmt.Fprintln(w, "List of user creatable objects:")
	names := typeNames()
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(w, "  %s\n", name)
	}
}

// helpColumn is the column of a property's description in QEMU's help.
const helpColumn = 24

func printTypeHelp(w io.Writer, t *objectType) {
	lines := make([]string, 0, len(t.props))
	for _, p := range t.props {
		line := fmt.Sprintf("  %s=<%s>", p.name, p.qapiType)
		if len(line) < helpColumn {
			line += strings.Repeat(" ", helpColumn-len(line))
		}
		line += " - " + p.desc
		if p.def != "" {
			line += " (default: " + helpDefault(p) + ")"
		}
		lines = append(lines, line)
	}
	sort.Strings(lines)

	fmt.Fprintf(w, "%s options:\n", t.name)
	for _, line := range lines {
		fmt.Fprintln(w, line)
	}
}

// helpDefault formats a default as JSON, as QEMU prints defaults.
func helpDefault(p property) string {
	if p.kind == kindBool {
		return p.def
	}
	return fmt.Sprintf("%q", p.def)
}
