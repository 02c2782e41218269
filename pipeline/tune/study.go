package tune

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/grouploss/pipeline/internal/atomicfile"
)

// Sentinels an Objective wraps so that a trial is recorded and the study goes on.
var (
	// ErrPruned is what the report function returns to stop a poor trial (successive halving).
	ErrPruned = errors.New("tune: stopped by successive halving")
	// ErrNonFinite marks a trial whose training produced NaN or Inf.
	ErrNonFinite = errors.New("tune: non-finite value")
	// ErrInvalid marks a trial whose configuration the trainer refuses.
	ErrInvalid = errors.New("tune: invalid trial config")
)

// Status of a recorded trial.
const (
	StatusOK      = "ok"
	StatusPruned  = "pruned"
	StatusNaN     = "nan"
	StatusInvalid = "invalid"
	StatusFailed  = "failed"
)

// Trial is one evaluated point of the space.
type Trial struct {
	Index int `json:"index"` // 0-based, in the order the trials ran
	// Base marks the base trial (Settings.BaseTrial): the base config with only the space's
	// single-valued keys set, in Params.
	Base   bool           `json:"base,omitempty"`
	Params map[string]any `json:"params"`
	Status string         `json:"status"`
	// Score is the best validation score (the model-selection score), BestEpoch its epoch.
	Score     float64 `json:"score"`
	BestEpoch int     `json:"best_epoch"`
	// Scores[e] is the validation score after epoch e (0: before training), up to where it stopped.
	Scores  []float64 `json:"scores"`
	Seconds float64   `json:"seconds"`
	Error   string    `json:"error,omitempty"`
}

// Epochs is the number of epochs the trial trained.
func (t *Trial) Epochs() int { return max(len(t.Scores)-1, 0) }

// Study is the state of a search, written as tune.json after every trial.
type Study struct {
	// Config and Space are the files searched from and over, with the SHA-256 of their content:
	// a study resumes only over the same ones.
	Config    string    `json:"config"`
	ConfigSHA string    `json:"config_sha256"`
	Space     string    `json:"space"`
	SpaceSHA  string    `json:"space_sha256"`
	Keys      []string  `json:"keys"` // the space's keys, in file order
	Seed      uint64    `json:"seed"`
	BaseTrial bool      `json:"base_trial,omitempty"` // trial 1 is the base config (Settings.BaseTrial)
	Halving   Halving   `json:"halving"`
	Metric    string    `json:"metric"` // what the scores are
	Trials    []Trial   `json:"trials"`
	Best      int       `json:"best"` // index in Trials of the best completed trial, -1 if none
	Updated   time.Time `json:"updated"`
}

// Objective trains the configuration of trial t (t.Params set). After each epoch it calls report
// with the validation scores so far (scores[0] before training); when report returns an error
// (ErrPruned), training stops and Run returns it, wrapped or not. Errors wrapping ErrNonFinite or
// ErrInvalid record the trial as nan or invalid; context cancellation stops the study without
// recording the trial; other errors record it as failed.
type Objective func(ctx context.Context, t *Trial, report func(scores []float64) error) error

// Files of a study's folder.
const (
	StudyFile  = "tune.json"
	ReportFile = "tune.md"
	BestFile   = "best.yaml"
)

// Settings are what a study searches.
type Settings struct {
	Space      *Space
	SpaceRaw   []byte
	ConfigPath string
	ConfigRaw  []byte
	Trials     int
	Seed       uint64
	// BaseTrial makes trial 1 the base config itself, with only the space's single-valued keys
	// set (e.g. loss.name: [triplet], whose args then take their defaults); the other trials take
	// the quasi-random points. The study's best is then never below what the base config scores,
	// and the halving rungs measure the other trials against it.
	BaseTrial bool
	Halving   Halving
	Metric    string
	// BestConfig writes the base config with the best trial's values as a config file's content.
	BestConfig func(params map[string]any) ([]byte, error)
}

