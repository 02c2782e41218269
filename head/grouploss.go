package head

import (
	"fmt"
	"math"
	"runtime"
	"strings"
	"sync/atomic"

	"github.com/grouploss/pipeline/internal/parallel"
	gg "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// normEps guards the Pearson correlation of zero-variance rows (see the package doc).
const normEps = 1e-12

// logEps is added to the refined probabilities before the log, as in the reference.
const logEps = 1e-12

// maxIterations bounds GroupLoss.Iterations (each iteration adds nodes to the graph).
const maxIterations = 100

// GroupLoss configures the Group Loss.
type GroupLoss struct {
	// Temperature T divides the logits before the softmax that gives the initial probabilities.
	Temperature float64 `yaml:"temperature" json:"temperature"`
	// Iterations is the number of replicator-dynamics steps (0 keeps the initial probabilities).
	Iterations int `yaml:"iterations" json:"iterations"`
	// Scaling multiplies the replicator NLL term; the cross-entropy term has weight 1.
	Scaling float64 `yaml:"scaling" json:"scaling"`
	// AnchorsPerClass is how many samples of each class in a batch get one-hot probabilities.
	AnchorsPerClass int `yaml:"anchors_per_class" json:"anchors_per_class"`
}

// DefaultGroupLoss returns the published settings: T 24, 1 iteration, scaling 1, 2 anchors per class.
func DefaultGroupLoss() GroupLoss {
	return GroupLoss{Temperature: 24, Iterations: 1, Scaling: 1, AnchorsPerClass: 2}
}

// Validate reports a configuration the loss cannot be computed with.
func (gl GroupLoss) Validate() error {
	switch {
	case !(gl.Temperature > 0) || math.IsInf(gl.Temperature, 0):
		return fmt.Errorf("head: group loss temperature %g must be positive and finite", gl.Temperature)
	case gl.Iterations < 0 || gl.Iterations > maxIterations:
		return fmt.Errorf("head: group loss iterations %d must be in [0, %d]", gl.Iterations, maxIterations)
	case !(gl.Scaling >= 0) || math.IsInf(gl.Scaling, 0):
		return fmt.Errorf("head: group loss scaling %g must be >= 0 and finite", gl.Scaling)
	case gl.AnchorsPerClass < 0:
		return fmt.Errorf("head: group loss anchors per class %d must be >= 0", gl.AnchorsPerClass)
	}
	return nil
}

// Anchors marks the first perClass samples of each class, in batch order, as the reference does.
// The result has len(labels) entries.
func Anchors(labels []int, perClass int) []bool {
	seen := map[int]int{}
	a := make([]bool, len(labels))
	for i, y := range labels {
		if seen[y] < perClass {
			a[i] = true
		}
		seen[y]++
	}
	return a
}

// LossResult is the Group Loss of one batch with its gradients; n is the batch size, e the
// embedding dimension and c the number of classes. Matrices are row-major [][]float64.
type LossResult struct {
	Loss, NLL, CE float64
	W             [][]float64 // (n, n) ReLU'd correlation matrix
	P             [][]float64 // (n, c) refined probabilities after the replicator iterations
	GradEmb       [][]float64 // (n, e) dLoss/dEmbeddings
	GradLogits    [][]float64 // (n, c) dLoss/dLogits
}

// EvalLoss computes the Group Loss of one batch and its gradients with respect to the embeddings
// emb (n, e) and logits (n, c) through the same gorgonia graph code the Head trains with, in
// dtype dt. anchors may be nil, meaning Anchors(labels, gl.AnchorsPerClass). Labels must lie in
// [0, c). It is meant for tests and diagnostics; it builds a new graph on every call.
func EvalLoss(gl GroupLoss, emb, logits [][]float64, labels []int, anchors []bool, dt DType) (res *LossResult, err error) {
	defer recoverErr(&err)
	if err := gl.Validate(); err != nil {
		return nil, err
	}
	if err := dt.validate(); err != nil {
		return nil, err
	}
	n := len(emb)
	if n < 2 || len(emb[0]) < 2 || len(logits) != n || len(logits[0]) < 2 {
		return nil, fmt.Errorf("head: eval loss: want (n, e) embeddings and (n, c) logits with n, e, c >= 2, got %d and %d rows", n, len(logits))
	}
	e, c := len(emb[0]), len(logits[0])
	zflat, err := flatten(emb, e, "embeddings")
	if err != nil {
		return nil, err
	}
	lflat, err := flatten(logits, c, "logits")
	if err != nil {
		return nil, err
	}
	if anchors == nil {
		anchors = Anchors(labels, gl.AnchorsPerClass)
	}
	g := gg.NewGraph()
	bi, err := newBatchInputs(g, dt, n, c)
	if err != nil {
		return nil, err
	}
	if err := bi.fill(labels, anchors); err != nil {
		return nil, err
	}
	zt, lt := newDense(dt, n, e), newDense(dt, n, c)
	setData(zt, zflat)
	setData(lt, lflat)
	z := gg.NewMatrix(g, dt.tensor(), gg.WithShape(n, e), gg.WithName("embeddings"), gg.WithValue(zt))
	lg := gg.NewMatrix(g, dt.tensor(), gg.WithShape(n, c), gg.WithName("logits"), gg.WithValue(lt))
	ln, err := buildLoss(z, lg, bi, gl, dt)
	if err != nil {
		return nil, err
	}
	grads, err := gg.Grad(ln.loss, z, lg)
	if err != nil {
		return nil, fmt.Errorf("head: differentiating the group loss: %w", err)
	}
	// As in Head.Step, Read nodes copy the outputs as they are computed (the tape machine reuses
	// the memory of intermediate nodes).
	var vals [7]gg.Value
	var roots gg.Nodes
	for i, nd := range []*gg.Node{ln.loss, ln.nll, ln.ce, ln.w, ln.p, grads[0], grads[1]} {
		roots = append(roots, gg.Read(nd, &vals[i]))
	}
	vm := gg.NewTapeMachine(g.SubgraphRoots(roots...))
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		return nil, fmt.Errorf("head: running the group loss graph: %w", err)
	}
	res = &LossResult{}
	var s [1]float64
	for i, o := range []struct {
		dst  *float64
		name string
	}{{&res.Loss, "loss"}, {&res.NLL, "nll"}, {&res.CE, "ce"}} {
		getData(s[:], vals[i])
		*o.dst = s[0]
		if !finite(s[:]) {
			return nil, fmt.Errorf("head: eval loss: %q: %w", o.name, ErrNonFinite)
		}
	}
	res.W = readMatrix(vals[3], n, n)
	res.P = readMatrix(vals[4], n, c)
	res.GradEmb = readMatrix(vals[5], n, e)
	res.GradLogits = readMatrix(vals[6], n, c)
	return res, nil
}

