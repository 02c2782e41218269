package export

import (
	"fmt"
	"math"
	"sort"

	"github.com/advancedclimatesystems/gonnx/onnx"
	"github.com/grouploss/pipeline/backbone"
	"github.com/grouploss/pipeline/internal/onnxpb"
	"gonum.org/v1/gonum/mat"
)

// Static post-training quantization in onnxruntime's QDQ format: QuantizeLinear/DequantizeLinear
// pairs around the float ops, which onnxruntime's graph optimizer fuses into its int8 kernels
// (QLinearConv, QLinearAdd). The conventions are those of onnxruntime's own quantizer
// (onnxruntime/python/tools/quantization, quantize_static with the QDQ format):
//   - activations uint8, asymmetric, the calibrated range widened to hold 0 (so 0 is exact);
//   - weights int8, symmetric (zero point 0), one scale per output channel, [-127, 127], or
//     [-64, 64] with reduce range (7-bit weights, see QuantizeOptions.ReduceRange);
//   - biases int32 with scale input scale x weight scale, zero point 0;
//   - a Relu or Clip right after a quantized Conv, Add or GlobalAveragePool is dropped: the
//     QuantizeLinear of its output, calibrated on the activation's output, clamps to the same range;
//   - a GlobalAveragePool of a quantized activation gets a QuantizeLinear on its output, so that
//     onnxruntime runs it as QLinearGlobalAveragePool on the uint8 map (in float it first
//     dequantizes the whole map and transposes it back from its NHWC layout);
//   - one QuantizeLinear per tensor and one DequantizeLinear per consumer (onnxruntime's
//     "dedicated QDQ pair"), so every node unit owns its DequantizeLinear.

// Range is the calibrated value range of an activation tensor.
type Range struct{ Min, Max float32 }

// QuantizeOptions configures Quantize.
type QuantizeOptions struct {
	// ReduceRange quantizes weights to 7 bits ([-64, 64]). On x86 CPUs without VNNI onnxruntime's
	// u8s8 kernels multiply with vpmaddubsw, which adds two uint8 x int8 products into a
	// saturating int16: 2 x 255 x 127 overflows it, 2 x 255 x 64 does not. With VNNI the products
	// are summed in int32 and the 8th bit is free precision.
	ReduceRange bool
	// Until, when set, limits quantization to the nodes that compute this tensor (the backbone's
	// features): what follows it (the head, the normalizations) stays float.
	Until string
	// Moments, when it holds the second moments of a 1x1 Conv's input (see PointwiseInputs), has
	// that Conv's weights rounded with error feedback (QuantizeWeightsGPTQ) instead of to nearest.
	Moments *Moments
}

// QuantizeReport says what Quantize did.
type QuantizeReport struct {
	Conv, Add     int      // nodes quantized
	ErrorFeedback int      // Convs whose weights were rounded with error feedback (QuantizeWeightsGPTQ)
	Pool          int      // GlobalAveragePools given a QuantizeLinear on their output
	Activations   int      // activation tensors given a QuantizeLinear
	RemovedActs   int      // Relu/Clip nodes folded into the QuantizeLinear of their Conv, Add or pool
	Degenerate    []string // activation tensors whose calibrated range was a single value
	WeightQMax    int      // 127, or 64 with reduce range
	OpsetRaisedTo int64    // the ai.onnx opset was raised to 13 (per-axis DequantizeLinear), 0 when not
}

// Quantization metadata keys written by Quantize.
const (
	MetaQuantization = "quantization"             // "qdq_int8" in a quantized model
	MetaReduceRange  = backbone.MetaReduceRange   // "true" for 7-bit weights
	MetaWeights      = "quantization.weights"     // e.g. "int8 symmetric per-channel [-64,64]"
	MetaActivations  = "quantization.activations" // e.g. "uint8 asymmetric per-tensor"
	MetaRounding     = "quantization.weight_rounding"
)

