package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/advancedclimatesystems/gonnx/onnx"
	ortgo "github.com/yalue/onnxruntime_go"

	"github.com/grouploss/pipeline/backbone"
	"github.com/grouploss/pipeline/backbone/graph"
	"github.com/grouploss/pipeline/backbone/ort"
	"github.com/grouploss/pipeline/head"
	"github.com/grouploss/pipeline/internal/onnxpb"
	"github.com/grouploss/pipeline/internal/rowops"
	"github.com/grouploss/pipeline/pipeline/data"
	"github.com/grouploss/pipeline/pipeline/metrics"
	"github.com/grouploss/pipeline/pipeline/train"
	"github.com/grouploss/pipeline/weights"
)

// Tail fine-tuning (backbone.train_blocks K > 0, or backbone.trainable_from): the last K
// inverted-residual blocks of the backbone, and what follows them up to the feature tensor, are
// trained together with the head.
//
// The backbone is converted to float (weights.DequantizeModel) when it is quantized. Its prefix,
// up to the cut tensor (graph.TailCutPoints(float)[K-1]), runs once in onnxruntime for every
// image and its mirror; the activations are cached on disk (data.SaveFeatures format, keyed by
// the prefix model's bytes, the preprocessing, the image list and the views) and held in RAM
// during training (5902 CUB-100 images x 2 views x 160x7x7 float32 = 370 MB for K <= 3). The
// rest of the backbone is decoded into a Go graph (backbone/graph) with BatchNormalizations
// folded. A training step runs one gorgonia graph, the tail's nodes -> feature transform
// (centering, L2 normalization) -> head -> loss, with one gradient pass (head.StepTrunk with
// tailTrunk). The tail has its own learning rate (backbone.lr) with the same optimizer kind and
// weight decay as the head.

// tailParamPrefix prefixes the tail's parameter names in train.Tensors, optimizer state and
// checkpoints, keeping them apart from the head's.
const tailParamPrefix = "backbone/"

// trainsTail reports whether the run fine-tunes the tail of the backbone.
func (b BackboneConfig) trainsTail() bool { return b.TrainBlocks > 0 || b.TrainableFrom != "" }

// TailSummary describes the fine-tuned part of the backbone (metrics.json "tail").
type TailSummary struct {
	TrainBlocks int    `json:"train_blocks,omitempty"`
	From        string `json:"from"` // cut tensor: the trained part starts here
	To          string `json:"to"`   // feature tensor
	// ActivationShape is the per-image shape of the cut tensor, e.g. [160 7 7].
	ActivationShape []int `json:"activation_shape"`
	Params          int   `json:"params"` // trained backbone values
	// Folded lists the BatchNormalizations folded into Convs ("conv <- bn").
	Folded     []string `json:"folded,omitempty"`
	BackboneLR float64  `json:"backbone_lr"`
	// Dequantized is set when the backbone was int8 and was converted to float.
	Dequantized       bool    `json:"dequantized"`
	ActivationCache   string  `json:"activation_cache"`
	ActivationHit     bool    `json:"activation_cache_hit"`
	ActivationSeconds float64 `json:"activation_seconds"`
	// BaselineFloat is the evaluation of the float model's untrained features (flip averaged
	// with backbone.flip_tta): the reference the fine-tuned model improves on.
	BaselineFloat metrics.Result `json:"baseline_float"`
}

// tailModel is the trained part of a tail run: the decoded backbone tail followed by the head
// with its feature transform. It adapts both to train.Model; the samples Fit hands to Step are
// activations at the cut (inDim values each).
type tailModel struct {
	*headModel
	tail    *graph.Graph
	trunk   *tailTrunk // built at the first Step
	params  []*graph.Param
	inDim   int // values per sample at the cut
	featDim int // values per sample of the features
	views   int // 1, or 2 with mirrored activations
	acts    []float32
	tensors []train.Tensor
}

// tailEvalChunk is the number of rows per tail forward pass when embedding.
const tailEvalChunk = 64

func (m *tailModel) Tensors() []train.Tensor { return m.tensors }