func flatten(m [][]float64, cols int, name string) ([]float64, error) {
	out := make([]float64, 0, len(m)*cols)
	for i, r := range m {
		if len(r) != cols {
			return nil, fmt.Errorf("head: %s row %d has %d columns, want %d", name, i, len(r), cols)
		}
		out = append(out, r...)
	}
	return out, nil
}

func readMatrix(v gg.Value, rows, cols int) [][]float64 {
	flat := make([]float64, rows*cols)
	getData(flat, v)
	out := make([][]float64, rows)
	for i := range out {
		out[i] = flat[i*cols : (i+1)*cols : (i+1)*cols]
	}
	return out
}

// finite reports whether v holds no NaN or infinity: x*0 is ±0 for finite x and NaN otherwise.
// Four independent sums keep the loop fast on the large gradients, which are split over the
// cores (the input layer's is 655,360 values at the default sizes).
func finite(v []float64) bool {
	var bad atomic.Bool
	parallel.Range(len(v), len(v), func(lo, hi int) {
		if !finiteSerial(v[lo:hi]) {
			bad.Store(true)
		}
	})
	return !bad.Load()
}

func finiteSerial(v []float64) bool {
	var s0, s1, s2, s3 float64
	i := 0
	for ; i+4 <= len(v); i += 4 {
		s0 += v[i] * 0
		s1 += v[i+1] * 0
		s2 += v[i+2] * 0
		s3 += v[i+3] * 0
	}
	for ; i < len(v); i++ {
		s0 += v[i] * 0
	}
	return s0+s1+s2+s3 == 0
}

