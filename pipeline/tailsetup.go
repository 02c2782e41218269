package pipeline

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/advancedclimatesystems/gonnx/onnx"
	ortgo "github.com/yalue/onnxruntime_go"

	"github.com/grouploss/pipeline/backbone"
	"github.com/grouploss/pipeline/backbone/graph"
	"github.com/grouploss/pipeline/internal/onnxpb"
	"github.com/grouploss/pipeline/pipeline/config"
	"github.com/grouploss/pipeline/weights"
)

// tailSetup is what prepareTail checks and prepares, before any image is read.
type tailSetup struct {
	float   *onnx.ModelProto // the float backbone
	cut     string           // where the trained part starts
	feature string           // the feature tensor
	shape   []int            // per-image shape of the cut tensor
	// prefix is the backbone cut at cut (output "features" [batch, prod(shape)]): the float
	// backbone's layers, or the int8 backbone's (int8 set), dequantized at the cut.
	prefix *onnx.ModelProto
	// int8 is the int8 backbone when the prefix is its own layers (backbone.tail_prefix int8),
	// nil when the prefix is the float model's; cutScale and cutZero then name the int8 cut
	// tensor's scale and zero point.
	int8              *onnx.ModelProto
	cutScale, cutZero string
	// prefixBytes is prefix serialized: what onnxruntime runs; prefixSHA its SHA-256 in hex, the
	// activation cache's key.
	prefixBytes []byte
	prefixSHA   string
	graph       *graph.Graph // the trained part, decoded from cut to feature
	// dequantized is set when the backbone was int8 and was converted to float; trainBlocks is
	// backbone.train_blocks (0 with trainable_from).
	dequantized bool
	trainBlocks int
}

// featureModel reports whether the tail is cut from the very model that extracts the features
// (a float backbone, or an int8 one run as its float conversion): the prefix's activations then
// come out of the features' onnxruntime pass, and the untrained tail computes the features again.
func (s *tailSetup) featureModel(bb *backbone.Backbone) bool { return s.float == bb.Model() }

// onePass reports whether one onnxruntime pass of the feature model can also give the
// activations at the cut: the feature model is the prefix's (the float model, or the int8 model
// with backbone.tail_prefix int8).
func (s *tailSetup) onePass(bb *backbone.Backbone) bool {
	return s.featureModel(bb) || s.int8 == bb.Model()
}

// prefixKind is the resolved backbone.tail_prefix: int8 or float.
func (s *tailSetup) prefixKind() config.TailPrefix {
	if s.int8 != nil {
		return config.TailPrefixInt8
	}
	return config.TailPrefixFloat
}

