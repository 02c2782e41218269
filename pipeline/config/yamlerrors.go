package config

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/grouploss/pipeline/internal/hint"
)

// YAML errors: yaml.v3's messages rewritten to name the file, the line and the dotted key, each
// with a hint of what is valid.

var (
	reUnknownKey = regexp.MustCompile(`^line (\d+): field (.+) not found in type \S+$`)
	// The key is named when a section's components were decoded (see configform.go).
	reWrongType = regexp.MustCompile("^line (\\d+): (?:key (\\S+): )?cannot unmarshal !!(\\w+)(?: `(.*)`)? into (\\S+)$")
)

// yamlError rewrites a yaml.v3 decoding error of the config file path (content raw) so that it
// names the key and the line, and attaches a hint.
func yamlError(path string, raw []byte, err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) { // syntax error: yaml.v3 names the line
		return hint.With(fmt.Errorf("%w: %q: %s", ErrInvalid, path, strings.TrimPrefix(err.Error(), "yaml: ")),
			"fix the YAML syntax at that line")
	}
	keys := keyLines(raw)
	var msgs, hints []string
	for _, e := range te.Errors {
		if msg, h, ok := strings.Cut(e, hintSep); ok { // a component's error, already in words
			msgs, hints = append(msgs, msg), append(hints, h)
			continue
		}
		if m := reUnknownKey.FindStringSubmatch(e); m != nil {
			line, _ := strconv.Atoi(m[1])
			key := keys[line]
			if key == "" {
				key = m[2]
			}
			parent, known := "", configKeys(reflect.TypeOf(Config{}), "")
			if i := strings.LastIndexByte(key, '.'); i >= 0 {
				parent = key[:i]
				known = configKeys(reflect.TypeOf(Config{}), parent)
			}
			msgs = append(msgs, fmt.Sprintf("line %d: unknown key %q", line, key))
			where := "at the top level"
			if parent != "" {
				where = "under " + parent
			}
			hints = append(hints, fmt.Sprintf("the keys %s are: %s", where, strings.Join(known, ", ")))
			continue
		}
		if m := reWrongType.FindStringSubmatch(e); m != nil {
			line, _ := strconv.Atoi(m[1])
			got := yamlKind[m[3]]
			if got == "" {
				got = m[3]
			}
			if m[4] != "" {
				got += " " + strconv.Quote(m[4])
			}
			want := goKind[m[5]]
			if want == "" {
				want = m[5]
			}
			key := m[2]
			if key == "" {
				key = keys[line]
			}
			if key == "" {
				key = "value"
			}
			msgs = append(msgs, fmt.Sprintf("line %d: %s: got %s, want %s", line, key, got, want))
			continue
		}
		msgs = append(msgs, e)
	}
	hints = append(hints, "every key with a valid value is in config.yaml of any run folder")
	return hint.With(fmt.Errorf("%w: %q %s", ErrInvalid, path, strings.Join(msgs, "; ")), strings.Join(hints, "; "))
}

var yamlKind = map[string]string{"str": "a string", "int": "an integer", "float": "a number", "bool": "a boolean",
	"seq": "a list", "map": "a mapping", "null": "null", "timestamp": "a timestamp"}

var goKind = map[string]string{"int": "an integer", "int64": "an integer", "float64": "a number", "float32": "a number",
	"bool": "true or false", "string": "a string", "[]int": "a list of integers", "[2]int": "a list of 2 integers",
	"[3]float32": "a list of 3 numbers", "mapping": "a mapping", "component": "a name or {name, args}"}

// keyLines maps each line of a YAML document to the dotted key ("optimizer.lr") written or valued
// on it; when a line holds several, the innermost, last one wins.
func keyLines(raw []byte) map[int]string {
	keys := map[int]string{}
	var doc yaml.Node
	if yaml.Unmarshal(raw, &doc) != nil {
		return keys
	}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				p := k.Value
				if path != "" {
					p = path + "." + k.Value
				}
				keys[k.Line] = p
				walk(v, p)
			}
		case yaml.SequenceNode:
			keys[n.Line] = path
			for _, c := range n.Content {
				walk(c, path)
			}
		default:
			if path != "" {
				keys[n.Line] = path
			}
		}
	}
	walk(&doc, "")
	return keys
}

// configKeys lists the YAML keys of the struct reached from t by the dotted path of keys.
func configKeys(t reflect.Type, path string) []string {
	if path != "" {
		for _, name := range strings.Split(path, ".") {
			found := false
			for i := 0; i < t.NumField(); i++ {
				if f := t.Field(i); yamlName(f) == name && f.Type.Kind() == reflect.Struct {
					t, found = f.Type, true
					break
				}
			}
			if !found {
				return nil
			}
		}
	}
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		if n := yamlName(t.Field(i)); n != "" {
			keys = append(keys, n)
		}
	}
	return keys
}

func yamlName(f reflect.StructField) string {
	n, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if n == "-" {
		return ""
	}
	return n
}

// hintSep separates a decoding error's message from its hint (see yamlError).
const hintSep = "\x00"

func hinted(msg, hint string) string { return msg + hintSep + hint }

var reErrLine = regexp.MustCompile(`^line (\d+): `)

func errLine(e string) int {
	if m := reErrLine.FindStringSubmatch(e); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return 0
}
