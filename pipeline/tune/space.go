package tune

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Kind is the distribution of a parameter.
type Kind string

const (
	LogUniform Kind = "loguniform"
	Uniform    Kind = "uniform"
	Int        Kind = "int"
	Choice     Kind = "choice"
)

// Param is one searched config key.
type Param struct {
	Key  string // dotted config key, e.g. optimizer.args.lr
	Line int    // line of the key in the space file
	Kind Kind
	// Low and High bound LogUniform, Uniform and Int (both included for Int).
	Low, High float64
	// Choices are the values of a Choice (scalars as YAML decodes them: int, float64, string, bool).
	Choices []any
}

// Space is a search space: its parameters in file order.
type Space struct {
	File   string
	Params []Param
}

// SpaceError is a bad entry of a space file.
type SpaceError struct {
	File string
	Line int
	Key  string // "" when the error is not about one key
	Msg  string
}

func (e *SpaceError) Error() string {
	if e.Key == "" {
		return fmt.Sprintf("tune: %s line %d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("tune: %s line %d: key %q: %s", e.File, e.Line, e.Key, e.Msg)
}

var (
	reDist = regexp.MustCompile(`^\s*(\w+)\s*\(\s*([^,()]+?)\s*,\s*([^,()]+?)\s*\)\s*$`)
	reKey  = regexp.MustCompile(`^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*$`)
)

// ParseSpace reads a space file's content; name stands for the file in errors, which are
// *SpaceError naming the line and the key.
func ParseSpace(raw []byte, name string) (*Space, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &SpaceError{File: name, Line: 1, Msg: "the space is empty: list config keys and their distributions, e.g. optimizer.args.lr: loguniform(1e-5, 1e-3)"}
		}
		return nil, fmt.Errorf("tune: %s: %w", name, err)
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, &SpaceError{File: name, Line: root.Line, Msg: "the space must be a mapping of config keys to distributions"}
	}
	s := &Space{File: name}
	seen := map[string]int{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		bad := func(format string, a ...any) error {
			return &SpaceError{File: name, Line: k.Line, Key: k.Value, Msg: fmt.Sprintf(format, a...)}
		}
		if !reKey.MatchString(k.Value) {
			return nil, bad("not a dotted config key (e.g. loss.args.temperature)")
		}
		if l, dup := seen[k.Value]; dup {
			return nil, bad("listed twice (first on line %d)", l)
		}
		seen[k.Value] = k.Line
		p := Param{Key: k.Value, Line: k.Line}
		switch v.Kind {
		case yaml.SequenceNode:
			p.Kind = Choice
			for _, c := range v.Content {
				if c.Kind != yaml.ScalarNode {
					return nil, bad("choice %d is not a scalar", len(p.Choices)+1)
				}
				var val any
				if err := c.Decode(&val); err != nil {
					return nil, bad("choice %q: %v", c.Value, err)
				}
				p.Choices = append(p.Choices, val)
			}
			if len(p.Choices) == 0 {
				return nil, bad("an empty list of choices")
			}
		case yaml.ScalarNode:
			m := reDist.FindStringSubmatch(v.Value)
			if m == nil {
				return nil, bad("%q is not a distribution: want loguniform(a, b), uniform(a, b), int(a, b) or a list [x, y, ...]", v.Value)
			}
			p.Kind = Kind(m[1])
			lo, err1 := strconv.ParseFloat(m[2], 64)
			hi, err2 := strconv.ParseFloat(m[3], 64)
			if err1 != nil || err2 != nil || math.IsNaN(lo) || math.IsNaN(hi) || math.IsInf(lo, 0) || math.IsInf(hi, 0) {
				return nil, bad("bounds %q and %q must be finite numbers", m[2], m[3])
			}
			p.Low, p.High = lo, hi
			switch p.Kind {
			case LogUniform:
				if !(lo > 0) {
					return nil, bad("loguniform needs a lower bound > 0, not %g", lo)
				}
			case Uniform:
			case Int:
				if lo != math.Trunc(lo) || hi != math.Trunc(hi) {
					return nil, bad("int bounds must be integers, not %s and %s", m[2], m[3])
				}
			default:
				return nil, bad("unknown distribution %q: want loguniform, uniform, int or a list", m[1])
			}
			if !(lo < hi) && !(p.Kind == Int && lo == hi) {
				return nil, bad("the lower bound %g must be below the upper bound %g", lo, hi)
			}
		default:
			return nil, bad("want a distribution (loguniform(a, b), uniform(a, b), int(a, b)) or a list of values")
		}
		s.Params = append(s.Params, p)
	}
	if len(s.Params) == 0 {
		return nil, &SpaceError{File: name, Line: root.Line, Msg: "the space lists no key"}
	}
	return s, nil
}

// Value returns the parameter's value at u in [0, 1): the quantile of its distribution.
// Continuous values keep 4 significant digits, so that configs and tables stay readable.
func (p Param) Value(u float64) any {
	u = min(max(u, 0), math.Nextafter(1, 0))
	switch p.Kind {
	case LogUniform:
		return round4(math.Exp(math.Log(p.Low) + u*(math.Log(p.High)-math.Log(p.Low))))
	case Uniform:
		return round4(p.Low + u*(p.High-p.Low))
	case Int:
		return int(p.Low) + int(u*(p.High-p.Low+1))
	default:
		return p.Choices[int(u*float64(len(p.Choices)))]
	}
}

// Extremes are the values a check of the space tries: the bounds, or every choice.
func (p Param) Extremes() []any {
	switch p.Kind {
	case Choice:
		return p.Choices
	case Int:
		return []any{int(p.Low), int(p.High)}
	}
	return []any{p.Low, p.High}
}

// String writes the distribution as in the space file.
func (p Param) String() string {
	if p.Kind == Choice {
		s := make([]string, len(p.Choices))
		for i, c := range p.Choices {
			s[i] = fmt.Sprint(c)
		}
		return "[" + strings.Join(s, ", ") + "]"
	}
	return fmt.Sprintf("%s(%g, %g)", p.Kind, p.Low, p.High)
}

func round4(v float64) float64 {
	f, _ := strconv.ParseFloat(strconv.FormatFloat(v, 'g', 4, 64), 64)
	return f
}
