// Package export writes the deployable embedding model: the cut backbone, the trained head and
// an L2 normalization in one ONNX file, input "images" [batch,3,H,W] -> output "embeddings"
// [batch,D'], with the preprocessing recorded in metadata_props.
package export

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/advancedclimatesystems/gonnx/onnx"
	"github.com/grouploss/pipeline/backbone"
	"github.com/grouploss/pipeline/internal/onnxpb"
)

// Names of the exported model's input and output.
const (
	InputName  = "images"
	OutputName = "embeddings"
)

// Layer is one head layer: Center, L2Normalize, Linear, ReLU, Branches or FlipAverage (values or
// pointers).
type Layer interface{ layer() }

// Center subtracts Mean (length D) from every feature row (ONNX Sub).
type Center struct{ Mean []float32 }

// L2Normalize scales every row to unit Euclidean norm (LpNormalization p=2, axis=1).
type L2Normalize struct{}

// Linear maps In to Out features: y = x Wᵀ + B, with W row-major [Out][In] and B of length Out
// (nil for no bias). Exported as Gemm with transB=1.
type Linear struct {
	In, Out int
	W       []float32
	B       []float32
}

// ReLU is max(x, 0) (ONNX Relu).
type ReLU struct{}

// FlipAverage, allowed only as the first layer, makes the features of an image the mean of the
// backbone features of the image and of its horizontal mirror (test-time flip augmentation): the
// batch and its mirror (Slice with step -1 along the width) run through the backbone together as
// one batch of 2N, then the two halves are averaged (Reshape to [2, N, D] and ReduceMean).
type FlipAverage struct{}

func (Center) layer()      {}
func (L2Normalize) layer() {}
func (Linear) layer()      {}
func (ReLU) layer()        {}
func (FlipAverage) layer() {}

// Metadata is recorded in the model's metadata_props.
type Metadata struct {
	// Preprocess describes the input preprocessing, e.g. "size": "224", "resize": "256",
	// "mean": "0.485,0.456,0.406", "std": ..., "channel_order": "RGB", "scale": "1/255". Keys
	// are written with a "preprocess." prefix (added when missing).
	Preprocess   map[string]string
	ToolVersion  string            // written as tool_version and producer_version
	SourceSHA256 string            // SHA-256 of the source backbone file (required)
	Extra        map[string]string // further entries, written as given
}

// Write builds the embedding model (see Build) and writes it atomically to path.
func Write(path string, cut *onnx.ModelProto, ci *backbone.CutInfo, head []Layer, meta Metadata) error {
	m, err := Build(cut, ci, head, meta)
	if err != nil {
		return err
	}
	if err := onnxpb.SaveAtomic(path, m); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	return nil
}

