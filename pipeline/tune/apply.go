package tune

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"gopkg.in/yaml.v3"
)

// Apply returns the YAML document base with each dotted key of values set, in the order of keys
// (keys without a value are left alone), creating the mappings on its path that are missing; comments and the other keys are
// kept. header, when not empty, is put as a comment above the document.
//
// A component's args belong to the component named: a key "X.name" set to another name than the
// base's drops the base's "X.args" (the new component starts from its defaults), and the keys
// ending in ".name" are set first, so that a space may give the new component's args in any order.
func Apply(base []byte, keys []string, values map[string]any, header string) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(base)).Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("tune: base config: %w", err)
	}
	if doc.Kind == 0 { // empty file
		doc = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode, Tag: "!!map"}}}
	}
	root := doc.Content[0]
	// The ".name" keys first, each group in the given order.
	isName := func(k string) bool { return strings.HasSuffix(k, ".name") }
	ordered := make([]string, 0, len(keys))
	for _, names := range []bool{true, false} {
		for _, k := range keys {
			if isName(k) == names {
				ordered = append(ordered, k)
			}
		}
	}
	for _, k := range ordered {
		if _, ok := values[k]; !ok {
			continue
		}
		if err := set(root, strings.Split(k, "."), values[k]); err != nil {
			return nil, fmt.Errorf("tune: setting %q: %w", k, err)
		}
	}
	if header != "" {
		doc.HeadComment = strings.TrimSpace(header + "\n" + doc.HeadComment)
	}
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, fmt.Errorf("tune: writing the config: %w", err)
	}
	return out.Bytes(), nil
}

func set(n *yaml.Node, path []string, v any) error {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" { // "loss:" with nothing under it
		*n = yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	}
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d holds a %s, not a mapping, where %q should be", n.Line, kindName(n), path[0])
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value != path[0] {
			continue
		}
		if len(path) == 1 {
			old := n.Content[i+1]
			if path[0] == "name" && old.Kind == yaml.ScalarNode && old.Value != fmt.Sprint(v) {
				dropKey(n, "args")
			}
			return old.Encode(v)
		}
		return set(n.Content[i+1], path[1:], v)
	}
	key := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: path[0]}
	val := &yaml.Node{}
	if len(path) == 1 {
		if err := val.Encode(v); err != nil {
			return err
		}
	} else {
		val = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		if err := set(val, path[1:], v); err != nil {
			return err
		}
	}
	n.Content = append(n.Content, key, val)
	return nil
}

// dropKey removes key and its value from the mapping n.
func dropKey(n *yaml.Node, key string) {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			n.Content = append(n.Content[:i], n.Content[i+2:]...)
			return
		}
	}
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.ScalarNode:
		return fmt.Sprintf("value %q", n.Value)
	case yaml.SequenceNode:
		return "list"
	}
	return "node"
}
