package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/grouploss/pipeline/pipeline/config"
	"github.com/grouploss/pipeline/pipeline/train"
)

// lastCheckpointFile is the per-epoch checkpoint of a run folder: the training state after the
// last completed epoch (parameters, optimizer, learning rate, best-so-far parameters and score,
// history), written atomically with a checksum at the end of every epoch and removed when the
// run succeeds. Resume continues from it.
const lastCheckpointFile = "last.ckpt"

// Resume is `pipeline run --resume DIR`: it continues the interrupted run in the run folder dir
// (stopped by Ctrl-C, SIGTERM, kill -9, a crash or a power cut) with the resolved config that
// run wrote to dir/config.yaml, and with the same seed ends with the same metrics and model as
// an uninterrupted run.
//
// The run folder is reused in place: the run-folder policy (refuse a non-empty --out without
// --force) does not apply, config.yaml is kept as written, and every other file is rewritten.
// Features come from the feature cache when it is intact (it is checksummed: a torn or damaged
// cache file is extracted again), training continues after the last epoch saved in last.ckpt
// (from the first epoch when there is none), and evaluation and export are redone. A run folder
// staged by --force ("<out>.partial-*", named in the interrupted run's error) replaces <out>
// when the resumed run succeeds, as the original run would have. A run whose metrics.json says
// "ok" is finished and refused (config.ErrInvalid), as are folders without config.yaml, and a last.ckpt
// written under another config or damaged (delete it to train from the first epoch).
// Relative paths in config.yaml (data, cache, backbone) are relative to the working folder, as
// when the run started: resume from the same folder.
func Resume(ctx context.Context, dir string, env RunEnv) (*Summary, error) {
	dir = filepath.Clean(dir)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		if err == nil {
			err = fmt.Errorf("%q is not a folder", dir)
		}
		return nil, withHint(fmt.Errorf("%w: resume: %w", config.ErrInvalid, err), "pass the run folder of an interrupted `pipeline run` to --resume")
	}
	cfg, err := config.LoadConfig(filepath.Join(dir, "config.yaml"))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, withHint(fmt.Errorf("%w: resume: %q has no config.yaml: it is not the folder of a run that started", config.ErrInvalid, dir),
				"pass the run folder of an interrupted `pipeline run` to --resume, or start a new run")
		}
		return nil, err
	}
	if b, err := os.ReadFile(filepath.Join(dir, "metrics.json")); err == nil {
		var s struct {
			Status string `json:"status"`
		}
		if json.Unmarshal(b, &s) == nil && s.Status == "ok" {
			return nil, withHint(fmt.Errorf("%w: resume: the run in %q finished (metrics.json says status ok): nothing to resume", config.ErrInvalid, dir),
				"start a new run with another --out")
		}
	}
	// Temporary files of atomic writes that a kill -9 interrupted: the files they were to replace
	// are intact (old or new), the temporaries are garbage.
	if tmps, err := filepath.Glob(filepath.Join(dir, ".*.tmp-*")); err == nil {
		for _, p := range tmps {
			os.Remove(p)
		}
	}
	return runIn(ctx, cfg, env, dir)
}

// stagedTarget returns the folder a resumed run replaces when it succeeds: out (as config.yaml
// names it, resolved beside dir) when dir is the "<out>.partial-*" staging folder of a --force
// run, else "".
func stagedTarget(dir, out string) string {
	if out == "" {
		return ""
	}
	base := filepath.Base(filepath.Clean(out))
	if !strings.HasPrefix(filepath.Base(dir), base+".partial-") {
		return ""
	}
	return filepath.Join(filepath.Dir(dir), base)
}