// Build returns the embedding model: the cut backbone (see backbone.Cut) with its input renamed
// to "images" [batch, C, H, W], the head layers applied to "features" [batch, D], then
// LpNormalization(p=2, axis=1) giving "embeddings" [batch, D'] float32. The opsets of the cut
// model are kept; cut is not modified.
func Build(cut *onnx.ModelProto, ci *backbone.CutInfo, head []Layer, meta Metadata) (*onnx.ModelProto, error) {
	if cut.GetGraph() == nil || ci == nil {
		return nil, fmt.Errorf("export: missing cut model or cut info")
	}
	if meta.SourceSHA256 == "" {
		return nil, fmt.Errorf("export: metadata has no source model SHA-256")
	}
	if v := onnxpb.OpsetVersion(cut, ""); v < 7 {
		return nil, fmt.Errorf("export: cut model imports ai.onnx opset %d, want >= 7 (broadcasting Sub, Gemm)", v)
	}
	m := onnxpb.Clone(cut)
	g := m.Graph
	ins := onnxpb.RealInputs(g)
	if len(ins) != 1 || ins[0].GetName() != ci.InputName {
		return nil, fmt.Errorf("export: cut model inputs %v do not match cut info input %q", names(ins), ci.InputName)
	}
	if len(g.GetOutput()) != 1 || g.GetOutput()[0].GetName() != backbone.OutputName {
		return nil, fmt.Errorf("export: cut model outputs %v, want exactly %q", names(g.GetOutput()), backbone.OutputName)
	}
	used := onnxpb.Names(g)
	for _, reserved := range []string{InputName, OutputName} {
		if used[reserved] && reserved != ci.InputName {
			free := onnxpb.UniqueName(used, reserved+"_src")
			onnxpb.Rename(g, reserved, free)
			used[free] = true
		}
	}
	onnxpb.Rename(g, ci.InputName, InputName)
	used[InputName] = true
	c, h, w := ci.InputShape[0], ci.InputShape[1], ci.InputShape[2]
	for i, vi := range g.Input {
		if vi.GetName() == InputName {
			g.Input[i] = onnxpb.ValueInfo(InputName, onnxpb.Float, backbone.BatchDim, c, h, w)
		}
	}

	cur, dim := backbone.OutputName, ci.Dim
	prefix := "head"
	for i := 1; hasPrefix(used, prefix+"."); i++ {
		prefix = "head" + strconv.Itoa(i)
	}
	flip := false
	if len(head) > 0 {
		if _, flip = deref(head[0]).(FlipAverage); flip {
			var err error
			if cur, err = addFlipAverage(m, used, prefix+".flip", dim); err != nil {
				return nil, err
			}
			head = head[1:]
		}
	}
	cur, dim, err := emitLayers(g, head, prefix, "head layer", cur, dim)
	if err != nil {
		return nil, err
	}
	g.Node = append(g.Node, onnxpb.Node("LpNormalization", "embeddings.l2", []string{cur}, []string{OutputName},
		onnxpb.AttrInt("axis", 1), onnxpb.AttrInt("p", 2)))
	g.Output = []*onnx.ValueInfoProto{onnxpb.ValueInfo(OutputName, onnxpb.Float, backbone.BatchDim, dim)}
	g.ValueInfo = nil

	m.ProducerName = "github.com/grouploss/pipeline"
	m.ProducerVersion = meta.ToolVersion
	m.MetadataProps = nil
	for _, k := range sortedKeys(meta.Preprocess) {
		key := k
		if !strings.HasPrefix(key, "preprocess.") {
			key = "preprocess." + key
		}
		onnxpb.SetMetadata(m, key, meta.Preprocess[k])
	}
	onnxpb.SetMetadata(m, "embedding_dim", strconv.Itoa(dim))
	onnxpb.SetMetadata(m, "tool_version", meta.ToolVersion)
	onnxpb.SetMetadata(m, "feature_tensor", ci.Feature)
	onnxpb.SetMetadata(m, "feature_dim", strconv.Itoa(ci.Dim))
	onnxpb.SetMetadata(m, "source_model_sha256", meta.SourceSHA256)
	onnxpb.SetMetadata(m, MetaFlipTTA, strconv.FormatBool(flip))
	for _, k := range sortedKeys(meta.Extra) {
		onnxpb.SetMetadata(m, k, meta.Extra[k])
	}
	return m, nil
}

// emitLayers appends the nodes and initializers of layers to g, reading the [batch, dim] tensor
// cur. Tensor and node names start with prefix; errors name layer i as "<what> <i>". It returns
// the last output and its width.
func emitLayers(g *onnx.GraphProto, layers []Layer, prefix, what, cur string, dim int) (string, int, error) {
	for i, l := range layers {
		base := fmt.Sprintf("%s.%d", prefix, i)
		out := base + ".out"
		switch l := deref(l).(type) {
		case Center:
			if len(l.Mean) != dim {
				return "", 0, fmt.Errorf("export: %s %d (Center): mean has %d values, want %d", what, i, len(l.Mean), dim)
			}
			g.Initializer = append(g.Initializer, onnxpb.FloatTensor(base+".mean", []int64{int64(dim)}, l.Mean))
			g.Node = append(g.Node, onnxpb.Node("Sub", base+".sub", []string{cur, base + ".mean"}, []string{out}))
		case L2Normalize:
			g.Node = append(g.Node, onnxpb.Node("LpNormalization", base+".l2", []string{cur}, []string{out},
				onnxpb.AttrInt("axis", 1), onnxpb.AttrInt("p", 2)))
		case Linear:
			if l.In != dim || l.Out <= 0 || len(l.W) != l.In*l.Out {
				return "", 0, fmt.Errorf("export: %s %d (Linear %dx%d): input is %d wide and W has %d values, want In=%d and %d values",
					what, i, l.In, l.Out, dim, len(l.W), dim, dim*max(l.Out, 0))
			}
			bias := l.B
			if bias == nil {
				bias = make([]float32, l.Out)
			}
			if len(bias) != l.Out {
				return "", 0, fmt.Errorf("export: %s %d (Linear %dx%d): bias has %d values, want %d", what, i, l.In, l.Out, len(bias), l.Out)
			}
			g.Initializer = append(g.Initializer,
				onnxpb.FloatTensor(base+".weight", []int64{int64(l.Out), int64(l.In)}, l.W),
				onnxpb.FloatTensor(base+".bias", []int64{int64(l.Out)}, bias))
			g.Node = append(g.Node, onnxpb.Node("Gemm", base+".gemm", []string{cur, base + ".weight", base + ".bias"}, []string{out},
				onnxpb.AttrInt("transB", 1)))
			dim = l.Out
		case ReLU:
			g.Node = append(g.Node, onnxpb.Node("Relu", base+".relu", []string{cur}, []string{out}))
		case Branches:
			var err error
			if out, dim, err = emitBranches(g, l, base, fmt.Sprintf("%s %d (Branches)", what, i), cur, dim); err != nil {
				return "", 0, err
			}
		case FlipAverage:
			return "", 0, fmt.Errorf("export: %s %d: FlipAverage must be the first layer of the head", what, i)
		default:
			return "", 0, fmt.Errorf("export: %s %d has unsupported type %T", what, i, l)
		}
		cur = out
	}
	return cur, dim, nil
}