// Run runs the trials of s not yet in out/tune.json, one after the other; progress gets one
// line per trial. tune.json, tune.md and best.yaml (the best completed trial's config) are written
// atomically after each trial, so an interrupted study loses at most the trial in progress. A
// study in out made over another config, space, seed or halving is an error.
func Run(ctx context.Context, s Settings, out string, obj Objective, progress io.Writer) (*Study, error) {
	st, err := open(s, out)
	if err != nil {
		return nil, err
	}
	points := s.Space.Points(s.Trials, s.Seed)
	for i := len(st.Trials); i < s.Trials; i++ {
		t := Trial{Index: i, Params: map[string]any{}}
		if s.BaseTrial && i == 0 {
			t.Base = true
			for _, p := range s.Space.Params {
				if p.Kind == Choice && len(p.Choices) == 1 {
					t.Params[p.Key] = p.Choices[0]
				}
			}
		} else {
			point := points[i]
			if s.BaseTrial { // the base trial took no point
				point = points[i-1]
			}
			for j, p := range s.Space.Params {
				t.Params[p.Key] = point[j]
			}
		}
		start := time.Now()
		err := obj(ctx, &t, func(scores []float64) error {
			t.Scores = append(t.Scores[:0], scores...)
			e := len(scores) - 1
			if !s.Halving.IsRung(e) {
				return nil
			}
			mine, _ := RungScore(scores, e)
			if s.Halving.Promote(st.rungScores(e), mine) {
				return nil
			}
			return fmt.Errorf("%w at epoch %d (score %.4g)", ErrPruned, e, mine)
		})
		if ctx.Err() != nil {
			return st, fmt.Errorf("tune: trial %d interrupted (rerun with the same --out to continue): %w", i+1, ctx.Err())
		}
		t.Seconds = time.Since(start).Seconds()
		t.finish(err)
		st.Trials = append(st.Trials, t)
		st.pickBest()
		if err := st.save(out, s); err != nil {
			return st, err
		}
		fmt.Fprintln(progress, st.progressLine(&t, s))
	}
	return st, st.save(out, s)
}

// finish sets the trial's status, score and best epoch from the Objective's error and scores.
func (t *Trial) finish(err error) {
	t.Status = StatusOK
	switch {
	case err == nil:
	case errors.Is(err, ErrPruned):
		t.Status = StatusPruned
	case errors.Is(err, ErrNonFinite):
		t.Status = StatusNaN
	case errors.Is(err, ErrInvalid):
		t.Status = StatusInvalid
	default:
		t.Status = StatusFailed
	}
	if err != nil {
		t.Error = err.Error()
	}
	for e, v := range t.Scores { // a non-finite score ends the record there (JSON has no NaN)
		if math.IsNaN(v) || math.IsInf(v, 0) {
			t.Scores = t.Scores[:e]
			if t.Status == StatusOK {
				t.Status = StatusNaN
			}
			break
		}
	}
	t.Score, t.BestEpoch = 0, 0
	for e, v := range t.Scores {
		if e == 0 || v > t.Score {
			t.Score, t.BestEpoch = v, e
		}
	}
}

// rungScores are the scores at rung epoch of the recorded trials that reached it.
func (st *Study) rungScores(epoch int) []float64 {
	var out []float64
	for _, t := range st.Trials {
		if v, ok := RungScore(t.Scores, epoch); ok {
			out = append(out, v)
		}
	}
	return out
}

// pickBest sets Best to the completed trial of highest score. A pruned trial is never best: it
// stopped before its configuration's epochs.
func (st *Study) pickBest() {
	st.Best = -1
	for i, t := range st.Trials {
		if t.Status == StatusOK && len(t.Scores) > 0 && (st.Best < 0 || t.Score > st.Trials[st.Best].Score) {
			st.Best = i
		}
	}
}