// opsetSafeAt13 are the ops whose meaning is the same at opset 13 as at opsets 7-12, so that a
// model importing an older opset can be raised to 13 for per-axis DequantizeLinear (the int8
// layers of an int8 backbone stay as they are in the export of backbone.tail_prefix int8).
var opsetSafeAt13 = map[string]bool{
	"Conv": true, "Relu": true, "Clip": true, "Add": true, "Sub": true, "Mul": true, "Div": true,
	"GlobalAveragePool": true, "AveragePool": true, "MaxPool": true, "Reshape": true, "Flatten": true,
	"Gemm": true, "MatMul": true, "Concat": true, "Slice": true, "ReduceMean": true,
	"LpNormalization": true, "Transpose": true, "Identity": true, "BatchNormalization": true,
	"Sigmoid": true, "HardSigmoid": true, "Shape": true, "Gather": true, "Constant": true,
	"QuantizeLinear": true, "DequantizeLinear": true, "QLinearConv": true, "QLinearMatMul": true,
}

// QuantizeTargets returns the activation tensors Quantize needs a Range for, in graph order.
func QuantizeTargets(m *onnx.ModelProto, opts QuantizeOptions) ([]string, error) {
	p, err := plan(m, opts)
	if err != nil {
		return nil, err
	}
	return p.tensors, nil
}

// PointwiseInputs returns the input tensors of the 1x1 Convs (one group) that Quantize quantizes,
// with their channel counts: the tensors whose Moments let Quantize round those Convs' weights with
// error feedback.
func PointwiseInputs(m *onnx.ModelProto, opts QuantizeOptions) (map[string]int, error) {
	p, err := plan(m, opts)
	if err != nil {
		return nil, err
	}
	inits := onnxpb.Initializers(m.GetGraph())
	out := map[string]int{}
	for n := range p.nodes {
		if c, ok := pointwise(n, inits); ok {
			out[n.GetInput()[0]] = c
		}
	}
	return out, nil
}

// pointwise reports whether the Conv n is a 1x1 convolution of one group, a linear map of each
// position's channel vector, and its number of input channels.
func pointwise(n *onnx.NodeProto, inits map[string]*onnx.TensorProto) (int, bool) {
	if n.GetOpType() != "Conv" || len(n.GetInput()) < 2 {
		return 0, false
	}
	if g := onnxpb.Attr(n, "group"); g != nil && g.GetI() != 1 {
		return 0, false
	}
	w := inits[n.GetInput()[1]]
	if w == nil {
		return 0, false
	}
	d := w.GetDims()
	for _, k := range d[min(2, len(d)):] {
		if k != 1 {
			return 0, false
		}
	}
	if len(d) < 2 || d[1] < 1 {
		return 0, false
	}
	return int(d[1]), true
}

// quantPlan is what Quantize will do to a graph.
type quantPlan struct {
	nodes   map[*onnx.NodeProto]bool // Conv, Add and GlobalAveragePool nodes to quantize
	folded  map[*onnx.NodeProto]bool // Relu/Clip nodes folded into the Q of their Conv or Add
	tensors []string                 // activation tensors to quantize, graph order
	renamed map[string]string        // quantized node's output -> the folded activation's output it becomes
}

