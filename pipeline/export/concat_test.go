package export

import (
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/grouploss/pipeline/backbone"
	"github.com/grouploss/pipeline/backbone/ort"
	"github.com/grouploss/pipeline/internal/onnxpb"
)

// ensembleReference is the naive ensemble computed in Go (float64): each head applied to the
// features and L2-normalized (applyHead), the rows concatenated, then L2-normalized again.
func ensembleReference(feats []float32, n, d int, heads [][]Layer) ([]float32, int) {
	var parts [][]float32
	var widths []int
	total := 0
	for _, h := range heads {
		e, w := applyHead(feats, n, d, h)
		parts, widths = append(parts, e), append(widths, w)
		total += w
	}
	cat := make([]float32, 0, n*total)
	for r := 0; r < n; r++ {
		for k, e := range parts {
			cat = append(cat, e[r*widths[k]:(r+1)*widths[k]]...)
		}
	}
	out, _ := applyHead(cat, n, total, nil) // the final normalization
	return out, total
}

// TestExportBranchesRoundTrip: a tiny backbone + 2 random heads exported as one model; the
// onnxruntime output equals the Go concatenation of the normalized head outputs, normalized
// (max |diff| <= 1e-5), with and without flip averaging in front.
func TestExportBranchesRoundTrip(t *testing.T) {
	ortLib(t)
	b, err := backbone.Open(tinyModel, backbone.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	d := b.Dim()
	r := rand.New(rand.NewPCG(7, 8))
	heads := [][]Layer{
		{Center{Mean: randFloats(r, d, 0.2)}, L2Normalize{}, Linear{In: d, Out: 3, W: randFloats(r, 3*d, 1), B: randFloats(r, 3, 0.1)}},
		{L2Normalize{}, &Linear{In: d, Out: 5, W: randFloats(r, 5*d, 1), B: randFloats(r, 5, 0.1)}, ReLU{},
			Linear{In: 5, Out: 2, W: randFloats(r, 10, 1), B: make([]float32, 2)}},
	}
	c, h, w := b.InputShape()[0], b.InputShape()[1], b.InputShape()[2]
	for _, flip := range []bool{false, true} {
		var head []Layer
		if flip {
			head = append(head, FlipAverage{})
		}
		head = append(head, Branches(heads))
		path := filepath.Join(t.TempDir(), "ensemble.onnx")
		if err := Write(path, b.Cut(), b.CutInfo(), head, Metadata{ToolVersion: "test", SourceSHA256: b.Info().SHA256}); err != nil {
			t.Fatal(err)
		}
		info, err := backbone.Inspect(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := info.Outputs[0].ShapeString(); got != shapeStr("batch", 5) || info.Metadata["embedding_dim"] != "5" {
			t.Errorf("flip %v: output %s, embedding_dim %q; want [batch,5] and 5", flip, got, info.Metadata["embedding_dim"])
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		sess, err := ort.NewSession(raw, ort.Options{Threads: 1})
		if err != nil {
			t.Fatal(err)
		}
		n := 4
		imgs := randFloats(r, n*c*h*w, 2)
		got := make([]float32, n*5)
		if err := sess.Run(imgs, n, got); err != nil {
			t.Fatal(err)
		}
		sess.Close()
		feats := make([]float32, n*d)
		if err := b.Features(imgs, n, feats); err != nil {
			t.Fatal(err)
		}
		if flip {
			mirror := make([]float32, len(imgs))
			for row := 0; row < n*c*h; row++ {
				for x := 0; x < w; x++ {
					mirror[row*w+w-1-x] = imgs[row*w+x]
				}
			}
			mf := make([]float32, n*d)
			if err := b.Features(mirror, n, mf); err != nil {
				t.Fatal(err)
			}
			for i := range feats {
				feats[i] = (feats[i] + mf[i]) / 2
			}
		}
		want, dim := ensembleReference(feats, n, d, heads)
		if dim != 5 {
			t.Fatalf("reference width %d, want 5", dim)
		}
		var maxDiff float64
		for i := range want {
			maxDiff = math.Max(maxDiff, math.Abs(float64(got[i]-want[i])))
		}
		if maxDiff > 1e-5 {
			t.Errorf("flip %v: exported ensemble vs Go concat of normalized heads: max |diff| %g > 1e-5", flip, maxDiff)
		}
		// Each branch contributes 1/sqrt(2) of the unit norm: the branch parts have norm 1/sqrt(2).
		for row := 0; row < n; row++ {
			for _, part := range [][2]int{{0, 3}, {3, 5}} {
				var s float64
				for _, v := range got[row*5+part[0] : row*5+part[1]] {
					s += float64(v) * float64(v)
				}
				if math.Abs(math.Sqrt(s)-1/math.Sqrt2) > 1e-5 {
					t.Errorf("flip %v row %d: branch %v has norm %g, want 1/sqrt(2)", flip, row, part, math.Sqrt(s))
				}
			}
		}
		t.Logf("flip %v: 2 branches (3 + 2 wide), batch %d, max |diff| %.3g", flip, n, maxDiff)
	}
}

func TestBranchesBuildErrors(t *testing.T) {
	cut, ci := tinyCut(t)
	meta := Metadata{SourceSHA256: "abc"}
	lin := func(in, out int) Linear { return Linear{In: in, Out: out, W: make([]float32, in*out)} }
	cases := []struct {
		name string
		head []Layer
		want string
	}{
		{"empty", []Layer{Branches{}}, "head layer 0 (Branches) has no branches"},
		{"bad linear", []Layer{ReLU{}, Branches{{lin(4, 2)}, {ReLU{}, lin(3, 2)}}}, "head layer 1 (Branches) branch 1 layer 1 (Linear 3x2)"},
		{"flip inside", []Layer{Branches{{FlipAverage{}}}}, "FlipAverage must be the first layer"},
		{"nested", []Layer{Branches{{Branches{{lin(4, 2)}, {Center{Mean: []float32{1}}}}}}}, "branch 0 layer 0 (Branches) branch 1 layer 0 (Center)"},
	}
	for _, tc := range cases {
		if _, err := Build(cut, ci, tc.head, meta); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error = %v, want %q", tc.name, err, tc.want)
		}
	}
	// Structure: each branch ends in LpNormalization, a Concat joins them, the model's own
	// LpNormalization follows; the width is the sum of the branches'.
	out, err := Build(cut, ci, []Layer{L2Normalize{}, &Branches{{lin(4, 2)}, {}, {lin(4, 3)}}}, meta)
	if err != nil {
		t.Fatal(err)
	}
	nodes := out.Graph.Node
	concat := nodes[len(nodes)-2]
	if concat.OpType != "Concat" || len(concat.Input) != 3 || onnxpb.AttrIntOr(concat, "axis", -1) != 1 {
		t.Fatalf("node before the output: %v", concat)
	}
	byOutput := map[string]string{}
	for _, n := range nodes {
		for _, o := range n.Output {
			byOutput[o] = n.OpType
		}
	}
	for _, in := range concat.Input {
		if byOutput[in] != "LpNormalization" {
			t.Errorf("concat input %q comes from %q, want LpNormalization", in, byOutput[in])
		}
	}
	if got := out.Graph.Output[0].String(); !strings.Contains(got, "dim_value:9") {
		t.Errorf("output %s, want width 2+4+3 = 9", got)
	}
}