// prepareTail loads the backbone as a float model, resolves the cut tensor, builds the prefix and
// decodes the trained part. It runs in runner.prepare, before features or activations are
// extracted, so that a train_blocks or trainable_from the model cannot honour fails at once:
// config.ErrInvalid with a hint naming valid values (the model's block inputs, or the first tensor after
// an op the engine cannot train).
func (r *runner) prepareTail() (*tailSetup, error) {
	cfg := r.cfg.Backbone
	path := cfg.Path
	// The model as the backbone loaded it, float already when it runs as its float conversion.
	m := r.bb.Model()
	s := &tailSetup{float: m, feature: r.bb.CutInfo().Feature, trainBlocks: cfg.TrainBlocks}
	ts := &TailSummary{TrainBlocks: cfg.TrainBlocks, To: s.feature, BackboneLR: cfg.LR}
	r.sum.Tail = ts
	switch {
	case r.bb.Dequantized():
		ts.Dequantized, s.dequantized = true, true
		r.env.Log.Info("tail training on the backbone's float conversion (backbone.dequantize)")
	case r.bb.Info().Quantized:
		f, rep, err := weights.DequantizeModel(m)
		if err != nil {
			return nil, fmt.Errorf("pipeline: tail training needs a float backbone: %w", err)
		}
		s.float = f
		ts.Dequantized, s.dequantized = true, true
		r.env.Log.Info("backbone converted to float for tail training", "report", rep.String())
	}
	g := s.float.GetGraph()
	if cfg.TrainableFrom != "" {
		s.cut = cfg.TrainableFrom
		if onnxpb.Producers(g)[s.cut] == nil {
			for _, n := range g.GetNode() {
				if n.GetName() == cfg.TrainableFrom && len(n.GetOutput()) > 0 {
					s.cut = n.GetOutput()[0]
				}
			}
		}
		if onnxpb.Producers(g)[s.cut] == nil {
			return nil, withHint(fmt.Errorf("%w: backbone.trainable_from %q is neither a tensor computed by a node nor a node of %q", config.ErrInvalid, cfg.TrainableFrom, path),
				tailCutHint(s.float))
		}
	} else {
		pts := graph.TailCutPoints(s.float)
		if cfg.TrainBlocks > len(pts) {
			return nil, withHint(fmt.Errorf("%w: backbone.train_blocks %d: %q has %d inverted-residual blocks that can be cut before", config.ErrInvalid, cfg.TrainBlocks, path, len(pts)),
				tailCutHint(s.float))
		}
		s.cut = pts[cfg.TrainBlocks-1]
	}
	ts.From = s.cut
	if !downstream(g, s.cut)[s.feature] {
		return nil, withHint(fmt.Errorf("%w: %s: the features %q are not computed from it", config.ErrInvalid, tailOption(cfg), s.feature),
			tailCutHint(s.float))
	}
	prefixModel := s.float
	runsInt8 := r.bb.Info().Quantized && !r.bb.Dequantized()
	if cfg.TailPrefix == config.TailPrefixInt8 || (cfg.TailPrefix == config.TailPrefixAuto && runsInt8) {
		if !runsInt8 {
			return nil, withHint(fmt.Errorf("%w: backbone.tail_prefix int8: the backbone %q does not run int8 here (not quantized, or run as its float conversion by backbone.dequantize %s)", config.ErrInvalid, path, cfg.Dequantize),
				"pass --tail-prefix float, or backbone.dequantize never with an int8 backbone (on a CPU without VNNI its int8 kernels lose accuracy)")
		}
		prefixModel, s.int8 = m, m
	}
	ts.Prefix = string(s.prefixKind())
	prefix, ci, err := backbone.Cut(prefixModel, s.cut)
	if err != nil {
		return nil, fmt.Errorf("pipeline: the backbone before %q: %w", s.cut, err)
	}
	s.prefix = prefix
	if s.int8 != nil {
		s.cutScale, s.cutZero = ci.Scale, ci.ZeroPoint
	}
	if s.prefixBytes, err = onnxpb.Marshal(prefix); err != nil {
		return nil, fmt.Errorf("pipeline: the backbone before %q: %w", s.cut, err)
	}
	sum := sha256.Sum256(s.prefixBytes)
	s.prefixSHA = hex.EncodeToString(sum[:])
	if s.shape, err = tensorShape(s.float, s.cut); err != nil {
		return nil, err
	}
	if p := prodInts(s.shape); p != ci.Dim {
		return nil, fmt.Errorf("pipeline: cut tensor %q has shape %v but the cut gives %d values per image", s.cut, s.shape, ci.Dim)
	}
	ts.ActivationShape = s.shape
	tg, err := graph.Decode(s.float, graph.Options{From: []string{s.cut}, To: s.feature, Trainable: true, InputShapes: [][]int{s.shape}})
	if err != nil {
		return nil, withHint(fmt.Errorf("%w: %s: the backbone from %q to the features %q cannot be trained: %w", config.ErrInvalid, tailOption(cfg), s.cut, s.feature, err),
			tailDecodeHint(s.float, cfg, err))
	}
	if len(tg.Params()) == 0 {
		return nil, withHint(fmt.Errorf("%w: %s: nothing to train between %q and the features %q", config.ErrInvalid, tailOption(cfg), s.cut, s.feature),
			tailCutHint(s.float))
	}
	s.graph = tg
	return s, nil
}