// setTensors lists the head's parameters, then the tail's (named with tailParamPrefix), as the
// tensors Fit trains.
func (m *tailModel) setTensors() {
	m.tensors = m.tensors[:0]
	for _, p := range m.h.Params() {
		m.tensors = append(m.tensors, train.Tensor{Name: p.Name, Value: p.Value, Grad: p.Grad})
	}
	for _, p := range m.params {
		m.tensors = append(m.tensors, train.Tensor{Name: tailParamPrefix + p.Name, Value: p.Value, Grad: p.Grad})
	}
}

// Step runs one training step of the single graph (tail, feature transform, head, loss) and
// fills the Grad of every tensor.
func (m *tailModel) Step(x []float32, n int, labels []int, anchors []bool) (float64, error) {
	if m.trunk == nil {
		m.trunk = &tailTrunk{g: m.tail, inShape: m.tail.InputShapes()[0], featDim: m.featDim, normalize: m.normalize}
	}
	m.trunk.setCenter(m.center)
	res, err := m.h.StepTrunk(m.trunk, x, n, labels, anchors, m.stepLoss())
	return res.Loss, err
}

// features returns the tail's raw features (len(items) x featDim) of the dataset items: the
// mean over both views when avg is set (and mirrors exist), else of the original images.
func (m *tailModel) features(items []int, avg bool) ([]float32, error) {
	views := 1
	if avg {
		views = m.views
	}
	out := make([]float32, len(items)*m.featDim)
	x := make([]float32, tailEvalChunk*m.inDim)
	for v := 0; v < views; v++ {
		for c0 := 0; c0 < len(items); c0 += tailEvalChunk {
			c := min(tailEvalChunk, len(items)-c0)
			for i, it := range items[c0 : c0+c] {
				row := it*m.views + v
				copy(x[i*m.inDim:(i+1)*m.inDim], m.acts[row*m.inDim:(row+1)*m.inDim])
			}
			f, err := m.tail.Infer([][]float32{x[:c*m.inDim]}, c)
			if err != nil {
				return nil, err
			}
			dst := out[c0*m.featDim : (c0+c)*m.featDim]
			for j, val := range f {
				dst[j] += val / float32(views)
			}
		}
	}
	return out, nil
}

// embedItems returns the un-normalized embeddings of the dataset items (flip averaged with
// flip_tta).
func (m *tailModel) embedItems(items []int) ([]float32, error) {
	f, err := m.features(items, m.flipTTA)
	if err != nil {
		return nil, err
	}
	return m.embed(f, len(items)), nil
}

func (m *tailModel) checkpoint(epoch int, score float64, opt train.Optimizer, cfg Config) *Checkpoint {
	c := m.headModel.checkpoint(epoch, score, opt, cfg)
	for _, p := range m.params {
		c.Params = append(c.Params, NamedTensor{Name: tailParamPrefix + p.Name, Shape: append([]int(nil), p.Shape...),
			Value: append([]float64(nil), p.Value...)})
	}
	return c
}

// splitOptimizer steps the head's tensors at the loop's learning rate and the tail's (named with
// tailParamPrefix) at ratio times it, with separate optimizer states of the same kind.
type splitOptimizer struct {
	head, tail train.Optimizer
	ratio      float64
}

// newSplitOptimizer returns cfg's optimizer for the head (optimizer.lr) and the tail
// (backbone.lr).
func newSplitOptimizer(cfg Config) (*splitOptimizer, error) {
	var opts [2]train.Optimizer
	for i := range opts {
		var err error
		if opts[i], err = train.NewOptimizer(train.OptimizerKind(cfg.Optimizer.Name), cfg.Optimizer.WeightDecay); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrConfig, err)
		}
	}
	return &splitOptimizer{head: opts[0], tail: opts[1], ratio: cfg.Backbone.LR / cfg.Optimizer.LR}, nil
}

func (o *splitOptimizer) Step(params []train.Tensor, lr float64) {
	var h, t []train.Tensor
	for _, p := range params {
		if strings.HasPrefix(p.Name, tailParamPrefix) {
			t = append(t, p)
		} else {
			h = append(h, p)
		}
	}
	o.head.Step(h, lr)
	o.tail.Step(t, lr*o.ratio)
}

func (o *splitOptimizer) State() train.OptimizerState {
	hs, ts := o.head.State(), o.tail.State()
	s := train.OptimizerState{Steps: hs.Steps, M: map[string][]float64{}, V: map[string][]float64{}}
	for _, st := range []train.OptimizerState{hs, ts} {
		for k, v := range st.M {
			s.M[k] = v
		}
		for k, v := range st.V {
			s.V[k] = v
		}
	}
	return s
}

