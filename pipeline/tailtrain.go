package pipeline

import (
	"fmt"
	"io"
	"math/rand"
	"strings"

	"github.com/grouploss/pipeline/backbone/graph"
	"github.com/grouploss/pipeline/backbone/ort"
	"github.com/grouploss/pipeline/internal/rowops"
	"github.com/grouploss/pipeline/pipeline/config"
	"github.com/grouploss/pipeline/pipeline/data"
	"github.com/grouploss/pipeline/pipeline/metrics"
	"github.com/grouploss/pipeline/pipeline/train"
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
// weight decay as the head. The model (tailModel) is the head over the tail's features; it is
// trained, evaluated and exported by the same calls as the head alone (model.go).

// tailParamPrefix prefixes the tail's parameter names in train.Tensors, optimizer state and
// checkpoints, keeping them apart from the head's.
const tailParamPrefix = "backbone/"

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
	Dequantized bool `json:"dequantized"`
	// Prefix is backbone.tail_prefix: "int8" when the activations at the cut came from the int8
	// backbone's own layers, "float" when from the float (converted) backbone.
	Prefix            string  `json:"prefix"`
	ActivationCache   string  `json:"activation_cache"`
	ActivationHit     bool    `json:"activation_cache_hit"`
	ActivationSeconds float64 `json:"activation_seconds"`
	// ActivationsWithFeatures: the activations came out of the features' onnxruntime pass (one
	// pass over the images; activation_seconds is then that pass's time, as extract_seconds).
	ActivationsWithFeatures bool `json:"activations_with_features,omitempty"`
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
	// setup is the cut the tail was decoded from; pre, threads and prefixSess compute the
	// features of images (the export's check).
	setup      *tailSetup
	pre        data.Preprocess
	threads    int
	prefixSess *ort.Session
}

var _ io.Closer = (*tailModel)(nil)

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

func (m *tailModel) featureDim() int { return m.featDim }

func (m *tailModel) items(items []int, avg bool) ([]float32, error) { return m.features(items, avg) }

// images runs the prefix in onnxruntime and the tail in Go on n preprocessed images (and on
// their mirrors when avg is set).
func (m *tailModel) images(img []float32, n int, avg bool) ([]float32, error) {
	if m.prefixSess == nil {
		sess, err := ort.NewSession(m.setup.prefixBytes, ort.Options{Threads: m.threads})
		if err != nil {
			return nil, fmt.Errorf("pipeline: the backbone before %q in onnxruntime: %w", m.setup.cut, err)
		}
		m.prefixSess = sess
	}
	views := 1
	if avg {
		views = 2
	}
	feats := make([]float32, n*m.featDim)
	act := make([]float32, n*m.inDim)
	for v := 0; v < views; v++ {
		if v == 1 {
			img = rowops.Mirror(nil, img, m.pre.Width)
		}
		if err := m.prefixSess.Run(img, n, act); err != nil {
			return nil, err
		}
		f, err := m.tail.Infer([][]float32{act}, n)
		if err != nil {
			return nil, err
		}
		for j, x := range f {
			feats[j] += x / float32(views)
		}
	}
	return feats, nil
}

// Close releases the prefix's onnxruntime session, if images opened one.
func (m *tailModel) Close() error {
	if m.prefixSess == nil {
		return nil
	}
	err := m.prefixSess.Close()
	m.prefixSess = nil
	return err
}

func (m *tailModel) checkpoint(epoch int, score float64, opt train.Optimizer, cfg config.Config) *Checkpoint {
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
func newSplitOptimizer(cfg config.Config) (*splitOptimizer, error) {
	var opts [2]train.Optimizer
	for i := range opts {
		var err error
		if opts[i], err = train.NewOptimizer(train.OptimizerKind(cfg.Optimizer.Name), cfg.Optimizer.WeightDecay); err != nil {
			return nil, fmt.Errorf("%w: %v", config.ErrInvalid, err)
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

// tailProblem is the backbone's tail from the cut s and the head trained together on the
// activations acts at the cut (views per item: 1, or 2 with mirrors). It evaluates the tail's
// untrained float features on the evaluation classes first, the reference the fine-tuning
// improves on (metrics.json tail.baseline_float): the raw features' baseline when they come from
// the same float model, else computed through the tail (an int8 backbone run as int8).
func (r *runner) tailProblem(s *tailSetup, acts []float32, views int) (problem, error) {
	cfg, split, ts := r.cfg, r.split, r.sum.Tail
	g := s.graph
	m := &tailModel{tail: g, params: g.Params(), inDim: prodInts(s.shape), views: views, acts: acts,
		setup: s, pre: r.pre, threads: cfg.Threads}
	hm, err := newHeadModel(cfg, m, split.fit)
	if err != nil {
		return problem{}, err
	}
	m.headModel = hm
	ts.Folded = g.Folded()
	for _, p := range m.params {
		ts.Params += len(p.Value)
	}
	outShape, err := g.OutputShape()
	if err != nil {
		return problem{}, err
	}
	m.featDim = prodInts(outShape)
	r.env.Log.Info("tail", "from", s.cut, "to", s.feature, "activation_shape", s.shape, "features", m.featDim,
		"params", len(m.params), "values", ts.Params, "folded", len(ts.Folded))

	switch {
	case len(split.evalIdx) == 0: // a tune trial, which never reads the evaluation classes
	case s.featureModel(r.bb):
		// The untrained tail computes the features again (bit for bit on AVX2,
		// TestMobileNetTail), so their baseline is its.
		ts.BaselineFloat = r.sum.Baseline
		if cfg.Backbone.FlipTTA && r.sum.BaselineTTA != nil {
			ts.BaselineFloat = *r.sum.BaselineTTA
		}
		r.env.Log.Info("baseline (float features, untrained tail): the raw features' (same float model)",
			"recall_at_1", ts.BaselineFloat.RecallAt1, "nmi", ts.BaselineFloat.NMI)
	default:
		evalF, err := m.features(split.evalIdx, cfg.Backbone.FlipTTA)
		if err != nil {
			return problem{}, err
		}
		mopt := metrics.Options{KMeansRestarts: cfg.Eval.KMeansRestarts, Seed: cfg.Seed,
			Progress: EvalProgress(r.env.Progress, "baseline (float backbone)")}
		if ts.BaselineFloat, err = metrics.Evaluate(evalF, len(split.evalIdx), m.featDim, r.ds.Labels(split.evalIdx), mopt); err != nil {
			return problem{}, err
		}
		r.env.Log.Info("baseline (untrained tail on the "+ts.Prefix+" activations)", "recall_at_1", ts.BaselineFloat.RecallAt1, "nmi", ts.BaselineFloat.NMI)
	}

	opt, err := newSplitOptimizer(cfg)
	if err != nil {
		return problem{}, err
	}
	// Each training sample is the activation of the image or of its mirror, at random.
	in := m.inDim
	inputs := func([]float32) (train.Batch, int) {
		return func(idx []int, dst []float32, rng *rand.Rand) {
			for i, k := range idx {
				row := split.fitIdx[k] * views
				if views > 1 {
					row += rng.Intn(views)
				}
				copy(dst[i*in:(i+1)*in], acts[row*in:(row+1)*in])
			}
		}, in
	}
	logEpoch := func(st train.EpochStats) []any { return []any{"backbone_lr", st.LR * opt.ratio} }
	return problem{model: m, head: hm, inputs: inputs, opt: opt, what: "train tail + head (epochs)", logEpoch: logEpoch}, nil
}