// addFlipAverage rewires m so that the backbone sees [images; mirrored images] and returns the name
// of the averaged [batch, dim] features.
func addFlipAverage(m *onnx.ModelProto, used map[string]bool, base string, dim int) (string, error) {
	g := m.Graph
	opset := onnxpb.OpsetVersion(m, "")
	if opset < 10 {
		return "", fmt.Errorf("export: flip averaging needs opset >= 10 (Slice with steps), the model has %d", opset)
	}
	both := onnxpb.UniqueName(used, base+".input")
	used[both] = true
	// Every backbone node now reads the doubled batch; the graph input stays "images".
	for _, n := range g.Node {
		for i, in := range n.Input {
			if in == InputName {
				n.Input[i] = both
			}
		}
	}
	mirror := base + ".mirror"
	pre := []*onnx.NodeProto{
		onnxpb.Node("Slice", base+".slice", []string{InputName, base + ".starts", base + ".ends", base + ".axes", base + ".steps"}, []string{mirror}),
		onnxpb.Node("Concat", base+".concat", []string{InputName, mirror}, []string{both}, onnxpb.AttrInt("axis", 0)),
	}
	g.Initializer = append(g.Initializer,
		onnxpb.Int64Tensor(base+".starts", []int64{1}, []int64{-1}),
		onnxpb.Int64Tensor(base+".ends", []int64{1}, []int64{math.MinInt64}),
		onnxpb.Int64Tensor(base+".axes", []int64{1}, []int64{3}),
		onnxpb.Int64Tensor(base+".steps", []int64{1}, []int64{-1}),
		onnxpb.Int64Tensor(base+".shape", []int64{3}, []int64{2, -1, int64(dim)}))
	g.Node = append(pre, g.Node...)
	pairs, out := base+".pairs", base+".mean"
	g.Node = append(g.Node, onnxpb.Node("Reshape", base+".reshape", []string{backbone.OutputName, base + ".shape"}, []string{pairs}))
	if opset >= 18 {
		g.Initializer = append(g.Initializer, onnxpb.Int64Tensor(base+".reduce_axes", []int64{1}, []int64{0}))
		g.Node = append(g.Node, onnxpb.Node("ReduceMean", base+".reduce", []string{pairs, base + ".reduce_axes"}, []string{out},
			onnxpb.AttrInt("keepdims", 0)))
	} else {
		g.Node = append(g.Node, onnxpb.Node("ReduceMean", base+".reduce", []string{pairs}, []string{out},
			onnxpb.AttrInts("axes", 0), onnxpb.AttrInt("keepdims", 0)))
	}
	return out, nil
}

func deref(l Layer) Layer {
	switch p := l.(type) {
	case *Center:
		return *p
	case *L2Normalize:
		return *p
	case *Linear:
		return *p
	case *ReLU:
		return *p
	case *Branches:
		return *p
	}
	return l
}

func names(vis []*onnx.ValueInfoProto) []string {
	out := make([]string, len(vis))
	for i, vi := range vis {
		out[i] = vi.GetName()
	}
	return out
}

func hasPrefix(used map[string]bool, prefix string) bool {
	for name := range used {
		if strings.HasPrefix(name, prefix) {
			return true
		}
	}
	return false
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
