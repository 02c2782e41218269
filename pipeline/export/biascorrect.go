package export

import (
	"fmt"
	"math"

	"github.com/advancedclimatesystems/gonnx/onnx"
	"github.com/grouploss/pipeline/internal/onnxpb"
)

// Bias correction of a quantized model's features, the empirical form of Nagel et al., "Data-Free
// Quantization Through Weight Equalization and Bias Correction" (ICCV 2019). Rounding the weights
// and activations adds noise of mean zero, but the ReLUs and clips after it turn part of that noise
// into a shift of the features' mean (E[relu(x+n)] > relu(x)). The head subtracts the training
// features' mean and L2-normalizes: a shift that is small next to the features is large next to
// what the head keeps. On the default CUB-100 run the int8 features' mean moved by about 18% of the
// float features' mean, which cost 0.6-1.4 R@1 (README, "Deploying"). The shift measured on the
// calibration images is added back after the backbone, in float: folded into the head's centering
// constant when the head centers (no op added), else one Add of a D-vector per image.

// MetaBiasCorrection is the metadata key describing the correction ("" when none was applied).
const MetaBiasCorrection = "quantization.bias_correction"

// FeatureShift returns, per feature, the float features' mean minus the quantized features' mean
// (both over the same images), and the size of that difference relative to the float mean (L2).
func FeatureShift(floatMean, quantMean []float64) (delta []float32, relative float64, err error) {
	if len(floatMean) != len(quantMean) || len(floatMean) == 0 {
		return nil, 0, fmt.Errorf("export: bias correction: %d float and %d quantized feature means, want the same number > 0", len(floatMean), len(quantMean))
	}
	delta = make([]float32, len(floatMean))
	var dd, ff float64
	for i, f := range floatMean {
		d := f - quantMean[i]
		if math.IsNaN(d) || math.IsInf(d, 0) {
			return nil, 0, fmt.Errorf("export: bias correction: feature %d: float mean %g, quantized mean %g", i, f, quantMean[i])
		}
		delta[i] = float32(d)
		dd += d * d
		ff += f * f
	}
	if ff > 0 {
		relative = math.Sqrt(dd / ff)
	}
	return delta, relative, nil
}

// AddToTensor returns a copy of m in which tensor t, wherever a node or the graph's outputs read
// it, has delta added (broadcast over its last axis). When t's one reader is a Sub of a constant
// vector of len(delta) values (the head's centering, t - mean), delta is folded into that constant
// (t - (mean - delta)) and the graph keeps its ops; otherwise t's producer writes
// "<t>_uncorrected" and an Add right after it writes t, so that what reads t by name (the mirror
// pass, the head) is unchanged.
func AddToTensor(m *onnx.ModelProto, t string, delta []float32) (*onnx.ModelProto, error) {
	out := onnxpb.Clone(m)
	g := out.Graph
	prod := onnxpb.Producers(g)[t]
	if prod == nil {
		return nil, fmt.Errorf("export: bias correction: no node computes tensor %q", t)
	}
	if foldIntoSub(g, t, delta) {
		return out, nil
	}
	used := onnxpb.Names(g)
	raw := onnxpb.UniqueName(used, t+"_uncorrected")
	used[raw] = true
	value := onnxpb.UniqueName(used, t+"_correction")
	used[value] = true
	for i, o := range prod.Output {
		if o == t {
			prod.Output[i] = raw
		}
	}
	add := onnxpb.Node("Add", onnxpb.UniqueName(used, t+"_BiasCorrection"), []string{raw, value}, []string{t})
	var nodes []*onnx.NodeProto
	for _, n := range g.Node {
		nodes = append(nodes, n)
		if n == prod {
			nodes = append(nodes, add)
		}
	}
	g.Node = nodes
	g.Initializer = append(g.Initializer, onnxpb.FloatTensor(value, []int64{int64(len(delta))}, delta))
	return out, nil
}

// foldIntoSub folds delta into the constant of a Sub that is the one reader of t (t - c becomes
// t - (c - delta), the constant renamed so that nothing else reading c changes) and reports
// whether it could.
func foldIntoSub(g *onnx.GraphProto, t string, delta []float32) bool {
	readers := onnxpb.Consumers(g)[t]
	for _, o := range g.GetOutput() {
		if o.GetName() == t {
			return false
		}
	}
	if len(readers) != 1 || readers[0].GetOpType() != "Sub" || len(readers[0].Input) != 2 || readers[0].Input[0] != t {
		return false
	}
	sub := readers[0]
	c := onnxpb.Initializers(g)[sub.Input[1]]
	if c == nil {
		return false
	}
	v, err := onnxpb.Floats(c)
	if err != nil || len(v) != len(delta) {
		return false
	}
	folded := make([]float32, len(v))
	for i := range v {
		folded[i] = v[i] - delta[i]
	}
	name := onnxpb.UniqueName(onnxpb.Names(g), c.GetName()+"_bias_corrected")
	g.Initializer = append(g.Initializer, onnxpb.FloatTensor(name, c.GetDims(), folded))
	sub.Input[1] = name
	g.Initializer = dropUnused(g)
	return true
}