func plan(m *onnx.ModelProto, opts QuantizeOptions) (*quantPlan, error) {
	g := m.GetGraph()
	if g == nil {
		return nil, fmt.Errorf("export: quantize: model has no graph")
	}
	inits := onnxpb.Initializers(g)
	consumers := onnxpb.Consumers(g)
	outputs := map[string]bool{}
	for _, o := range g.GetOutput() {
		outputs[o.GetName()] = true
	}
	scope := ancestors(g, opts.Until)
	p := &quantPlan{nodes: map[*onnx.NodeProto]bool{}, folded: map[*onnx.NodeProto]bool{}, renamed: map[string]string{}}
	seen := map[string]bool{}
	want := func(t string) {
		if !seen[t] && inits[t] == nil && !outputs[t] {
			seen[t] = true
			p.tensors = append(p.tensors, t)
		}
	}
	isActivation := func(t string) bool { return t != "" && inits[t] == nil && !outputs[t] }
	// The output of a quantized node gets the QuantizeLinear onnxruntime needs to fuse it; a lone
	// Relu or Clip after it folds into that QuantizeLinear (see foldable).
	quantizeOutput := func(n *onnx.NodeProto) {
		out := n.GetOutput()[0]
		if cs := consumers[out]; len(cs) == 1 && foldable(cs[0], inits) && !outputs[cs[0].GetOutput()[0]] &&
			(scope == nil || scope[cs[0]]) {
			p.folded[cs[0]] = true
			p.renamed[out] = cs[0].GetOutput()[0]
			want(cs[0].GetOutput()[0])
		} else {
			want(out)
		}
	}
	for _, n := range g.GetNode() {
		if scope != nil && !scope[n] || (n.GetDomain() != "" && n.GetDomain() != "ai.onnx") {
			continue
		}
		switch n.GetOpType() {
		case "Conv":
			in := n.GetInput()
			if len(in) < 2 || !isActivation(in[0]) || inits[in[1]] == nil || len(consumers[in[1]]) != 1 ||
				inits[in[1]].GetDataType() != onnxpb.Float || len(n.GetOutput()) != 1 {
				continue
			}
			if len(in) > 2 && in[2] != "" && (inits[in[2]] == nil || len(consumers[in[2]]) != 1) {
				continue
			}
			out := n.GetOutput()[0]
			if outputs[out] {
				continue
			}
			p.nodes[n] = true
			want(in[0])
			quantizeOutput(n)
		case "Add":
			in := n.GetInput()
			if len(in) != 2 || !isActivation(in[0]) || !isActivation(in[1]) || len(n.GetOutput()) != 1 || outputs[n.GetOutput()[0]] {
				continue
			}
			p.nodes[n] = true
			want(in[0])
			want(in[1])
			quantizeOutput(n)
		case "GlobalAveragePool":
			// Only after a quantized activation (a Conv's or Add's output, planned above in
			// graph order): its input already has a DequantizeLinear.
			in := n.GetInput()
			if len(in) != 1 || !seen[in[0]] || len(n.GetOutput()) != 1 || outputs[n.GetOutput()[0]] {
				continue
			}
			p.nodes[n] = true
			quantizeOutput(n)
		}
	}
	// Graph order: a tensor's QuantizeLinear follows its producer.
	order := map[string]int{}
	for _, in := range g.GetInput() {
		order[in.GetName()] = -1
	}
	for i, n := range g.GetNode() {
		for _, o := range n.GetOutput() {
			order[o] = i
		}
	}
	sort.SliceStable(p.tensors, func(a, b int) bool { return order[p.tensors[a]] < order[p.tensors[b]] })
	return p, nil
}

// foldable reports whether n is a Relu, or a Clip with constant bounds min <= 0 <= max, which the
// QuantizeLinear of its output can replace: the quantized range is the calibrated range of the
// activation's output widened to hold 0, so it lies within [min, max] and the QuantizeLinear
// clamps to it.
func foldable(n *onnx.NodeProto, inits map[string]*onnx.TensorProto) bool {
	switch n.GetOpType() {
	case "Relu":
		return len(n.GetOutput()) == 1
	case "Clip":
		lo, hi := float32(math.Inf(-1)), float32(math.Inf(1))
		if a := onnxpb.Attr(n, "min"); a != nil {
			lo = a.GetF()
		}
		if a := onnxpb.Attr(n, "max"); a != nil {
			hi = a.GetF()
		}
		for i, name := range n.GetInput()[1:] {
			if name == "" {
				continue
			}
			t := inits[name]
			if t == nil {
				return false
			}
			v, err := onnxpb.Floats(t)
			if err != nil || len(v) != 1 {
				return false
			}
			if i == 0 {
				lo = v[0]
			} else {
				hi = v[0]
			}
		}
		return lo <= 0 && hi >= 0 && len(n.GetOutput()) == 1
	}
	return false
}

// ancestors returns the nodes that compute tensor t, or nil (every node) when t is "".
func ancestors(g *onnx.GraphProto, t string) map[*onnx.NodeProto]bool {
	if t == "" {
		return nil
	}
	prod := onnxpb.Producers(g)
	out := map[*onnx.NodeProto]bool{}
	stack := []string{t}
	for len(stack) > 0 {
		name := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		n := prod[name]
		if n == nil || out[n] {
			continue
		}
		out[n] = true
		stack = append(stack, n.GetInput()...)
	}
	return out
}