func (o *splitOptimizer) SetState(s train.OptimizerState) error {
	hs := train.OptimizerState{Steps: s.Steps, M: map[string][]float64{}, V: map[string][]float64{}}
	ts := train.OptimizerState{Steps: s.Steps, M: map[string][]float64{}, V: map[string][]float64{}}
	for k, v := range s.M {
		dst := hs
		if strings.HasPrefix(k, tailParamPrefix) {
			dst = ts
		}
		dst.M[k], dst.V[k] = v, s.V[k]
	}
	if err := o.head.SetState(hs); err != nil {
		return err
	}
	return o.tail.SetState(ts)
}

// tailSetup is what prepareTail checks and prepares, before any image is read.
type tailSetup struct {
	float   *onnx.ModelProto // the float backbone
	cut     string           // where the trained part starts
	feature string           // the feature tensor
	shape   []int            // per-image shape of the cut tensor
	prefix  *onnx.ModelProto // the float backbone cut at cut (output "features" [batch, prod(shape)])
	graph   *graph.Graph     // the trained part, decoded from cut to feature
}

// prepareTail loads the backbone as a float model, resolves the cut tensor, builds the prefix and
// decodes the trained part. It runs in runner.prepare, before features or activations are
// extracted, so that a train_blocks or trainable_from the model cannot honour fails at once:
// ErrConfig with a hint naming valid values (the model's block inputs, or the first tensor after
// an op the engine cannot train).
func (r *runner) prepareTail() (*tailSetup, error) {
	cfg := r.cfg.Backbone
	path := cfg.Path
	raw, err := onnxpb.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pipeline: %w", err)
	}
	m, err := onnxpb.UnmarshalDir(raw, path, filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("pipeline: %w", err)
	}
	s := &tailSetup{float: m, feature: r.bb.CutInfo().Feature}
	ts := &TailSummary{TrainBlocks: cfg.TrainBlocks, To: s.feature, BackboneLR: cfg.LR}
	r.sum.Tail = ts
	if r.bb.Info().Quantized {
		f, rep, err := weights.DequantizeModel(m)
		if err != nil {
			return nil, fmt.Errorf("pipeline: tail training needs a float backbone: %w", err)
		}
		s.float = f
		ts.Dequantized = true
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
			return nil, withHint(fmt.Errorf("%w: backbone.trainable_from %q is neither a tensor computed by a node nor a node of %q", ErrConfig, cfg.TrainableFrom, path),
				tailCutHint(s.float))
		}
	} else {
		pts := graph.TailCutPoints(s.float)
		if cfg.TrainBlocks > len(pts) {
			return nil, withHint(fmt.Errorf("%w: backbone.train_blocks %d: %q has %d inverted-residual blocks that can be cut before", ErrConfig, cfg.TrainBlocks, path, len(pts)),
				tailCutHint(s.float))
		}
		s.cut = pts[cfg.TrainBlocks-1]
	}
	ts.From = s.cut
	if !downstream(g, s.cut)[s.feature] {
		return nil, withHint(fmt.Errorf("%w: %s: the features %q are not computed from it", ErrConfig, tailOption(cfg), s.feature),
			tailCutHint(s.float))
	}
	prefix, ci, err := backbone.Cut(s.float, s.cut)
	if err != nil {
		return nil, fmt.Errorf("pipeline: the backbone before %q: %w", s.cut, err)
	}
	s.prefix = prefix
	if s.shape, err = tensorShape(s.float, s.cut); err != nil {
		return nil, err
	}
	if p := prodInts(s.shape); p != ci.Dim {
		return nil, fmt.Errorf("pipeline: cut tensor %q has shape %v but the cut gives %d values per image", s.cut, s.shape, ci.Dim)
	}
	ts.ActivationShape = s.shape
	tg, err := graph.Decode(s.float, graph.Options{From: []string{s.cut}, To: s.feature, Trainable: true, InputShapes: [][]int{s.shape}})
	if err != nil {
		return nil, withHint(fmt.Errorf("%w: %s: the backbone from %q to the features %q cannot be trained: %w", ErrConfig, tailOption(cfg), s.cut, s.feature, err),
			tailDecodeHint(s.float, cfg, err))
	}
	if len(tg.Params()) == 0 {
		return nil, withHint(fmt.Errorf("%w: %s: nothing to train between %q and the features %q", ErrConfig, tailOption(cfg), s.cut, s.feature),
			tailCutHint(s.float))
	}
	s.graph = tg
	return s, nil
}