// recoverErr turns a panic inside gorgonia (or a kernel) into an error at the package boundary,
// naming the innermost non-runtime frame of the panicking call.
func recoverErr(err *error) {
	r := recover()
	if r == nil {
		return
	}
	where := "unknown location"
	pc := make([]uintptr, 32)
	frames := runtime.CallersFrames(pc[:runtime.Callers(2, pc)])
	for {
		f, more := frames.Next()
		if !strings.HasPrefix(f.Function, "runtime.") {
			where = fmt.Sprintf("%s (%s:%d)", f.Function, f.File, f.Line)
			break
		}
		if !more {
			break
		}
	}
	*err = fmt.Errorf("head: internal panic in %s: %v", where, r)
}

// batchInputs are the per-batch label tensors of a loss graph: y, notA, aY are (n, c); pos and
// neg are (n, n): the positive-pair mask [i ≠ j, y_i = y_j] and the negative-pair mask
// [y_i ≠ y_j].
type batchInputs struct {
	n, c                       int
	y, notA, aY, pos, neg      *gg.Node
	yt, notAt, aYt, post, negt *tensor.Dense
	yv, notAv, aYv             []float64 // staging in float64, copied into the tensors by fill
	posv, negv                 []float64
}

func newBatchInputs(g *gg.ExprGraph, dt DType, n, c int) (*batchInputs, error) {
	bi := &batchInputs{n: n, c: c,
		yv: make([]float64, n*c), notAv: make([]float64, n*c), aYv: make([]float64, n*c),
		posv: make([]float64, n*n), negv: make([]float64, n*n)}
	mk := func(name string, rows, cols int) (*gg.Node, *tensor.Dense) {
		t := newDense(dt, rows, cols)
		return gg.NewMatrix(g, dt.tensor(), gg.WithShape(rows, cols), gg.WithName(name), gg.WithValue(t)), t
	}
	bi.y, bi.yt = mk("labels_onehot", n, c)
	bi.notA, bi.notAt = mk("not_anchor", n, c)
	bi.aY, bi.aYt = mk("anchor_onehot", n, c)
	bi.pos, bi.post = mk("positive_pairs", n, n)
	bi.neg, bi.negt = mk("negative_pairs", n, n)
	return bi, nil
}

// fill writes the one-hot labels and anchor masks of a batch into the input tensors.
func (bi *batchInputs) fill(labels []int, anchors []bool) error {
	n, c := bi.n, bi.c
	if len(labels) != n || len(anchors) != n {
		return fmt.Errorf("head: batch of %d rows has %d labels and %d anchor flags", n, len(labels), len(anchors))
	}
	clear(bi.yv)
	clear(bi.aYv)
	for i, y := range labels {
		if y < 0 || y >= c {
			return fmt.Errorf("head: label %d of row %d outside [0, %d)", y, i, c)
		}
		bi.yv[i*c+y] = 1
		na := 1.0
		if anchors[i] {
			na = 0
			bi.aYv[i*c+y] = 1
		}
		for j := 0; j < c; j++ {
			bi.notAv[i*c+j] = na
		}
	}
	for i, yi := range labels {
		for j, yj := range labels {
			bi.posv[i*n+j] = b2f64(i != j && yi == yj)
			bi.negv[i*n+j] = b2f64(yi != yj)
		}
	}
	setData(bi.yt, bi.yv)
	setData(bi.notAt, bi.notAv)
	setData(bi.aYt, bi.aYv)
	setData(bi.post, bi.posv)
	setData(bi.negt, bi.negv)
	return nil
}