func (st *Study) progressLine(t *Trial, s Settings) string {
	var b strings.Builder
	fmt.Fprintf(&b, "trial %d/%d %-7s score %.4f epochs %d %.1fs", t.Index+1, s.Trials, t.Status, t.Score, t.Epochs(), t.Seconds)
	if st.Best >= 0 {
		fmt.Fprintf(&b, " | best %.4f (trial %d)", st.Trials[st.Best].Score, st.Trials[st.Best].Index+1)
	}
	b.WriteString(" |")
	if t.Base {
		b.WriteString(" the base config")
	}
	for _, p := range s.Space.Params {
		if v, ok := t.Params[p.Key]; ok {
			fmt.Fprintf(&b, " %s=%v", shortKey(p.Key), v)
		}
	}
	return b.String()
}

// shortKey is the last part of a dotted key.
func shortKey(k string) string { return k[strings.LastIndex(k, ".")+1:] }

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// open returns the study in out (creating the folder), or a new one. A study over another
// config, space, seed or halving is refused, so resumed trials compare with the recorded ones.
func open(s Settings, out string) (*Study, error) {
	keys := make([]string, len(s.Space.Params))
	for i, p := range s.Space.Params {
		keys[i] = p.Key
	}
	fresh := &Study{Config: s.ConfigPath, ConfigSHA: sha(s.ConfigRaw), Space: s.Space.File, SpaceSHA: sha(s.SpaceRaw),
		Keys: keys, Seed: s.Seed, BaseTrial: s.BaseTrial, Halving: s.Halving, Metric: s.Metric, Trials: []Trial{}, Best: -1}
	path := filepath.Join(out, StudyFile)
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(out, 0o755); err != nil {
			return nil, fmt.Errorf("tune: %w", err)
		}
		return fresh, nil
	}
	if err != nil {
		return nil, fmt.Errorf("tune: %w", err)
	}
	var st Study
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, fmt.Errorf("tune: %s is damaged (%v): remove it to start the study again, or choose another --out", path, err)
	}
	differs := func(what string) error {
		return fmt.Errorf("tune: %s holds a study with another %s; choose another --out to start a new one", path, what)
	}
	switch {
	case st.ConfigSHA != fresh.ConfigSHA:
		return nil, differs("config (" + st.Config + ")")
	case st.SpaceSHA != fresh.SpaceSHA:
		return nil, differs("space (" + st.Space + ")")
	case st.Seed != fresh.Seed:
		return nil, differs(fmt.Sprintf("seed (%d)", st.Seed))
	case st.BaseTrial != fresh.BaseTrial:
		return nil, differs(fmt.Sprintf("base-trial setting (%v: pass --base-trial=%v to continue it)", st.BaseTrial, st.BaseTrial))
	case st.Halving != fresh.Halving:
		return nil, differs(fmt.Sprintf("successive halving (eta %d, min epochs %d)", st.Halving.Eta, st.Halving.MinEpochs))
	}
	if st.Trials == nil {
		st.Trials = []Trial{}
	}
	st.pickBest()
	return &st, nil
}

func (st *Study) save(out string, s Settings) error {
	st.Updated = time.Now().UTC()
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("tune: %s: %w", StudyFile, err)
	}
	if err := atomicfile.WriteBytes(filepath.Join(out, StudyFile), "study", append(b, '\n')); err != nil {
		return fmt.Errorf("tune: %w", err)
	}
	if err := atomicfile.WriteBytes(filepath.Join(out, ReportFile), "study report", []byte(st.Markdown(s.Space))); err != nil {
		return fmt.Errorf("tune: %w", err)
	}
	if st.Best < 0 || s.BestConfig == nil {
		return nil
	}
	b, err = s.BestConfig(st.Trials[st.Best].Params)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteBytes(filepath.Join(out, BestFile), "best config", b); err != nil {
		return fmt.Errorf("tune: %w", err)
	}
	return nil
}