// ActivationParams returns the uint8 scale and zero point of a calibrated range, as onnxruntime's
// quantizer computes them: the range is widened to hold 0, scale = (max - min) / 255, zero point
// = round(-min / scale). A range of one value (a constant tensor) gets scale 1, so every scale is
// finite and positive; degenerate reports it.
func ActivationParams(r Range) (scale float32, zero uint8, degenerate bool) {
	lo, hi := math.Min(float64(r.Min), 0), math.Max(float64(r.Max), 0)
	s := (hi - lo) / 255
	if !(s > 1e-12) || math.IsInf(s, 0) {
		return 1, 0, true
	}
	z := math.RoundToEven(-lo / s)
	return float32(s), uint8(min(max(z, 0), 255)), false
}

// QuantizeWeights quantizes w ([channels][rest...], row-major, channel axis 0) symmetrically per
// channel to [-qmax, qmax]: scale_c = max|w_c| / qmax (1 for an all-zero channel), q =
// round-half-even(w / scale_c), clamped.
func QuantizeWeights(w []float32, channels, qmax int) (q []int8, scales []float32) {
	per := len(w) / channels
	q = make([]int8, len(w))
	scales = make([]float32, channels)
	for c := 0; c < channels; c++ {
		row := w[c*per : (c+1)*per]
		var amax float64
		for _, v := range row {
			amax = math.Max(amax, math.Abs(float64(v)))
		}
		s := amax / float64(qmax)
		if !(s > 0) {
			s = 1
		}
		scales[c] = float32(s)
		for i, v := range row {
			x := math.RoundToEven(float64(v) / float64(scales[c]))
			q[c*per+i] = int8(min(max(x, float64(-qmax)), float64(qmax)))
		}
	}
	return q, scales
}

