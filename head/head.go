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
func (h *Head) Step(x []float32, n int, labels []int, anchors []bool, gl GroupLoss) (StepResult, error) {
	return h.StepLoss(x, n, labels, anchors, LossConfig{Kind: LossGroup, Group: gl})
}

// StepLoss is Step with any loss: x is (n, In) float32 row-major features, labels are in
// [0, Classes), anchors (used by LossGroup only; nil means Anchors(labels, l.Group.AnchorsPerClass))
// flags the anchor samples. It overwrites every Param's Grad with dLoss/dValue; parameters the loss
// does not depend on (the classifier for the triplet and contrastive losses, cls.bias for
// Proxy-Anchor) get a zero gradient. StepResult.NLL is set by LossGroup only, CE by LossGroup and
// LossSoftmax. Graphs are cached per batch size and loss setting.
func (h *Head) StepLoss(x []float32, n int, labels []int, anchors []bool, l LossConfig) (StepResult, error) {
	return h.step(nil, x, n, labels, anchors, l)
}

// Trunk is a differentiable computation in front of the head, built into the head's training
// graph so that one gradient pass gives the gradients of its parameters and the head's (e.g. the
// decoded last blocks of the backbone, see StepTrunk). It is the one place where gorgonia types
// cross this package's API.
type Trunk interface {
	// InputShape is the per-sample shape of the trunk's input (the samples StepTrunk gets).
	InputShape() []int
	// Build adds the trunk to x's graph: x is [n, InputShape()...] of the head's dtype; it returns
	// the (n, In) features node and the trunk's parameters.
	Build(x *gg.Node) (*gg.Node, []TrunkParam, error)
}

// TrunkParam is a trainable tensor of a Trunk: Node is its leaf, whose value (a *tensor.Dense of
// the graph's dtype with len(Value) elements) the head fills from Value before every step; Grad
// receives dLoss/dValue after it. Value and Grad are read and written in place.
type TrunkParam struct {
	Name        string
	Node        *gg.Node
	Value, Grad []float64
}

// StepTrunk is StepLoss through a trunk: x holds n samples of t's input (n × prod(InputShape())
// float32 values), the head reads t's output, and one gradient pass through the whole graph fills
// the Grad of every Param and every TrunkParam. Graphs are cached per trunk, batch size and loss.
func (h *Head) StepTrunk(t Trunk, x []float32, n int, labels []int, anchors []bool, l LossConfig) (StepResult, error) {
	if t == nil {
		return StepResult{}, fmt.Errorf("head: step: nil trunk")
	}
	return h.step(t, x, n, labels, anchors, l)
}