// resumable connects Fit to last.ckpt: hooks.Checkpoint saves the state after every epoch, and
// in a resumed run o.Resume is set from the saved state. params are the model's tensors (in
// Tensors order), base returns a checkpoint holding everything but the training state (the
// feature transform, classes and config), and center is the feature mean the model was built
// with, compared with the saved one. The file is written in the background while the next
// epoch trains (one write at a time); flush waits for the last write and returns its error:
// call it when Fit returns.
func (r *runner) resumable(params []train.Tensor, center []float32, base func() *Checkpoint, hooks *train.Hooks, o *train.Options) (flush func() error, err error) {
	path := filepath.Join(r.dir, lastCheckpointFile)
	if r.resume {
		ck, err := r.loadLast(path)
		if err != nil {
			return nil, err
		}
		if ck != nil {
			st := *ck.Train
			st.Optimizer = ck.Optimizer
			if st.Optimizer.M == nil || st.Optimizer.V == nil { // gob drops empty maps
				st.Optimizer.M, st.Optimizer.V = map[string][]float64{}, map[string][]float64{}
			}
			st.Params = make([][]float64, len(params))
			for i, p := range params {
				k := slices.IndexFunc(ck.Params, func(t NamedTensor) bool { return t.Name == p.Name })
				if k < 0 || len(ck.Params[k].Value) != len(p.Value) {
					return nil, fmt.Errorf("%w: %q does not hold parameter %q of %d values (delete it to train again from the first epoch)",
						ErrCorruptCheckpoint, path, p.Name, len(p.Value))
				}
				st.Params[i] = ck.Params[k].Value
			}
			if !slices.Equal(ck.Center, center) {
				w := fmt.Sprintf("resume: the features differ from those the interrupted run trained on (extracted again?); the result may differ from an uninterrupted run's")
				r.env.Log.Warn(w)
				r.sum.Warnings = append(r.sum.Warnings, w)
			}
			o.Resume = &st
			r.sum.Training.ResumedFromEpoch = st.Epoch
			r.env.Log.Info("resuming training", "checkpoint", path, "completed_epochs", st.Epoch, "of", o.Epochs)
		}
	}
	var pending chan error // the write in flight
	flush = func() error {
		if pending == nil {
			return nil
		}
		err := <-pending
		pending = nil
		return err
	}
	hooks.Checkpoint = func(st train.State) error {
		if err := flush(); err != nil {
			return err
		}
		c := base()
		c.Epoch, c.Score, c.Optimizer = st.Epoch, st.BestScore, st.Optimizer
		c.Params = make([]NamedTensor, len(params))
		for i, p := range params {
			c.Params[i] = NamedTensor{Name: p.Name, Shape: []int{len(p.Value)}, Value: st.Params[i]}
		}
		st.Params, st.Optimizer = nil, train.OptimizerState{} // stored once, in c.Params and c.Optimizer
		c.Train = &st
		pending = make(chan error, 1)
		go func(done chan<- error) { done <- SaveCheckpoint(path, c) }(pending)
		return nil
	}
	return flush, nil
}

// loadLast reads last.ckpt of a resumed run: nil when there is none (the run stopped before its
// first epoch ended); an error when it is damaged or was written under another config.
func (r *runner) loadLast(path string) (*Checkpoint, error) {
	ck, err := LoadCheckpoint(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		r.env.Log.Info("resume: no last.ckpt, training starts from the first epoch", "run", r.dir)
		return nil, nil
	case err != nil:
		return nil, withHint(err, fmt.Sprintf("delete %s to train again from the first epoch", path))
	case ck.Train == nil:
		return nil, withHint(fmt.Errorf("%w: %q holds no training state", ErrCorruptCheckpoint, path),
			fmt.Sprintf("delete %s to train again from the first epoch", path))
	}
	if a, b := configKey(ck.Config), configKey(r.cfg); !bytes.Equal(a, b) {
		return nil, withHint(fmt.Errorf("%w: resume: %q was written under a config other than %s",
			config.ErrInvalid, path, filepath.Join(r.dir, "config.yaml")), fmt.Sprintf("restore config.yaml, or delete %s to train again from the first epoch", path))
	}
	return ck, nil
}

// configKey is the config as YAML without the run folder, which a resumed run may see under
// another name.
func configKey(c config.Config) []byte {
	c.Out, c.Force = "", false
	b, _ := yaml.Marshal(c)
	return b
}
