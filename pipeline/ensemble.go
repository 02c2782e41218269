package pipeline

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"time"

	"github.com/grouploss/pipeline/internal/rowops"
	"github.com/grouploss/pipeline/pipeline/export"
	"github.com/grouploss/pipeline/pipeline/metrics"
)

// MemberSummary is one head of a naive ensemble (config ensemble > 1), in metrics.json "members".
// The run's "trained" metrics are the ensemble's; its "training" block is the first member's and
// timing.train_seconds the sum over the members.
type MemberSummary struct {
	Seed         int64          `json:"seed"`
	Trained      metrics.Result `json:"trained"`
	BestEpoch    int            `json:"best_epoch"`
	BestScore    float64        `json:"best_validation_score"`
	TrainSeconds float64        `json:"train_seconds"`
	// Checkpoint is the member's best-epoch checkpoint, relative to the run folder.
	Checkpoint string `json:"checkpoint"`
}

// ensembleModel is the naive ensemble of models trained on the same features: the embedding of
// an image is the concatenation of the members' L2-normalized embeddings.
type ensembleModel struct{ members []model }

func (e *ensembleModel) dim() int {
	n := 0
	for _, m := range e.members {
		n += m.dim()
	}
	return n
}

func (e *ensembleModel) embedItems(items []int) ([]float32, error) {
	return e.concat(len(items), func(m model) ([]float32, error) { return m.embedItems(items) })
}

func (e *ensembleModel) embedImages(img []float32, n int) ([]float32, error) {
	return e.concat(n, func(m model) ([]float32, error) { return m.embedImages(img, n) })
}

// source is the members' common feature source.
func (e *ensembleModel) source() featureSource { return e.members[0].source() }

// concat returns the n rows of the members' embeddings (embed of each member), each member's part
// L2-normalized.
func (e *ensembleModel) concat(n int, embed func(model) ([]float32, error)) ([]float32, error) {
	total := e.dim()
	out := make([]float32, n*total)
	off := 0
	for _, m := range e.members {
		w := m.dim()
		z, err := embed(m)
		if err != nil {
			return nil, err
		}
		z = append([]float32(nil), z...) // normalized below: a member may hand out rows it keeps
		rowops.L2Normalize(z, w)
		for i := 0; i < n; i++ {
			copy(out[i*total+off:i*total+off+w], z[i*w:(i+1)*w])
		}
		off += w
	}
	return out, nil
}

// layers exports the ensemble as the members' common leading layers (flip averaging and the
// feature transform, identical for heads trained on the same features) followed by one
// export.Branches holding the rest of each member's layers.
func (e *ensembleModel) layers() ([]export.Layer, error) {
	all := make([][]export.Layer, len(e.members))
	for k, m := range e.members {
		ls, err := m.layers()
		if err != nil {
			return nil, err
		}
		all[k] = ls
	}
	common := 0
	for ; common < len(all[0]); common++ {
		if _, ok := all[0][common].(export.Linear); ok {
			break
		}
		same := true
		for _, ls := range all[1:] {
			same = same && common < len(ls) && reflect.DeepEqual(ls[common], all[0][common])
		}
		if !same {
			break
		}
	}
	branches := make(export.Branches, len(all))
	for k, ls := range all {
		branches[k] = ls[common:]
	}
	return append(append([]export.Layer(nil), all[0][:common]...), branches), nil
}

// trainModel trains the run's model, the problem newProblem makes for a runner: one model, or
// with ensemble N > 1 the models of seeds seed .. seed+N-1 on the same features and split, each
// evaluated on its own in r.sum.Members. The first member checkpoints in the run folder as a
// single model does, member k (k >= 2) in member-<k>/checkpoint.ckpt.
func (r *runner) trainModel(ctx context.Context, newProblem func(*runner) (problem, error)) (model, error) {
	p, err := newProblem(r)
	if err != nil {
		return nil, err
	}
	if err := r.train(ctx, p); err != nil {
		return nil, err
	}
	first := p.model
	n := r.cfg.EnsembleSize()
	if n == 1 {
		return first, nil
	}
	cfg, split := r.cfg, r.split
	evalY := r.ds.Labels(split.evalIdx)
	mopt := metrics.Options{KMeansRestarts: cfg.Eval.KMeansRestarts, Seed: cfg.Seed}
	ens := &ensembleModel{}
	var dirs []string
	for k := 0; k < n; k++ {
		var m model = first
		sub := r
		if k > 0 {
			cp := *r
			sub = &cp
			sub.cfg.Seed = cfg.Seed + int64(k)
			sub.sum = &Summary{}
			sub.dir = filepath.Join(r.dir, filepath.Dir(ckptName(k)))
			if err := os.MkdirAll(sub.dir, 0o755); err != nil {
				return nil, fmt.Errorf("pipeline: ensemble member folder: %w", err)
			}
			dirs = append(dirs, sub.dir)
			r.env.Log.Info("ensemble member", "member", k+1, "of", n, "seed", sub.cfg.Seed)
			t0 := time.Now()
			p, err := newProblem(sub)
			if err == nil {
				err = sub.train(ctx, p)
			}
			if err != nil {
				return nil, fmt.Errorf("pipeline: ensemble member %d (seed %d): %w", k+1, sub.cfg.Seed, err)
			}
			m = p.model
			r.sum.Timing.TrainSeconds += sub.sum.Timing.TrainSeconds
			r.sum.Warnings = append(r.sum.Warnings, sub.sum.Warnings...)
			r.env.Log.Debug("ensemble member trained", "member", k+1, "seconds", time.Since(t0).Seconds())
		}
		mopt.Progress = EvalProgress(r.env.Progress, fmt.Sprintf("ensemble member %d", k+1))
		emb, err := m.embedItems(split.evalIdx)
		if err != nil {
			return nil, err
		}
		res, err := metrics.Evaluate(emb, len(split.evalIdx), m.dim(), evalY, mopt)
		if err != nil {
			return nil, err
		}
		r.sum.Members = append(r.sum.Members, MemberSummary{Seed: sub.cfg.Seed, Trained: res,
			BestEpoch: sub.sum.Training.BestEpoch, BestScore: sub.sum.Training.BestScore,
			TrainSeconds: sub.sum.Timing.TrainSeconds, Checkpoint: ckptName(k)})
		r.env.Log.Info("ensemble member", "member", k+1, "seed", sub.cfg.Seed, "recall_at_1", res.RecallAt1, "nmi", res.NMI)
		ens.members = append(ens.members, m)
	}
	// Every member is trained: the members' per-epoch checkpoints (kept for --resume) go, as the
	// run's own does when it succeeds.
	for _, dir := range dirs {
		os.Remove(filepath.Join(dir, lastCheckpointFile))
	}
	return ens, nil
}

// ckptName is the best-epoch checkpoint of ensemble member k (0-based), relative to the run folder.
func ckptName(k int) string {
	if k == 0 {
		return "checkpoint.ckpt"
	}
	return filepath.Join(fmt.Sprintf("member-%d", k+1), "checkpoint.ckpt")
}
