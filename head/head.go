package head

import (
	"fmt"
	"math"
	"math/rand"

	gg "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Config is the shape of a head. Every size must be at least 2.
type Config struct {
	In      int `yaml:"in" json:"in"`           // input feature dimension
	Emb     int `yaml:"emb" json:"emb"`         // embedding dimension
	Classes int `yaml:"classes" json:"classes"` // number of training classes (classifier outputs)
	// Hidden are optional hidden layer widths (each linear + ReLU) between the input and the
	// embedding layer; none by default.
	Hidden []int `yaml:"hidden,omitempty" json:"hidden,omitempty"`
	// DType is the arithmetic of the training graph (Float32 by default); Param values and
	// gradients are float64 either way.
	DType DType `yaml:"dtype" json:"dtype"`
}

func (c Config) validate() error {
	if c.In < 2 || c.Emb < 2 || c.Classes < 2 {
		return fmt.Errorf("head: config in=%d emb=%d classes=%d: every size must be >= 2", c.In, c.Emb, c.Classes)
	}
	for i, h := range c.Hidden {
		if h < 2 {
			return fmt.Errorf("head: hidden layer %d width %d must be >= 2", i, h)
		}
	}
	return c.DType.validate()
}

// Param is one trainable tensor: Value and Grad are row-major float64 slices of len prod(Shape).
// Linear weights have Shape [out, in] (PyTorch's nn.Linear layout), biases [out]. Step overwrites
// Grad; the caller (optimizer, checkpoint, export) may read and write Value in place between
// calls, and Step copies it into the graph (converting to the graph's DType) every time.
type Param struct {
	Name        string
	Shape       []int
	Value, Grad []float64
}

// StepResult is the loss of one training batch. For the Group Loss, Loss = Scaling·NLL + CE; for
// LossSoftmax, Loss = CE and NLL = 0; for the other losses NLL = CE = 0.
type StepResult struct {
	Loss, NLL, CE float64
}

// Head is the embedding + classifier head. Parameter names: "hidden.K.weight"/"hidden.K.bias" for
// the optional hidden layers, "emb.weight" [Emb, in], "emb.bias" [Emb], "cls.weight" [Classes, Emb],
// "cls.bias" [Classes]. A Head is not safe for concurrent use.
type Head struct {
	cfg    Config
	params []*Param
	layers []layer // hidden layers then the embedding layer
	cls    layer
	graphs map[graphKey]*stepGraph
}

type layer struct {
	w, b    *Param
	in, out int
	relu    bool
}

// maxGraphs bounds the cache of per-batch-size graphs.
const maxGraphs = 4

// New returns a head with PyTorch nn.Linear initialisation: weights and biases uniform in
// ±1/sqrt(fan_in), drawn from rng layer by layer (weight, then bias).
func New(cfg Config, rng *rand.Rand) (*Head, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if rng == nil {
		return nil, fmt.Errorf("head: nil random source")
	}
	cfg.Hidden = append([]int(nil), cfg.Hidden...)
	h := &Head{cfg: cfg, graphs: map[graphKey]*stepGraph{}}
	add := func(name string, in, out int, relu bool) layer {
		w := &Param{Name: name + ".weight", Shape: []int{out, in}, Value: make([]float64, out*in), Grad: make([]float64, out*in)}
		b := &Param{Name: name + ".bias", Shape: []int{out}, Value: make([]float64, out), Grad: make([]float64, out)}
		bound := 1 / math.Sqrt(float64(in))
		for _, p := range []*Param{w, b} {
			for i := range p.Value {
				p.Value[i] = (2*rng.Float64() - 1) * bound
			}
		}
		h.params = append(h.params, w, b)
		return layer{w: w, b: b, in: in, out: out, relu: relu}
	}
	in := cfg.In
	for i, w := range cfg.Hidden {
		h.layers = append(h.layers, add(fmt.Sprintf("hidden.%d", i), in, w, true))
		in = w
	}
	h.layers = append(h.layers, add("emb", in, cfg.Emb, false))
	h.cls = add("cls", cfg.Emb, cfg.Classes, false)
	return h, nil
}

// Config returns the head's configuration.
func (h *Head) Config() Config {
	c := h.cfg
	c.Hidden = append([]int(nil), c.Hidden...)
	return c
}

// Params returns the trainable tensors in a fixed order (hidden layers, emb, cls; weight before
// bias). The pointers are the head's own: writes to Value take effect at the next Step or Embed.
func (h *Head) Params() []*Param { return h.params }

// SetParam copies values into the parameter called name (e.g. a PCA initialisation of
// "emb.weight"); values must have the parameter's length and be finite.
func (h *Head) SetParam(name string, values []float64) error {
	for _, p := range h.params {
		if p.Name != name {
			continue
		}
		if len(values) != len(p.Value) {
			return fmt.Errorf("head: parameter %q has %d values (shape %v), got %d", name, len(p.Value), p.Shape, len(values))
		}
		if !finite(values) {
			return fmt.Errorf("head: parameter %q: %w", name, ErrNonFinite)
		}
		copy(p.Value, values)
		return nil
	}
	return fmt.Errorf("head: no parameter %q", name)
}

// Step runs one forward and backward pass of the Group Loss on a batch: x is (n, In) float32
// row-major features, labels are in [0, Classes), anchors flags the anchor samples (nil means
// Anchors(labels, gl.AnchorsPerClass)). It overwrites every Param's Grad with dLoss/dValue. n must
// be at least 2. A NaN or infinity in the loss or a gradient returns an error wrapping ErrNonFinite.
// It is StepLoss with LossConfig{Kind: LossGroup, Group: gl}.
//
// The input layer runs outside the graph (kernels.go) for speed; its output is a leaf of the graph
// and its weight gradient is formed from the graph's gradient with respect to that leaf.
func (h *Head) Step(x []float32, n int, labels []int, anchors []bool, gl GroupLoss) (StepResult, error) {
	return h.StepLoss(x, n, labels, anchors, LossConfig{Kind: LossGroup, Group: gl})
}

// StepLoss is Step with any loss: x is (n, In) float32 row-major features, labels are in
// [0, Classes), anchors (used by LossGroup only; nil means Anchors(labels, l.Group.AnchorsPerClass))
// flags the anchor samples. It overwrites every Param's Grad with dLoss/dValue; parameters the loss
// does not depend on (the classifier for the triplet and contrastive losses, cls.bias for
// Proxy-Anchor) get a zero gradient. StepResult.NLL is set by LossGroup only, CE by LossGroup and
// LossSoftmax. Graphs are cached per batch size and loss setting.
func (h *Head) StepLoss(x []float32, n int, labels []int, anchors []bool, l LossConfig) (res StepResult, err error) {
	defer recoverErr(&err)
	if err := l.Validate(); err != nil {
		return res, err
	}
	if n < 2 {
		return res, fmt.Errorf("head: step: batch of %d rows, want at least 2", n)
	}
	if len(x) != n*h.cfg.In {
		return res, fmt.Errorf("head: step: %d feature values for %d rows of %d", len(x), n, h.cfg.In)
	}
	if anchors == nil {
		perClass := 0
		if l.kind() == LossGroup {
			perClass = l.Group.AnchorsPerClass
		}
		anchors = Anchors(labels, perClass)
	}
	sg, err := h.graph(n, l)
	if err != nil {
		return res, err
	}
	if err := sg.bi.fill(labels, anchors); err != nil {
		return res, err
	}
	l0 := h.layers[0]
	switch a0 := sg.a0.Data().(type) {
	case []float32:
		linearKernel(a0, l0.w.Value, l0.b.Value, x, l0.out, l0.in, n, 1, l0.out, dot32)
	case []float64:
		sg.x64 = sg.x64[:0]
		for _, v := range x {
			sg.x64 = append(sg.x64, float64(v))
		}
		linearKernel(a0, l0.w.Value, l0.b.Value, sg.x64, l0.out, l0.in, n, 1, l0.out, dot64)
	}
	for _, gp := range sg.params {
		if gp.transposed {
			setDataT(gp.val, gp.p.Value, gp.p.Shape[0], gp.p.Shape[1])
		} else {
			setData(gp.val, gp.p.Value)
		}
	}
	sg.vm.Reset()
	if err := sg.vm.RunAll(); err != nil {
		return res, fmt.Errorf("head: step: running the graph: %w", err)
	}
	var s [1]float64
	for _, o := range []struct {
		dst  *float64
		v    *gg.Value
		name string
	}{{&res.Loss, &sg.out[0], "loss"}, {&res.NLL, &sg.out[1], "nll"}, {&res.CE, &sg.out[2], "ce"}} {
		if *o.v == nil {
			continue // a term this loss does not have
		}
		getData(s[:], *o.v)
		*o.dst = s[0]
		if !finite(s[:]) {
			return res, fmt.Errorf("head: step: %q: %w", o.name, ErrNonFinite)
		}
	}
	switch g0 := sg.g0.Data().(type) {
	case []float32:
		weightGradKernel(l0.w.Grad, l0.b.Grad, g0, x, l0.out, l0.in, n, 1, l0.out, axpy32)
	case []float64:
		weightGradKernel(l0.w.Grad, l0.b.Grad, g0, sg.x64, l0.out, l0.in, n, 1, l0.out, axpy64)
	default:
		panic(fmt.Sprintf("head: unexpected gradient data %T", g0))
	}
	for _, p := range sg.unused {
		clear(p.Grad)
	}
	for _, gp := range sg.params {
		if gp.transposed {
			getDataT(gp.p.Grad, gp.grad, gp.p.Shape[1], gp.p.Shape[0])
		} else {
			getData(gp.p.Grad, gp.grad)
		}
	}
	for _, p := range h.params {
		if !finite(p.Grad) {
			return res, fmt.Errorf("head: step: gradient of %q: %w", p.Name, ErrNonFinite)
		}
	}
	return res, nil
}

type graphKey struct {
	n    int
	loss LossConfig // LossConfig.key()
}

// stepGraph is the compiled training graph for one batch size and loss configuration.
type stepGraph struct {
	vm     gg.VM
	a0     *tensor.Dense // (n, out0) input layer output: a leaf of the graph
	x64    []float64     // float64 copy of the features (Float64 heads)
	params []graphParam  // the parameters inside the graph (all but the input layer's)
	unused []*Param      // parameters the loss does not depend on (zero gradient)
	bi     *batchInputs
	out    [3]gg.Value // loss, nll, ce (copied out by Read nodes; nil for absent terms)
	g0     gg.Value    // dLoss/da0, (n, out0)
}

// graphParam is a parameter inside a training graph. A weight [out, in] is held transposed
// ([in, out]) so that the graph needs no gorgonia Transpose (slow, element by element).
type graphParam struct {
	p          *Param
	transposed bool
	val        *tensor.Dense
	grad       gg.Value // dLoss/d(val), copied out by a Read node
}

func (h *Head) graph(n int, l LossConfig) (*stepGraph, error) {
	key := graphKey{n, l.key()}
	if sg, ok := h.graphs[key]; ok {
		return sg, nil
	}
	sg, err := h.build(n, l)
	if err != nil {
		return nil, err
	}
	if len(h.graphs) >= maxGraphs {
		for k, old := range h.graphs {
			old.vm.Close()
			delete(h.graphs, k)
		}
	}
	h.graphs[key] = sg
	return sg, nil
}

// build constructs the training graph from the input layer's output a0 to the loss. Inside the
// graph each layer is a (n, in) · Wt (in, out) + b with Wt the transposed weight, copied in and
// out by StepLoss. The classifier is built only when the loss uses it.
func (h *Head) build(n int, l LossConfig) (*stepGraph, error) {
	dt := h.cfg.DType
	g := gg.NewGraph()
	b := &builder{dt: dt}
	l0 := h.layers[0]
	sg := &stepGraph{a0: newDense(dt, n, l0.out)}
	a0 := gg.NewMatrix(g, dt.tensor(), gg.WithShape(n, l0.out), gg.WithName(l0.w.Name+"_out"), gg.WithValue(sg.a0))
	a := a0
	if l0.relu {
		a = b.relu(a)
	}
	var pnodes gg.Nodes // node of each sg.params entry
	used := map[*Param]bool{l0.w: true, l0.b: true}
	weightT := func(ly layer) *gg.Node {
		wt := newDense(dt, ly.in, ly.out)
		w := gg.NewMatrix(g, dt.tensor(), gg.WithShape(ly.in, ly.out), gg.WithName(ly.w.Name+"_T"), gg.WithValue(wt))
		sg.params = append(sg.params, graphParam{p: ly.w, transposed: true, val: wt})
		pnodes = append(pnodes, w)
		used[ly.w] = true
		return w
	}
	linear := func(ly layer, a *gg.Node) *gg.Node {
		w := weightT(ly)
		bt := newDense(dt, ly.out)
		bias := gg.NewVector(g, dt.tensor(), gg.WithShape(ly.out), gg.WithName(ly.b.Name), gg.WithValue(bt))
		sg.params = append(sg.params, graphParam{p: ly.b, val: bt})
		pnodes = append(pnodes, bias)
		used[ly.b] = true
		out := b.do(gg.BroadcastAdd(b.do(gg.Mul(a, w)), bias, nil, []byte{0}))
		if ly.relu {
			out = b.relu(out)
		}
		return out
	}
	for _, ly := range h.layers[1:] {
		a = linear(ly, a)
	}
	z := a
	var logits, proxiesT *gg.Node
	if l.usesLogits() {
		logits = linear(h.cls, z)
	}
	if l.usesProxies() {
		proxiesT = weightT(h.cls)
	}
	if b.err != nil {
		return nil, fmt.Errorf("head: building the head graph: %w", b.err)
	}
	for _, p := range h.params {
		if !used[p] {
			sg.unused = append(sg.unused, p)
		}
	}
	bi, err := newBatchInputs(g, dt, n, h.cfg.Classes)
	if err != nil {
		return nil, err
	}
	sg.bi = bi
	ln, err := buildLossConfig(z, logits, proxiesT, bi, l, dt)
	if err != nil {
		return nil, err
	}
	gnodes, err := gg.Grad(ln.loss, append(gg.Nodes{a0}, pnodes...)...)
	if err != nil {
		return nil, fmt.Errorf("head: differentiating the head graph: %w", err)
	}
	// Read copies each output when it is computed: the tape machine reuses memory, so a node's
	// value read after the run may have been overwritten.
	var roots gg.Nodes
	for i, nd := range []*gg.Node{ln.loss, ln.nll, ln.ce} {
		if nd != nil {
			roots = append(roots, gg.Read(nd, &sg.out[i]))
		}
	}
	roots = append(roots, gg.Read(gnodes[0], &sg.g0))
	for i := range sg.params {
		roots = append(roots, gg.Read(gnodes[1+i], &sg.params[i].grad))
	}
	// Compile only what the outputs need (gradients of the leaf inputs are not).
	sg.vm = gg.NewTapeMachine(g.SubgraphRoots(roots...))
	return sg, nil
}

// embedChunk is the number of rows Embed transforms per matrix multiplication.
const embedChunk = 256

// Embed writes the (n, Emb) un-normalized embeddings of x (n, In), both float32 row-major, into
// out. It runs in plain Go (gonum dot products, float64 arithmetic) without a graph, for the
// evaluation of many rows. It panics if len(x) != n*In or len(out) != n*Emb (a programmer bug).
func (h *Head) Embed(x []float32, n int, out []float32) {
	if n < 0 || len(x) != n*h.cfg.In || len(out) != n*h.cfg.Emb {
		panic(fmt.Sprintf("head: Embed of %d rows: len(x)=%d (want %d), len(out)=%d (want %d)",
			n, len(x), n*h.cfg.In, len(out), n*h.cfg.Emb))
	}
	widest := h.cfg.In
	for _, l := range h.layers {
		widest = max(widest, l.out)
	}
	bufA := make([]float64, embedChunk*widest)
	bufB := make([]float64, embedChunk*widest)
	for r0 := 0; r0 < n; r0 += embedChunk {
		r := min(embedChunk, n-r0)
		a := bufA[:r*h.cfg.In]
		for i, v := range x[r0*h.cfg.In : (r0+r)*h.cfg.In] {
			a[i] = float64(v)
		}
		cur, next := bufA, bufB
		for _, l := range h.layers {
			linearRows(next[:r*l.out], cur[:r*l.in], l, r)
			cur, next = next, cur
		}
		for i, v := range cur[:r*h.cfg.Emb] {
			out[r0*h.cfg.Emb+i] = float32(v)
		}
	}
}

// linearRows computes dst (r, out) = src (r, in) Wᵀ + b, then ReLU for hidden layers.
func linearRows(dst, src []float64, l layer, r int) {
	linearKernel(dst, l.w.Value, l.b.Value, src, l.out, l.in, r, 1, l.out, dot64)
	if l.relu {
		for i, v := range dst {
			if v < 0 {
				dst[i] = 0
			}
		}
	}
}