// tailOption names the config value that chose the cut, for errors.
func tailOption(cfg config.BackboneConfig) string {
	if cfg.TrainableFrom != "" {
		return fmt.Sprintf("backbone.trainable_from %q", cfg.TrainableFrom)
	}
	return fmt.Sprintf("backbone.train_blocks %d", cfg.TrainBlocks)
}

// tailDecodeHint suggests valid values when graph.Decode refuses the part of m after the cut:
// the later cut point the *graph.NodeError names and, for train_blocks, the most blocks whose
// input comes at or after it; else the block inputs.
func tailDecodeHint(m *onnx.ModelProto, cfg config.BackboneConfig, err error) string {
	var ne *graph.NodeError
	if !errors.As(err, &ne) || ne.CutAt == "" {
		return tailCutHint(m)
	}
	h := fmt.Sprintf("pass --trainable-from %q (the first tensor after op %q, node %q, that alone carries the rest)", ne.CutAt, ne.Op, ne.Node)
	if cfg.TrainBlocks > 1 {
		after := downstream(m.GetGraph(), ne.CutAt)
		pts := graph.TailCutPoints(m)
		for k := min(cfg.TrainBlocks, len(pts)+1) - 1; k >= 1; k-- {
			if after[pts[k-1]] {
				return fmt.Sprintf("train fewer blocks (--train-blocks %d or less), or %s", k, h)
			}
		}
	}
	return h
}

// downstream returns t and every tensor computed from it in g.
func downstream(g *onnx.GraphProto, t string) map[string]bool {
	down := map[string]bool{t: true}
	for _, n := range g.GetNode() { // topological order
		for _, in := range n.GetInput() {
			if down[in] {
				for _, o := range n.GetOutput() {
					down[o] = true
				}
				break
			}
		}
	}
	return down
}

// tailCutHint lists the cut points of a model for error hints.
func tailCutHint(m *onnx.ModelProto) string {
	pts := graph.TailCutPoints(m)
	if len(pts) == 0 {
		return "the backbone has no inverted-residual blocks: pass backbone.trainable_from (--trainable-from) with a tensor name"
	}
	return fmt.Sprintf("pass --train-blocks between 1 and %d, or --trainable-from with a tensor; the block inputs, last first: %s",
		len(pts), strings.Join(pts[:min(len(pts), 6)], ", "))
}

// tensorShape returns the per-sample shape of tensor t of m as onnxruntime infers it.
func tensorShape(m *onnx.ModelProto, t string) ([]int, error) {
	c := onnxpb.Clone(m)
	c.Graph.Output = []*onnx.ValueInfoProto{{Name: t, Type: &onnx.TypeProto{Value: &onnx.TypeProto_TensorType{
		TensorType: &onnx.TypeProto_Tensor{ElemType: onnxpb.Float}}}}}
	c.Graph.ValueInfo = nil
	b, err := onnxpb.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("pipeline: shape of %q: %w", t, err)
	}
	_, outs, err := ortgo.GetInputOutputInfoWithONNXData(b)
	if err != nil {
		return nil, fmt.Errorf("pipeline: shape of %q: %w", t, err)
	}
	if len(outs) != 1 || len(outs[0].Dimensions) < 2 {
		return nil, fmt.Errorf("pipeline: shape of %q: onnxruntime reports %v", t, outs)
	}
	var s []int
	for _, d := range outs[0].Dimensions[1:] {
		if d <= 0 {
			return nil, fmt.Errorf("pipeline: tensor %q has shape %v: only the batch axis may be dynamic", t, outs[0].Dimensions)
		}
		s = append(s, int(d))
	}
	return s, nil
}

func prodInts(s []int) int {
	p := 1
	for _, v := range s {
		p *= v
	}
	return p
}