func b2f64(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// lossNodes are the outputs of buildLoss and buildLossConfig; nll, w and p are nil for losses
// other than the Group Loss, ce for losses without a cross-entropy term.
type lossNodes struct {
	loss, nll, ce *gg.Node // scalars
	w, p          *gg.Node // (n, n) and (n, c)
}

// buildLoss adds the Group Loss of embeddings z (n, e) and logits (n, c) to z's graph.
func buildLoss(z, logits *gg.Node, bi *batchInputs, gl GroupLoss, dt DType) (*lossNodes, error) {
	b := &builder{dt: dt}
	n := z.Shape()[0]
	row := []byte{1} // broadcast an (n) vector along the columns of an (n, k) matrix

	// Pearson correlation with ReLU.
	w := b.relu(b.do(pearson(z)))

	// Initial probabilities with anchors, then replicator dynamics.
	sm := b.softmax(b.do(gg.HadamardProd(logits, b.scalar(1/gl.Temperature))))
	p := b.do(gg.Add(b.do(gg.HadamardProd(sm, bi.notA)), bi.aY))
	for it := 0; it < gl.Iterations; it++ {
		q := b.do(gg.HadamardProd(p, b.do(gg.Mul(w, p))))
		p = b.do(gg.BroadcastHadamardDiv(q, b.do(gg.Sum(q, 1)), nil, row))
	}

	// Mean NLL of the refined probabilities and mean cross-entropy of the logits.
	logp := b.do(gg.Log(b.do(gg.Add(p, b.scalar(logEps)))))
	nll := b.do(gg.HadamardProd(b.do(gg.Sum(b.do(gg.HadamardProd(logp, bi.y)))), b.scalar(-1/float64(n))))
	lsm := b.logSoftmax(logits)
	ce := b.do(gg.HadamardProd(b.do(gg.Sum(b.do(gg.HadamardProd(lsm, bi.y)))), b.scalar(-1/float64(n))))
	loss := b.do(gg.Add(b.do(gg.HadamardProd(nll, b.scalar(gl.Scaling))), ce))
	if b.err != nil {
		return nil, fmt.Errorf("head: building the group loss graph: %w", b.err)
	}
	return &lossNodes{loss: loss, nll: nll, ce: ce, w: w, p: p}, nil
}

// builder threads the first error through a chain of gorgonia calls.
type builder struct {
	dt  DType
	err error
}

func (b *builder) do(nd *gg.Node, err error) *gg.Node {
	if b.err == nil && err != nil {
		b.err = err
	}
	return nd
}

func (b *builder) scalar(v float64) *gg.Node {
	if b.dt == Float64 {
		return gg.NewConstant(v)
	}
	return gg.NewConstant(float32(v))
}

// relu is x ⊙ (x > 0): gradient 0 at exactly 0, as PyTorch (gorgonia's Rectify uses >=).
func (b *builder) relu(x *gg.Node) *gg.Node {
	if b.err != nil {
		return nil
	}
	gate := b.do(gg.Gt(x, b.scalar(0), true))
	return b.do(gg.HadamardProd(x, gate))
}

// logSoftmax returns the row-wise log-softmax of a (n, k) matrix, shifted by the row maximum.
func (b *builder) logSoftmax(a *gg.Node) *gg.Node {
	if b.err != nil {
		return nil
	}
	return b.do(softmaxNode(a, true))
}

// softmax returns the row-wise softmax of a (n, k) matrix, shifted by the row maximum.
func (b *builder) softmax(a *gg.Node) *gg.Node {
	if b.err != nil {
		return nil
	}
	return b.do(softmaxNode(a, false))
}
