package tune

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

const goodSpace = `# the Group Loss's space
optimizer.args.lr: loguniform(1e-5, 1e-3)
loss.args.temperature: [8, 16, 24, 48]
loss.args.scaling: uniform(0.25, 2)
loss.args.anchors_per_class: int(1, 4)
loss.name: [group]
`

func TestParseSpace(t *testing.T) {
	s, err := ParseSpace([]byte(goodSpace), "space.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := []Param{
		{Key: "optimizer.args.lr", Line: 2, Kind: LogUniform, Low: 1e-5, High: 1e-3},
		{Key: "loss.args.temperature", Line: 3, Kind: Choice, Choices: []any{8, 16, 24, 48}},
		{Key: "loss.args.scaling", Line: 4, Kind: Uniform, Low: 0.25, High: 2},
		{Key: "loss.args.anchors_per_class", Line: 5, Kind: Int, Low: 1, High: 4},
		{Key: "loss.name", Line: 6, Kind: Choice, Choices: []any{"group"}},
	}
	if !reflect.DeepEqual(s.Params, want) {
		t.Fatalf("params\n got %+v\nwant %+v", s.Params, want)
	}
}

// TestParseSpaceErrors: each bad entry is a *SpaceError naming the file, the line and the key.
func TestParseSpaceErrors(t *testing.T) {
	for _, c := range []struct {
		src, key string
		line     int
		msg      string
	}{
		{"a.b: uniform(0, 1)\noptimizer.args.lr: loguniform(0, 1e-3)\n", "optimizer.args.lr", 2, "lower bound > 0"},
		{"loss.args.temperature: gaussian(1, 2)\n", "loss.args.temperature", 1, `unknown distribution "gaussian"`},
		{"x.y: uniform(2, 1)\n", "x.y", 1, "must be below"},
		{"x.y: int(1.5, 3)\n", "x.y", 1, "must be integers"},
		{"x.y: []\n", "x.y", 1, "empty list"},
		{"x.y: 0.001\n", "x.y", 1, "not a distribution"},
		{"x.y: [1, [2]]\n", "x.y", 1, "not a scalar"},
		{"x.y: uniform(a, 1)\n", "x.y", 1, "finite numbers"},
		{"x.y: [1]\n\nx.y: [2]\n", "x.y", 3, "listed twice (first on line 1)"},
		{"Loss.Args: [1]\n", "Loss.Args", 1, "not a dotted config key"},
		{"x.y: {a: 1}\n", "x.y", 1, "want a distribution"},
		{"", "", 1, "empty"},
		{"- a\n", "", 1, "mapping"},
	} {
		_, err := ParseSpace([]byte(c.src), "s.yaml")
		var se *SpaceError
		if !errors.As(err, &se) {
			t.Errorf("%q: error %v, want a *SpaceError", c.src, err)
			continue
		}
		if se.Line != c.line || se.Key != c.key || se.File != "s.yaml" || !strings.Contains(se.Error(), c.msg) {
			t.Errorf("%q: %v (line %d key %q), want line %d key %q and %q", c.src, err, se.Line, se.Key, c.line, c.key, c.msg)
		}
	}
}

// TestPoints: values lie in their ranges, every choice of a 4-way list appears within 9 points
// (the temperature is the base-3 dimension: its first 9 points hit each ninth of [0, 1) once, so
// each quarter at least twice, scrambled or not), and the first
// points do not depend on how many are drawn (what a resumed study relies on).
func TestPoints(t *testing.T) {
	s, err := ParseSpace([]byte(goodSpace), "space.yaml")
	if err != nil {
		t.Fatal(err)
	}
	pts := s.Points(40, 7)
	seen := map[any]bool{}
	for i, p := range pts {
		lr, T, sc, a := p[0].(float64), p[1].(int), p[2].(float64), p[3].(int)
		if lr < 1e-5 || lr > 1e-3 || sc < 0.25 || sc > 2 || a < 1 || a > 4 || p[4] != "group" {
			t.Fatalf("point %d out of range: %v", i, p)
		}
		if i < 9 {
			seen[T] = true
		}
	}
	if len(seen) != 4 {
		t.Errorf("the first 9 points hit temperatures %v, want all 4", seen)
	}
	if few := s.Points(5, 7); !reflect.DeepEqual(few, pts[:5]) {
		t.Errorf("first 5 of 5 %v differ from first 5 of 40 %v", few, pts[:5])
	}
	if other := s.Points(5, 8); reflect.DeepEqual(other, pts[:5]) {
		t.Errorf("seeds 7 and 8 gave the same points")
	}
	// Log-uniform: about half the points below the geometric mean 1e-4.
	below := 0
	for _, p := range pts {
		if p[0].(float64) < 1e-4 {
			below++
		}
	}
	if below < 16 || below > 24 {
		t.Errorf("%d of 40 learning rates below 1e-4, want about 20", below)
	}
}

func TestApply(t *testing.T) {
	base := "# my config\nloss:\n  name: group # the loss\n  args: {temperature: 24}\noptimizer:\n"
	out, err := Apply([]byte(base), []string{"loss.args.temperature", "optimizer.args.lr", "optimizer.epochs"},
		map[string]any{"loss.args.temperature": 16, "optimizer.args.lr": 0.0002, "optimizer.epochs": 12}, "tuned")
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	for _, w := range []string{"# tuned", "# my config", "name: group # the loss", "temperature: 16", "lr: 0.0002", "epochs: 12"} {
		if !strings.Contains(s, w) {
			t.Errorf("missing %q in\n%s", w, s)
		}
	}
	// Another loss named: the base's args (the Group Loss's) go, the new loss's are set, whatever
	// the order of the keys; the same name keeps them.
	out, err = Apply([]byte(base), []string{"loss.args.margin", "loss.name"}, map[string]any{"loss.args.margin": 0.3, "loss.name": "triplet"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if s := string(out); !strings.Contains(s, "name: triplet") || !strings.Contains(s, "margin: 0.3") || strings.Contains(s, "temperature") {
		t.Errorf("loss renamed to triplet:\n%s", s)
	}
	out, err = Apply([]byte(base), []string{"loss.name"}, map[string]any{"loss.name": "group"}, "")
	if err != nil || !strings.Contains(string(out), "temperature: 24") {
		t.Errorf("loss named group again: %v\n%s", err, out)
	}
	if _, err := Apply([]byte("loss: group\n"), []string{"loss.args.temperature"}, map[string]any{"loss.args.temperature": 1}, ""); err == nil ||
		!strings.Contains(err.Error(), `"loss.args.temperature"`) || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("setting under a scalar: %v", err)
	}
}