// Quantize returns a QDQ copy of the float model m: Conv nodes (with constant weights) and Adds of
// two activations, within opts.Until, get int8 weights and uint8 activations (see the package's
// conventions above); ranges must hold a Range for every tensor QuantizeTargets lists. The model's
// opset is raised to 13 when older (per-axis DequantizeLinear); ops whose meaning changed at 13
// are refused. Metadata records the scheme (MetaQuantization, MetaReduceRange, ...).
func Quantize(m *onnx.ModelProto, ranges map[string]Range, opts QuantizeOptions) (*onnx.ModelProto, *QuantizeReport, error) {
	p, err := plan(m, opts)
	if err != nil {
		return nil, nil, err
	}
	if len(p.nodes) == 0 {
		return nil, nil, fmt.Errorf("export: quantize: the model has no Conv or Add node to quantize")
	}
	rep := &QuantizeReport{WeightQMax: 127}
	if opts.ReduceRange {
		rep.WeightQMax = 64
	}
	out := onnxpb.Clone(m)
	g := out.Graph
	if v := onnxpb.OpsetVersion(out, ""); v < 13 {
		for _, n := range g.GetNode() {
			if (n.GetDomain() == "" || n.GetDomain() == "ai.onnx") && !opsetSafeAt13[n.GetOpType()] {
				return nil, nil, fmt.Errorf("export: quantize: node %q (%s) would need rewriting to raise the model's opset from %d to 13 (per-axis DequantizeLinear)",
					n.GetName(), n.GetOpType(), v)
			}
		}
		for _, op := range out.OpsetImport {
			if op.GetDomain() == "" || op.GetDomain() == "ai.onnx" {
				op.Version = 13
			}
		}
		rep.OpsetRaisedTo = 13
	}
	// The plan was made on m; map its nodes to the clone's by position.
	nodes := map[*onnx.NodeProto]bool{}
	folded := map[*onnx.NodeProto]bool{}
	for i, n := range m.Graph.GetNode() {
		if p.nodes[n] {
			nodes[g.Node[i]] = true
		}
		if p.folded[n] {
			folded[g.Node[i]] = true
		}
	}
	type qparams struct {
		scale float32
		zero  uint8
	}
	act := map[string]qparams{}
	for _, t := range p.tensors {
		r, ok := ranges[t]
		if !ok {
			return nil, nil, fmt.Errorf("export: quantize: no calibrated range for tensor %q", t)
		}
		if math.IsNaN(float64(r.Min)) || math.IsNaN(float64(r.Max)) || math.IsInf(float64(r.Min), 0) || math.IsInf(float64(r.Max), 0) || r.Min > r.Max {
			return nil, nil, fmt.Errorf("export: quantize: calibrated range of tensor %q is [%g, %g], want finite min <= max", t, r.Min, r.Max)
		}
		s, z, deg := ActivationParams(r)
		if deg {
			rep.Degenerate = append(rep.Degenerate, t)
		}
		act[t] = qparams{s, z}
	}
	inits := onnxpb.Initializers(g)
	used := onnxpb.Names(g)
	fresh := func(base string) string {
		name := onnxpb.UniqueName(used, base)
		used[name] = true
		return name
	}
	var newInits []*onnx.TensorProto
	type qtensor struct{ q, scale, zero string }
	quantized := map[string]qtensor{} // activation tensor -> its QuantizeLinear output and parameters
	qnode := func(t string) *onnx.NodeProto {
		qp := act[t]
		qt := qtensor{q: fresh(t + "_quantized"), scale: fresh(t + "_scale"), zero: fresh(t + "_zero_point")}
		newInits = append(newInits, onnxpb.FloatTensor(qt.scale, nil, []float32{qp.scale}), onnxpb.Uint8Tensor(qt.zero, nil, []uint8{qp.zero}))
		quantized[t] = qt
		rep.Activations++
		return onnxpb.Node("QuantizeLinear", fresh(t+"_QuantizeLinear"), []string{t, qt.scale, qt.zero}, []string{qt.q})
	}
	// dq returns a DequantizeLinear of the quantized activation t for one consumer.
	dq := func(t string) (*onnx.NodeProto, string) {
		qt := quantized[t]
		out := fresh(t + "_dequantized")
		return onnxpb.Node("DequantizeLinear", fresh(t+"_DequantizeLinear"), []string{qt.q, qt.scale, qt.zero}, []string{out}), out
	}
	var body []*onnx.NodeProto
	producers := onnxpb.Producers(g)
	for _, t := range p.tensors { // graph inputs
		if producers[t] == nil {
			body = append(body, qnode(t))
		}
	}
	for _, n := range g.GetNode() {
		if folded[n] {
			rep.RemovedActs++
			continue
		}
		if nodes[n] && n.GetOpType() == "Conv" {
			var h mat.Symmetric
			if _, ok := pointwise(n, inits); ok && opts.Moments != nil {
				h = opts.Moments.Of(n.Input[0])
			}
			if err := quantizeConvWeights(n, inits, act[n.Input[0]].scale, rep.WeightQMax, h, fresh, &newInits, &body); err != nil {
				return nil, nil, err
			}
			rep.Conv++
			if h != nil {
				rep.ErrorFeedback++
			}
		} else if nodes[n] && n.GetOpType() == "Add" {
			rep.Add++
		} else if nodes[n] {
			rep.Pool++
		}
		if to, ok := p.renamed[n.GetOutput()[0]]; ok && nodes[n] {
			n.Output[0] = to
		}
		// Every read of a quantized activation goes through a DequantizeLinear of its own.
		for i, in := range n.Input {
			if _, ok := quantized[in]; ok {
				d, name := dq(in)
				body = append(body, d)
				n.Input[i] = name
			}
		}
		body = append(body, n)
		for _, o := range n.Output {
			if _, ok := act[o]; ok {
				body = append(body, qnode(o))
			}
		}
	}
	for _, t := range p.tensors {
		if _, ok := quantized[t]; !ok {
			return nil, nil, fmt.Errorf("export: quantize: tensor %q has no producer in the graph", t)
		}
	}
	g.Node = body
	g.Initializer = append(dropUnused(g), newInits...)
	g.ValueInfo = nil
	onnxpb.SetMetadata(out, MetaQuantization, "qdq_int8")
	onnxpb.SetMetadata(out, MetaReduceRange, fmt.Sprint(opts.ReduceRange))
	onnxpb.SetMetadata(out, MetaWeights, fmt.Sprintf("int8 symmetric per-channel [-%d,%d]", rep.WeightQMax, rep.WeightQMax))
	onnxpb.SetMetadata(out, MetaActivations, "uint8 asymmetric per-tensor")
	rounding := "nearest"
	if rep.ErrorFeedback > 0 {
		rounding = fmt.Sprintf("gptq: %d of %d Convs rounded with error feedback on their calibration inputs, the others to nearest", rep.ErrorFeedback, rep.Conv)
	}
	onnxpb.SetMetadata(out, MetaRounding, rounding)
	return out, rep, nil
}