// tailOption names the config value that chose the cut, for errors.
func tailOption(cfg BackboneConfig) string {
	if cfg.TrainableFrom != "" {
		return fmt.Sprintf("backbone.trainable_from %q", cfg.TrainableFrom)
	}
	return fmt.Sprintf("backbone.train_blocks %d", cfg.TrainBlocks)
}

// tailDecodeHint suggests valid values when graph.Decode refuses the part of m after the cut:
// the later cut point the *graph.NodeError names and, for train_blocks, the most blocks whose
// input comes at or after it; else the block inputs.
func tailDecodeHint(m *onnx.ModelProto, cfg BackboneConfig, err error) string {
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

// activations returns the activations at the cut of every item and, when mirrors are used, of
// its mirror: row item*views+v, prod(shape) float32 values each; from the cache when the prefix
// model, the preprocessing, the image list, the images' bytes and the views are unchanged.
func (r *runner) activations(ctx context.Context, s *tailSetup) ([]float32, int, error) {
	ts := r.sum.Tail
	n, d, views := len(r.ds.Items), prodInts(s.shape), r.copies()
	model, err := onnxpb.Marshal(s.prefix)
	if err != nil {
		return nil, 0, fmt.Errorf("pipeline: prefix model: %w", err)
	}
	sum := sha256.Sum256(model)
	content, err := r.contentKey(ctx)
	if err != nil {
		return nil, 0, err
	}
	key := data.CacheKey("tail-activations", hex.EncodeToString(sum[:]), r.pre.Key(), content, "views="+strconv.Itoa(views))
	path := filepath.Join(r.cfg.Cache, key+".act")
	ts.ActivationCache = path
	if acts, _, err := data.LoadFeaturesShape(path, n*views, d); err == nil {
		ts.ActivationHit = true
		r.env.Log.Info("activations from cache", "path", path)
		return acts, views, nil
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		r.env.Log.Warn("activation cache unusable, extracting again", "path", path, "err", err)
	}
	start := time.Now()
	sess, err := ort.NewSession(model, ort.Options{Threads: r.cfg.Threads})
	if err != nil {
		return nil, 0, fmt.Errorf("pipeline: the backbone before %q in onnxruntime: %w", s.cut, err)
	}
	defer sess.Close()
	acts := make([]float32, n*views*d)
	items := make([]int, n)
	for i := range items {
		items[i] = i
	}
	prog := data.NewProgress(r.env.Progress, "extract activations", n)
	chw := r.pre.Size()
	var buf, flipped []float32
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	loader := data.Loader{Preprocess: r.pre, BatchSize: r.cfg.Backbone.BatchSize, Workers: r.cfg.Preprocess.Workers, SkipBad: r.cfg.OnBadImage == "skip"}
	for b := range loader.Batches(ctx, r.ds, items) {
		if b.Err != nil {
			return nil, 0, r.imageHint(b.Err)
		}
		if b.N > 0 {
			if cap(buf) < b.N*d {
				buf = make([]float32, b.N*d)
			}
			in := b.Data[:b.N*chw]
			for v := 0; v < views; v++ {
				if v == 1 {
					flipped = rowops.Mirror(flipped, in, r.pre.Width)
					in = flipped
				}
				if err := sess.Run(in, b.N, buf[:b.N*d]); err != nil {
					return nil, 0, fmt.Errorf("pipeline: activations at %q: %w", s.cut, err)
				}
				for i, it := range b.Items {
					row := it*views + v
					copy(acts[row*d:(row+1)*d], buf[i*d:(i+1)*d])
				}
			}
		}
		prog.Add(b.N + len(b.Skipped)) // skipped images keep zero rows; the split leaves them out
		b.Release()
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	prog.Done()
	ts.ActivationSeconds = time.Since(start).Seconds()
	r.env.Log.Info("activations extracted", "tensor", s.cut, "shape", s.shape, "images", n, "views", views,
		"seconds", ts.ActivationSeconds)
	if err := os.MkdirAll(r.cfg.Cache, 0o755); err != nil {
		return nil, 0, fmt.Errorf("pipeline: activation cache: %w", err)
	}
	meta := map[string]string{"prefix_sha256": hex.EncodeToString(sum[:]), "tensor": s.cut, "shape": fmt.Sprint(s.shape),
		"views": strconv.Itoa(views), "preprocess": r.pre.Key(), "data": r.ds.Source}
	if err := data.SaveFeatures(path, acts, n*views, d, meta); err != nil {
		r.env.Log.Warn("could not write the activation cache", "path", path, "err", err)
	}
	return acts, views, nil
}

// runTail is runner.run after the baselines when the tail of the backbone is trained: prepare
// the float backbone and the activations, train tail + head, evaluate, export and report.
func (r *runner) runTail(ctx context.Context, feats, flips []float32, evalLabels []int, mopt metrics.Options) error {
	s := r.tail
	acts, views, err := r.activations(ctx, s)
	if err != nil {
		return err
	}
	m, err := r.trainTail(ctx, s, acts, views)
	if err != nil {
		return err
	}
	split := r.split
	emb, err := m.embedItems(split.evalIdx)
	if err != nil {
		return err
	}
	if r.sum.Trained, err = metrics.Evaluate(emb, len(split.evalIdx), m.dim(), evalLabels, mopt); err != nil {
		return err
	}
	r.env.Log.Info("trained (tail + head)", "recall_at_1", r.sum.Trained.RecallAt1, "nmi", r.sum.Trained.NMI)
	if raw, err := r.chooseExport(feats, flips, r.bb.Dim()); err != nil || raw {
		if err != nil {
			return err
		}
		return r.exportRaw(ctx, feats, flips)
	}
	if err := r.exportTail(ctx, s, m, split.evalIdx); err != nil {
		return err
	}
	r.writeReport(emb, m.dim(), split.evalIdx)
	return nil
}

// trainTail decodes the tail, initializes the head on the tail's initial features as
// trainHead does, and trains both with the Group Loss, model selection on the validation classes
// and checkpoints.
func (r *runner) trainTail(ctx context.Context, s *tailSetup, acts []float32, views int) (*tailModel, error) {
	cfg, split, ts := r.cfg, r.split, r.sum.Tail
	g := s.graph
	hm := &headModel{normalize: cfg.Head.Normalize, flipTTA: cfg.Backbone.FlipTTA, classes: split.fit, loss: cfg.Loss.headLoss()}
	if err := hm.loss.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	m := &tailModel{headModel: hm, tail: g, params: g.Params(), inDim: prodInts(s.shape), views: views, acts: acts}
	ts.Folded = g.Folded()
	for _, p := range m.params {
		ts.Params += len(p.Value)
	}
	outShape, err := g.OutputShape()
	if err != nil {
		return nil, err
	}
	m.featDim = prodInts(outShape)
	d := m.featDim
	r.env.Log.Info("tail", "from", s.cut, "to", s.feature, "activation_shape", s.shape, "features", d,
		"params", len(m.params), "values", ts.Params, "folded", len(ts.Folded))

	// The untrained float features: the reference the fine-tuning improves on.
	evalF, err := m.features(split.evalIdx, cfg.Backbone.FlipTTA)
	if err != nil {
		return nil, err
	}
	mopt := metrics.Options{KMeansRestarts: cfg.Eval.KMeansRestarts, Seed: cfg.Seed,
		Progress: EvalProgress(r.env.Progress, "baseline (float backbone)")}
	if ts.BaselineFloat, err = metrics.Evaluate(evalF, len(split.evalIdx), d, r.ds.Labels(split.evalIdx), mopt); err != nil {
		return nil, err
	}
	r.env.Log.Info("baseline (float features, untrained tail)", "recall_at_1", ts.BaselineFloat.RecallAt1, "nmi", ts.BaselineFloat.NMI)

	// Head initialization as in trainHead, on the tail's initial features of the original images.
	n := len(split.fitIdx)
	fitX, err := m.features(split.fitIdx, false)
	if err != nil {
		return nil, err
	}
	if cfg.Head.Center {
		hm.center = make([]float32, d)
		acc := make([]float64, d)
		for i := 0; i < n; i++ {
			for j, v := range fitX[i*d : (i+1)*d] {
				acc[j] += float64(v)
			}
		}
		for j := range acc {
			hm.center[j] = float32(acc[j] / float64(n))
		}
	}
	hm.transform(fitX, n)
	classOf := map[int]int{}
	for i, l := range split.fit {
		classOf[l] = i
	}
	labels := make([]int, n)
	for i, k := range split.fitIdx {
		labels[i] = classOf[r.ds.Items[k].Label]
	}
	emb := cfg.Head.EmbeddingDim
	h, err := head.New(head.Config{In: d, Emb: emb, Classes: len(split.fit), DType: head.Float32}, rand.New(rand.NewSource(cfg.Seed)))
	if err != nil {
		return nil, err
	}
	hm.h = h
	if cfg.Head.Init == "pca" {
		if emb > d || emb > n {
			return nil, fmt.Errorf("%w: head.init pca needs embedding_dim %d <= feature dim %d and <= training images %d", ErrConfig, emb, d, n)
		}
		comp, mean, err := train.PCA(fitX, n, d, emb, cfg.Head.Center)
		if err != nil {
			return nil, err
		}
		bias := make([]float64, emb)
		for k := 0; k < emb; k++ {
			var sum float64
			for j := 0; j < d; j++ {
				sum += comp[k*d+j] * mean[j]
			}
			bias[k] = -sum
		}
		if err := h.SetParam(paramEmbWeight, comp); err != nil {
			return nil, err
		}
		if err := h.SetParam(paramEmbBias, bias); err != nil {
			return nil, err
		}
	}
	if cfg.Head.ClassifierInit == "means" {
		if err := hm.initClassifierMeans(fitX, labels, len(split.fit), cfg.Head.ClassifierScale); err != nil {
			return nil, err
		}
	}
	m.setTensors()

	sampler, notes, err := train.NewClassSampler(labels, cfg.Sampler.ClassesPerBatch, cfg.Sampler.SamplesPerClass,
		func(c int) string { return r.ds.Classes[split.fit[c]] })
	if err != nil {
		return nil, err
	}
	for _, note := range notes {
		r.env.Log.Warn("sampler: " + note)
	}
	r.sum.Training.SamplerNotes = notes
	r.sum.Training.BatchSize = sampler.BatchSize()
	opt, err := newSplitOptimizer(cfg)
	if err != nil {
		return nil, err
	}
	// Each training sample is the activation of the image or of its mirror, at random.
	in := m.inDim
	batch := func(idx []int, dst []float32, rng *rand.Rand) {
		for i, k := range idx {
			row := split.fitIdx[k] * views
			if views > 1 {
				row += rng.Intn(views)
			}
			copy(dst[i*in:(i+1)*in], acts[row*in:(row+1)*in])
		}
	}
	var hooks train.Hooks
	r.sum.Training.Selection = "none (last epoch)"
	if len(split.val) > 0 {
		r.sum.Training.Selection = "map_at_r on validation classes"
		valY := r.ds.Labels(split.valIdx)
		hooks.Validate = func(epoch int) (float64, error) {
			e, err := m.embedItems(split.valIdx)
			if err != nil {
				return 0, err
			}
			res, err := metrics.Evaluate(e, len(split.valIdx), emb, valY, metrics.Options{SkipClustering: true})
			if err != nil {
				return 0, err
			}
			r.env.Log.Debug("validation", "epoch", epoch, "recall_at_1", res.RecallAt1, "map_at_r", res.MAPAtR)
			return res.MAPAtR, nil
		}
	}
	// last.ckpt (head and tail tensors, both optimizer states) lets --resume continue the run.
	base := func() *Checkpoint {
		return &Checkpoint{Center: hm.center, Normalize: hm.normalize, FlipTTA: hm.flipTTA, Classes: hm.classes, Config: cfg}
	}
	logEpoch := func(st train.EpochStats) []any { return []any{"backbone_lr", st.LR * opt.ratio} }
	if err := r.fit(ctx, fitJob{model: m, opt: opt, sampler: sampler, batch: batch, labels: labels, dim: in, hooks: hooks,
		what: "train tail + head (epochs)", logEpoch: logEpoch, center: hm.center, base: base}); err != nil {
		return nil, err
	}
	return m, nil
}
