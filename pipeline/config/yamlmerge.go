package config

import (
	"fmt"

	"gopkg.in/yaml.v3"
)

// Reading YAML mappings by hand (the component sections) as yaml.v3 reads them: aliases
// resolved, merge keys (<<) expanded.

type yamlPair struct{ k, v *yaml.Node }

func resolveAlias(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isMergeKey(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Value == "<<" && (n.Tag == "" || n.Tag == "!" || n.ShortTag() == "!!merge")
}

// mappingPairs lists the key-value pairs of the mapping n, values' aliases resolved and merge
// keys (<<) expanded as yaml.v3 does: explicit keys win over merged ones, earlier merged mappings
// over later ones.
func mappingPairs(n *yaml.Node) (ps []yamlPair, errs []string) {
	return expandMapping(n, map[*yaml.Node]bool{n: true})
}

// expandMapping is mappingPairs; expanded holds the mappings already expanded, merged again
// only at a lower priority (so they add nothing): each is expanded once, and a file merging
// mappings of merges (2^k keys from k lines) costs linear time.
func expandMapping(n *yaml.Node, expanded map[*yaml.Node]bool) (ps []yamlPair, errs []string) {
	seen := map[string]bool{}
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch {
		case isMergeKey(k):
			merges = append(merges, v)
		case k.Kind != yaml.ScalarNode:
			errs = append(errs, fmt.Sprintf("line %d: a key must be a string", k.Line))
		default:
			ps = append(ps, yamlPair{k, resolveAlias(v)})
			seen[k.Value] = true
		}
	}
	for _, m := range merges {
		m = resolveAlias(m)
		srcs := []*yaml.Node{m}
		if m.Kind == yaml.SequenceNode {
			srcs = srcs[:0]
			for _, s := range m.Content {
				srcs = append(srcs, resolveAlias(s))
			}
		}
		for _, s := range srcs {
			if s.Kind != yaml.MappingNode {
				errs = append(errs, fmt.Sprintf("line %d: a merge (<<) needs a mapping or a list of mappings", s.Line))
				continue
			}
			if expanded[s] {
				continue
			}
			expanded[s] = true
			sub, e := expandMapping(s, expanded)
			errs = append(errs, e...)
			for _, p := range sub {
				if !seen[p.k.Value] {
					seen[p.k.Value] = true
					ps = append(ps, p)
				}
			}
		}
	}
	return ps, errs
}