// quantizeConvWeights replaces the float weight (and bias) initializers of Conv n by int8 (int32)
// ones read through per-channel DequantizeLinear nodes appended to body. With the moments h of a
// 1x1 Conv's input the weights are rounded with error feedback, else to nearest.
func quantizeConvWeights(n *onnx.NodeProto, inits map[string]*onnx.TensorProto, inScale float32, qmax int, h mat.Symmetric,
	fresh func(string) string, newInits *[]*onnx.TensorProto, body *[]*onnx.NodeProto) error {
	wt := inits[n.Input[1]]
	w, err := onnxpb.Floats(wt)
	if err != nil {
		return fmt.Errorf("export: quantize: node %q weight %q: %w", n.GetName(), wt.GetName(), err)
	}
	dims := wt.GetDims()
	if len(dims) < 2 || dims[0] <= 0 || len(w)%int(dims[0]) != 0 {
		return fmt.Errorf("export: quantize: node %q weight %q has shape %v, want [out_channels, ...]", n.GetName(), wt.GetName(), dims)
	}
	ch := int(dims[0])
	var q []int8
	var scales []float32
	if h != nil {
		if q, scales, err = QuantizeWeightsGPTQ(w, ch, len(w)/ch, qmax, h); err != nil {
			return fmt.Errorf("export: quantize: node %q: %w", n.GetName(), err)
		}
	} else {
		q, scales = QuantizeWeights(w, ch, qmax)
	}
	base := wt.GetName()
	qn, sn, zn := fresh(base+"_quantized"), fresh(base+"_scale"), fresh(base+"_zero_point")
	*newInits = append(*newInits, onnxpb.Int8Tensor(qn, dims, q), onnxpb.FloatTensor(sn, []int64{int64(ch)}, scales),
		onnxpb.Int8Tensor(zn, []int64{int64(ch)}, make([]int8, ch)))
	wdq := fresh(base + "_dequantized")
	*body = append(*body, onnxpb.Node("DequantizeLinear", fresh(base+"_DequantizeLinear"), []string{qn, sn, zn}, []string{wdq}, onnxpb.AttrInt("axis", 0)))
	n.Input[1] = wdq
	if len(n.Input) < 3 || n.Input[2] == "" {
		return nil
	}
	bt := inits[n.Input[2]]
	b, err := onnxpb.Floats(bt)
	if err != nil || len(b) != ch {
		return fmt.Errorf("export: quantize: node %q bias %q: %d values (%v), want %d", n.GetName(), bt.GetName(), len(b), err, ch)
	}
	bq := make([]int32, ch)
	bs := make([]float32, ch)
	for c := range b {
		bs[c] = inScale * scales[c]
		bq[c] = int32(min(max(math.RoundToEven(float64(b[c])/float64(bs[c])), math.MinInt32), math.MaxInt32))
	}
	bname := bt.GetName()
	qb, sb, zb := fresh(bname+"_quantized"), fresh(bname+"_scale"), fresh(bname+"_zero_point")
	*newInits = append(*newInits, onnxpb.Int32Tensor(qb, []int64{int64(ch)}, bq), onnxpb.FloatTensor(sb, []int64{int64(ch)}, bs),
		onnxpb.Int32Tensor(zb, []int64{int64(ch)}, make([]int32, ch)))
	bdq := fresh(bname + "_dequantized")
	*body = append(*body, onnxpb.Node("DequantizeLinear", fresh(bname+"_DequantizeLinear"), []string{qb, sb, zb}, []string{bdq}, onnxpb.AttrInt("axis", 0)))
	n.Input[2] = bdq
	return nil
}

// dropUnused returns g's initializers that some node still reads, and removes the graph inputs
// naming the others (older models list their weights as inputs too).
func dropUnused(g *onnx.GraphProto) []*onnx.TensorProto {
	read := map[string]bool{}
	for _, n := range g.GetNode() {
		for _, in := range n.GetInput() {
			read[in] = true
		}
	}
	var keep []*onnx.TensorProto
	dropped := map[string]bool{}
	for _, t := range g.GetInitializer() {
		if read[t.GetName()] {
			keep = append(keep, t)
		} else {
			dropped[t.GetName()] = true
		}
	}
	ins := g.Input[:0]
	for _, in := range g.Input {
		if !dropped[in.GetName()] {
			ins = append(ins, in)
		}
	}
	g.Input = ins
	return keep
}