func (h *Head) step(t Trunk, x []float32, n int, labels []int, anchors []bool, l LossConfig) (res StepResult, err error) {
	defer recoverErr(&err)
	if err := l.Validate(); err != nil {
		return res, err
	}
	if n < 2 {
		return res, fmt.Errorf("head: step: batch of %d rows, want at least 2", n)
	}
	per := h.cfg.In
	if t != nil {
		per = 1
		for _, d := range t.InputShape() {
			per *= d
		}
	}
	if len(x) != n*per {
		return res, fmt.Errorf("head: step: %d input values for %d rows of %d", len(x), n, per)
	}
	if anchors == nil {
		perClass := 0
		if l.kind() == LossGroup {
			perClass = l.Group.AnchorsPerClass
		}
		anchors = Anchors(labels, perClass)
	}
	sg, err := h.graph(t, n, l)
	if err != nil {
		return res, err
	}
	if err := sg.bi.fill(labels, anchors); err != nil {
		return res, err
	}
	switch d := sg.x.Data().(type) {
	case []float32:
		copy(d, x)
	case []float64:
		for i, v := range x {
			d[i] = float64(v)
		}
	}
	for _, gp := range sg.params {
		switch {
		case gp.shared:
		case gp.transposed:
			setDataT(gp.val, gp.value, gp.rows, gp.cols)
		default:
			setData(gp.val, gp.value)
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
	for _, p := range sg.unused {
		clear(p.Grad)
	}
	for _, gp := range sg.params {
		switch {
		case gp.shared: // the Read node wrote Grad
		case gp.transposed:
			getDataT(gp.gradDst, gp.grad, gp.cols, gp.rows)
		default:
			getData(gp.gradDst, gp.grad)
		}
		if !finite(gp.gradDst) {
			return res, fmt.Errorf("head: step: gradient of %q: %w", gp.name, ErrNonFinite)
		}
	}
	return res, nil
}

type graphKey struct {
	trunk Trunk
	n     int
	loss  LossConfig // LossConfig.key()
}

// stepGraph is the compiled training graph for one trunk (or none), batch size and loss
// configuration.
type stepGraph struct {
	vm     gg.VM
	x      *tensor.Dense // the input leaf: features (n, In), or the trunk's input
	params []graphParam  // every parameter in the graph: the head's, then the trunk's
	unused []*Param      // parameters the loss does not depend on (zero gradient)
	bi     *batchInputs
	out    [3]gg.Value // loss, nll, ce (copied out by Read nodes; nil for absent terms)
}

// graphParam is a parameter inside a training graph. A weight [rows, cols] = [out, in] read by
// gorgonia's Mul is held transposed ([in, out]) so that the graph needs no gorgonia Transpose
// (slow, element by element); the input layer's linearOp reads it as stored.
type graphParam struct {
	name           string
	value, gradDst []float64
	transposed     bool
	shared         bool // val is backed by value itself (no copy before a run)
	rows, cols     int
	val            *tensor.Dense
	grad           gg.Value // dLoss/d(val), copied out by a Read node
}

func (h *Head) graph(t Trunk, n int, l LossConfig) (*stepGraph, error) {
	key := graphKey{t, n, l.key()}
	if sg, ok := h.graphs[key]; ok {
		return sg, nil
	}
	sg, err := h.build(t, n, l)
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

// build constructs the training graph from the input leaf (through the trunk, if any) to the
// loss. The input layer is a linearOp on W (out, in), a float64 leaf; inside the graph each further layer is
// a (n, in) · Wt (in, out) + b with Wt the transposed weight, copied in and out by step. The
// classifier is built only when the loss uses it.
func (h *Head) build(t Trunk, n int, l LossConfig) (*stepGraph, error) {
	dt := h.cfg.DType
	g := gg.NewGraph()
	b := &builder{dt: dt}
	inShape := []int{n, h.cfg.In}
	if t != nil {
		inShape = append([]int{n}, t.InputShape()...)
	}
	sg := &stepGraph{x: newDense(dt, inShape...)}
	x := gg.NewTensor(g, dt.tensor(), len(inShape), gg.WithShape(inShape...), gg.WithName("x"), gg.WithValue(sg.x))
	feat := x
	var tps []TrunkParam
	if t != nil {
		var err error
		if feat, tps, err = t.Build(x); err != nil {
			return nil, fmt.Errorf("head: building the trunk: %w", err)
		}
		if s := feat.Shape(); len(s) != 2 || s[0] != n || s[1] != h.cfg.In || feat.Dtype() != dt.tensor() {
			return nil, fmt.Errorf("head: the trunk's output is %v %v, want %v (%d, %d)", feat.Dtype(), s, dt, n, h.cfg.In)
		}
	}
	var pnodes gg.Nodes // node of each sg.params entry
	used := map[*Param]bool{}
	// leaf adds p's leaf in dtype pdt, its weight transposed when asked.
	leaf := func(p *Param, transposed bool, pdt DType) *gg.Node {
		gp := graphParam{name: p.Name, value: p.Value, gradDst: p.Grad, transposed: transposed}
		shape := p.Shape
		if transposed {
			gp.rows, gp.cols = p.Shape[0], p.Shape[1]
			shape = []int{gp.cols, gp.rows}
		}
		gp.val = newDense(pdt, shape...)
		name := p.Name
		if transposed {
			name += "_T"
		}
		nd := gg.NewTensor(g, pdt.tensor(), len(shape), gg.WithShape(shape...), gg.WithName(name), gg.WithValue(gp.val))
		sg.params = append(sg.params, gp)
		pnodes = append(pnodes, nd)
		used[p] = true
		return nd
	}
	linearLayer := func(ly layer, a *gg.Node) *gg.Node {
		w := leaf(ly.w, true, dt)
		bias := leaf(ly.b, false, dt)
		out := b.do(gg.BroadcastAdd(b.do(gg.Mul(a, w)), bias, nil, []byte{0}))
		if ly.relu {
			out = b.relu(out)
		}
		return out
	}
	l0 := h.layers[0]
	// linearOp reads its float64 W and b leaves and never writes them: they share the Params'
	// memory (Value and Grad are updated in place), which saves copying the largest weight and
	// its gradient every step.
	shared := func(p *Param) *gg.Node {
		nd := leaf(p, false, Float64)
		gp := &sg.params[len(sg.params)-1]
		gp.val, gp.shared = tensor.New(tensor.WithShape(p.Shape...), tensor.WithBacking(p.Value)), true
		gp.grad = tensor.New(tensor.WithShape(p.Shape...), tensor.WithBacking(p.Grad)) // Read copies into it
		if err := gg.Let(nd, gp.val); err != nil {
			b.err = err
		}
		return nd
	}
	a := b.do(linear(feat, shared(l0.w), shared(l0.b)))
	if l0.relu {
		a = b.relu(a)
	}
	for _, ly := range h.layers[1:] {
		a = linearLayer(ly, a)
	}
	z := a
	var logits, proxiesT *gg.Node
	if l.usesLogits() {
		logits = linearLayer(h.cls, z)
	}
	if l.usesProxies() {
		proxiesT = leaf(h.cls.w, true, dt)
	}
	if b.err != nil {
		return nil, fmt.Errorf("head: building the head graph: %w", b.err)
	}
	for _, p := range h.params {
		if !used[p] {
			sg.unused = append(sg.unused, p)
		}
	}
	for _, tp := range tps {
		val, ok := tp.Node.Value().(*tensor.Dense)
		if !ok || val.Shape().TotalSize() != len(tp.Value) || len(tp.Grad) != len(tp.Value) {
			return nil, fmt.Errorf("head: trunk parameter %q: its node's value is not a dense tensor of %d values", tp.Name, len(tp.Value))
		}
		sg.params = append(sg.params, graphParam{name: tp.Name, value: tp.Value, gradDst: tp.Grad, val: val})
		pnodes = append(pnodes, tp.Node)
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
	gnodes, err := gg.Grad(ln.loss, pnodes...)
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
	for i := range sg.params {
		roots = append(roots, gg.Read(gnodes[i], &sg.params[i].grad))
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
