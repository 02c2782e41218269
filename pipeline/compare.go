package pipeline

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/grouploss/pipeline/internal/atomicfile"
	"github.com/grouploss/pipeline/pipeline/config"
	"github.com/grouploss/pipeline/pipeline/metrics"
)

// CompareOptions are the settings of Compare.
type CompareOptions struct {
	// Seeds are the seeds every row is run with (default: the config's seed).
	Seeds []int64
	// Out is the folder of compare.md, compare.json and the run folders <row>/seed-<seed>.
	Out string
	// Losses are the trained single-head rows (default: softmax, triplet, contrastive,
	// proxy_anchor, group).
	Losses []string
	// Configs are rows given as whole configs (e.g. the best.yaml of a `pipeline tune` study per
	// loss), run as they are besides the seed and the folder. They must keep the protocol of the
	// base config (data, class split, backbone, preprocessing, cache): only how the model trains
	// differs between rows.
	Configs []RowConfig
	// Ensemble is the number of heads of the Group Loss ensemble row (default 3; 1 leaves the row out).
	Ensemble int
	// EnsembleEpochs, when > 0, trains the ensemble's heads for that many epochs instead of the
	// config's (to bound the comparison's time; the table says so).
	EnsembleEpochs int
	// Force runs every row again; otherwise a run folder holding a finished run of the same
	// config (its config.yaml) is reused, so an interrupted comparison continues where it stopped.
	Force bool
	// Lines receives one line per finished run and per finished row.
	Lines io.Writer
}

// Comparison is the outcome of Compare, written as compare.json.
type Comparison struct {
	Seeds   []int64      `json:"seeds"`
	Rows    []CompareRow `json:"rows"`
	Data    DataSummary  `json:"data"`
	Machine Machine      `json:"machine"`
	// ConfigRows names the rows given as config files, "NAME: PATH" (CompareOptions.Configs).
	ConfigRows []string `json:"config_rows,omitempty"`
	// Config is the base config the rows were derived from (loss, seed, ensemble and out vary).
	Config       config.Config `json:"config"`
	TotalSeconds float64       `json:"total_seconds"`
}

// CompareRow is one method across the seeds. Mean and Std (sample standard deviation, n-1; 0 for
// one run) are over the runs that succeeded; metrics are fractions.
type CompareRow struct {
	Name     string         `json:"name"`
	Loss     string         `json:"loss,omitempty"` // "" for the raw-feature rows
	Ensemble int            `json:"ensemble,omitempty"`
	Epochs   int            `json:"epochs,omitempty"`
	Runs     []CompareRun   `json:"runs"`
	Mean     metrics.Result `json:"mean"`
	Std      metrics.Result `json:"std"`
	// TrainSeconds is the mean head-training time (per-epoch validation included; an ensemble's
	// is the sum over its heads).
	TrainSeconds    float64 `json:"train_seconds"`
	TrainSecondsStd float64 `json:"train_seconds_std"`
}

// CompareRun is one run of a row.
type CompareRun struct {
	Seed         int64          `json:"seed"`
	Dir          string         `json:"dir"`
	Metrics      metrics.Result `json:"metrics"`
	TrainSeconds float64        `json:"train_seconds"`
	Reused       bool           `json:"reused,omitempty"`
	Error        string         `json:"error,omitempty"`
}

// RowConfig is a comparison row given as a config file.
type RowConfig struct {
	Name string // the row's title and folder
	Path string // the file, for errors
	Cfg  config.Config
}

// compareSpec is a trained row to run.
type compareSpec struct {
	name, slug, loss string
	ensemble, epochs int
	cfg              *config.Config // a RowConfig's config; nil: the base config with loss, ensemble and epochs set
}

// Compare runs the same protocol (cfg: data, split, backbone, feature cache, head, optimizer) for
// every seed with each baseline loss, the Group Loss, and a Group Loss ensemble, each as a full
// Run (training, evaluation, ONNX export and its onnxruntime check, report) in
// <out>/<row>/seed-<seed>; the features are extracted once and then read from cfg.Cache. The raw
// feature rows are the baselines of the first trained row's runs. After every finished row,
// compare.md (a Markdown table of mean ± std) and compare.json are rewritten atomically. A run
// that fails is recorded in its row and the comparison goes on; the error then lists the failures.
// env.Log receives the runs' warnings and errors; env.Progress their progress bars.
func Compare(ctx context.Context, cfg config.Config, opt CompareOptions, env RunEnv) (*Comparison, error) {
	start := time.Now()
	if env.Log == nil {
		env.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opt.Lines == nil {
		opt.Lines = io.Discard
	}
	if len(opt.Seeds) == 0 {
		opt.Seeds = []int64{cfg.Seed}
	}
	if opt.Out == "" {
		opt.Out = filepath.Join("runs", "compare-"+time.Now().Format("20060102-150405"))
	}
	if opt.Losses == nil {
		opt.Losses = []string{"softmax", "triplet", "contrastive", "proxy_anchor", "group"}
	}
	if opt.Ensemble == 0 {
		opt.Ensemble = 3
	}
	if opt.Ensemble > 1 && cfg.Backbone.TrainsTail() {
		// Ensembles are heads on one frozen backbone; with a fine-tuned tail there is no such row.
		env.Log.Warn("compare: no ensemble row: ensembles train heads on frozen features, and this config fine-tunes the backbone (train_blocks 0 for heads only, e.g. configs/cub100-head.yaml)")
		opt.Ensemble = 1
	}
	var specs []compareSpec
	for _, l := range opt.Losses {
		specs = append(specs, compareSpec{name: lossTitle(l), slug: l, loss: l, ensemble: 1, epochs: cfg.Optimizer.Epochs})
	}
	for _, rc := range opt.Configs {
		if !sameProtocol(cfg, rc.Cfg) || cfg.Cache != rc.Cfg.Cache {
			return nil, fmt.Errorf("%w: compare: row %q (%s) changes the protocol of the base config (data, class split, cache, preprocessing or backbone features): rows may differ only in how they train",
				config.ErrInvalid, rc.Name, rc.Path)
		}
		c := rc.Cfg
		specs = append(specs, compareSpec{name: rc.Name, slug: rowSlug(rc.Name), loss: string(c.Loss.Name), ensemble: c.EnsembleSize(), epochs: c.Optimizer.Epochs, cfg: &c})
	}
	if opt.Ensemble > 1 {
		ep := cfg.Optimizer.Epochs
		if opt.EnsembleEpochs > 0 {
			ep = opt.EnsembleEpochs
		}
		specs = append(specs, compareSpec{name: fmt.Sprintf("Group Loss ensemble (%d heads)", opt.Ensemble),
			slug: fmt.Sprintf("group_ensemble%d", opt.Ensemble), loss: "group", ensemble: opt.Ensemble, epochs: ep})
	}
	if len(specs) == 0 {
		return nil, fmt.Errorf("%w: compare has no row to train", config.ErrInvalid)
	}
	for i, seed := range opt.Seeds {
		if slices.Contains(opt.Seeds[:i], seed) {
			return nil, fmt.Errorf("%w: compare: seed %d appears twice", config.ErrInvalid, seed)
		}
	}
	// Every run's config is checked before anything runs.
	for _, sp := range specs {
		for _, seed := range opt.Seeds {
			c := sp.config(cfg, seed, opt.Out)
			if err := c.Validate(); err != nil {
				return nil, fmt.Errorf("%s, seed %d: %w", sp.name, seed, err)
			}
		}
	}
	if err := os.MkdirAll(opt.Out, 0o755); err != nil {
		return nil, fmt.Errorf("pipeline: compare folder: %w", err)
	}
	if env.baselines == nil {
		env.baselines = &baselineCache{}
	}
	cmp := &Comparison{Seeds: opt.Seeds, Config: cfg}
	for _, rc := range opt.Configs {
		cmp.ConfigRows = append(cmp.ConfigRows, rc.Name+": "+rc.Path)
	}
	cmp.Config.Out = opt.Out
	var failed []string
	// The raw-feature rows are the baselines of the first successful run of each seed.
	raw := CompareRow{Name: "raw features"}
	rawTTA := CompareRow{Name: "raw features, flip-averaged"}
	var trained []CompareRow
	rows := func() []CompareRow {
		var out []CompareRow
		for _, rr := range []*CompareRow{&raw, &rawTTA} {
			if len(rr.Runs) > 0 {
				rr.aggregate()
				out = append(out, *rr)
			}
		}
		return append(out, trained...)
	}
	printedRaw := false
	for _, sp := range specs {
		row := CompareRow{Name: sp.name, Loss: sp.loss, Ensemble: sp.ensemble, Epochs: sp.epochs}
		for _, seed := range opt.Seeds {
			c := sp.config(cfg, seed, opt.Out)
			sum, reused, err := compareRun(ctx, c, opt.Force, env)
			if ctx.Err() != nil {
				cmp.Rows, cmp.TotalSeconds = rows(), time.Since(start).Seconds()
				writeComparison(opt.Out, cmp)
				return cmp, ctx.Err()
			}
			run := CompareRun{Seed: seed, Dir: c.Out, Reused: reused}
			if err != nil {
				run.Error = err.Error()
				row.Runs = append(row.Runs, run)
				failed = append(failed, fmt.Sprintf("%s seed %d: %v", sp.name, seed, err))
				env.Log.Error("compare: run failed", "row", sp.name, "seed", seed, "err", err)
				fmt.Fprintf(opt.Lines, "%-34s seed %-3d FAILED: %v\n", sp.name, seed, err)
				continue
			}
			run.Metrics, run.TrainSeconds = sum.Trained, sum.Timing.TrainSeconds
			row.Runs = append(row.Runs, run)
			fmt.Fprintf(opt.Lines, "%-34s seed %-3d %s%s\n", sp.name, seed, resultLine(run.Metrics, run.TrainSeconds, true), reusedNote(reused))
			if cmp.Machine.CPU == "" {
				cmp.Machine, cmp.Data = sum.Machine, sum.Data
			}
			if !hasSeed(raw.Runs, seed) {
				raw.Runs = append(raw.Runs, CompareRun{Seed: seed, Dir: c.Out, Metrics: sum.Baseline})
				if sum.BaselineTTA != nil {
					rawTTA.Runs = append(rawTTA.Runs, CompareRun{Seed: seed, Dir: c.Out, Metrics: *sum.BaselineTTA})
				}
			}
		}
		row.aggregate()
		trained = append(trained, row)
		cmp.Rows = rows()
		if !printedRaw && len(raw.Runs) > 0 {
			printedRaw = true
			for _, rr := range cmp.Rows[:len(cmp.Rows)-len(trained)] {
				fmt.Fprintf(opt.Lines, "%-34s %-8s %s\n", rr.Name, seedsNote(rr.Runs), resultLine(rr.Mean, 0, false))
			}
		}
		fmt.Fprintf(opt.Lines, "%-34s %-8s %s\n", row.Name, seedsNote(row.Runs), rowLine(row))
		cmp.TotalSeconds = time.Since(start).Seconds()
		if err := writeComparison(opt.Out, cmp); err != nil {
			return cmp, err
		}
	}
	if len(failed) > 0 {
		return cmp, fmt.Errorf("pipeline: compare: %d run(s) failed: %s", len(failed), strings.Join(failed, "; "))
	}
	return cmp, nil
}

// config is the run of spec sp for seed under the comparison folder out.
func (sp compareSpec) config(base config.Config, seed int64, out string) config.Config {
	c := base
	if sp.cfg != nil {
		c = *sp.cfg
		c.Seed = seed
	} else {
		c.Seed, c.Loss.Name, c.Ensemble, c.Optimizer.Epochs = seed, config.LossName(sp.loss), sp.ensemble, sp.epochs
	}
	c.Optimizer.LRSteps = append([]int(nil), c.Optimizer.LRSteps...)
	c.Out = filepath.Join(out, sp.slug, fmt.Sprintf("seed-%d", seed))
	c.Force = false
	return c
}

// sameProtocol says whether a and b evaluate on the same protocol: the same images and class
// split (data, class counts, what an undecodable image does), the same preprocessing and the same
// backbone features with the same mirrors, whatever the seed and however they train (loss,
// optimizer, fine-tuned blocks). Comparison rows must share it; tune's trials share it and more.
func sameProtocol(a, b config.Config) bool {
	ab, bb := a.Backbone, b.Backbone
	return samePath(a.Data, b.Data) && a.TrainClasses == b.TrainClasses && a.ValidationClasses == b.ValidationClasses &&
		a.OnBadImage == b.OnBadImage && reflect.DeepEqual(a.Preprocess, b.Preprocess) &&
		samePath(ab.Path, bb.Path) && ab.Feature == bb.Feature && ab.Dequantize == bb.Dequantize && ab.Flip == bb.Flip && ab.FlipTTA == bb.FlipTTA
}

// samePath reports whether two paths name the same file or folder: the same string, or the same
// file on disk (a config file's ../shared/data/cub100 and the default's $PIPELINE_SHARED_DIR one
// spell one folder two ways).
func samePath(a, b string) bool {
	if a == b {
		return true
	}
	fa, errA := os.Stat(a)
	fb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(fa, fb)
}

// rowSlug is a row title as a folder name: lower case, runs of other characters than letters and
// digits as one underscore.
func rowSlug(name string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(name) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		case b.Len() > 0 && !strings.HasSuffix(b.String(), "_"):
			b.WriteByte('_')
		}
	}
	return strings.TrimSuffix(b.String(), "_")
}

// compareRun runs c, or reuses the finished run of the same config in c.Out unless force.
func compareRun(ctx context.Context, c config.Config, force bool, env RunEnv) (*Summary, bool, error) {
	if !force {
		if sum := finishedRun(c); sum != nil {
			return sum, true, nil
		}
	}
	if entries, err := os.ReadDir(c.Out); err == nil && len(entries) > 0 {
		c.Force = true // an unfinished or different run: replaced only if this one succeeds
	}
	sum, err := Run(ctx, c, env)
	return sum, false, err
}

// finishedRun is the summary of the successful run of config c in c.Out, nil if there is none.
// The run's config.yaml counts as the config it loads to, written again (a hand-edited file that
// loads to the same config is the same run).
func finishedRun(c config.Config) *Summary {
	want, err := yaml.Marshal(c)
	if err != nil {
		return nil
	}
	path := filepath.Join(c.Out, "config.yaml")
	cfgRaw, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	ran, err := config.ParseConfig(cfgRaw, path)
	if err != nil {
		return nil
	}
	if got, err := yaml.Marshal(ran); err != nil || !bytes.Equal(got, want) {
		return nil
	}
	raw, err := os.ReadFile(filepath.Join(c.Out, "metrics.json"))
	if err != nil {
		return nil
	}
	var sum Summary
	if json.Unmarshal(raw, &sum) != nil || sum.Status != "ok" {
		return nil
	}
	return &sum
}

func hasSeed(runs []CompareRun, seed int64) bool {
	for _, r := range runs {
		if r.Seed == seed {
			return true
		}
	}
	return false
}

// aggregate fills Mean, Std and the training time from the successful runs.
func (row *CompareRow) aggregate() {
	var ok []CompareRun
	for _, r := range row.Runs {
		if r.Error == "" {
			ok = append(ok, r)
		}
	}
	get := func(f func(CompareRun) float64) (mean, std float64) {
		if len(ok) == 0 {
			return 0, 0
		}
		for _, r := range ok {
			mean += f(r)
		}
		mean /= float64(len(ok))
		if len(ok) > 1 {
			for _, r := range ok {
				std += (f(r) - mean) * (f(r) - mean)
			}
			std = math.Sqrt(std / float64(len(ok)-1))
		}
		return mean, std
	}
	fields := []struct {
		dst [2]*float64
		f   func(metrics.Result) float64
	}{
		{[2]*float64{&row.Mean.RecallAt1, &row.Std.RecallAt1}, func(m metrics.Result) float64 { return m.RecallAt1 }},
		{[2]*float64{&row.Mean.RecallAt2, &row.Std.RecallAt2}, func(m metrics.Result) float64 { return m.RecallAt2 }},
		{[2]*float64{&row.Mean.RecallAt4, &row.Std.RecallAt4}, func(m metrics.Result) float64 { return m.RecallAt4 }},
		{[2]*float64{&row.Mean.RecallAt8, &row.Std.RecallAt8}, func(m metrics.Result) float64 { return m.RecallAt8 }},
		{[2]*float64{&row.Mean.NMI, &row.Std.NMI}, func(m metrics.Result) float64 { return m.NMI }},
		{[2]*float64{&row.Mean.AMI, &row.Std.AMI}, func(m metrics.Result) float64 { return m.AMI }},
		{[2]*float64{&row.Mean.MAPAtR, &row.Std.MAPAtR}, func(m metrics.Result) float64 { return m.MAPAtR }},
		{[2]*float64{&row.Mean.RPrecision, &row.Std.RPrecision}, func(m metrics.Result) float64 { return m.RPrecision }},
	}
	for _, fl := range fields {
		*fl.dst[0], *fl.dst[1] = get(func(r CompareRun) float64 { return fl.f(r.Metrics) })
	}
	row.TrainSeconds, row.TrainSecondsStd = get(func(r CompareRun) float64 { return r.TrainSeconds })
}

func (row *CompareRow) succeeded() int {
	n := 0
	for _, r := range row.Runs {
		if r.Error == "" {
			n++
		}
	}
	return n
}

func lossTitle(loss string) string {
	switch loss {
	case "group":
		return "Group Loss"
	case "softmax":
		return "softmax (cross-entropy)"
	case "triplet":
		return "triplet (batch-hard)"
	case "contrastive":
		return "contrastive"
	case "proxy_anchor":
		return "Proxy-Anchor"
	case "multi_similarity":
		return "Multi-Similarity"
	}
	return loss
}

func resultLine(m metrics.Result, train float64, withTrain bool) string {
	s := fmt.Sprintf("R@1 %5.2f  R@2 %5.2f  R@4 %5.2f  R@8 %5.2f  NMI %5.2f  MAP@R %5.2f",
		100*m.RecallAt1, 100*m.RecallAt2, 100*m.RecallAt4, 100*m.RecallAt8, 100*m.NMI, 100*m.MAPAtR)
	if withTrain {
		s += fmt.Sprintf("  train %5.1f s", train)
	}
	return s
}

func rowLine(row CompareRow) string {
	if row.succeeded() == 0 {
		return "failed"
	}
	return fmt.Sprintf("R@1 %s  NMI %s  MAP@R %s  train %.1f s", pm(row.Mean.RecallAt1, row.Std.RecallAt1, row.succeeded()),
		pm(row.Mean.NMI, row.Std.NMI, row.succeeded()), pm(row.Mean.MAPAtR, row.Std.MAPAtR, row.succeeded()), row.TrainSeconds)
}

// pm formats a fraction as "mean ± std" in %, without the std for a single run.
func pm(mean, std float64, n int) string {
	if n < 2 {
		return fmt.Sprintf("%.1f", 100*mean)
	}
	return fmt.Sprintf("%.1f ± %.1f", 100*mean, 100*std)
}

func seedsNote(runs []CompareRun) string {
	ok := 0
	for _, r := range runs {
		if r.Error == "" {
			ok++
		}
	}
	if ok == len(runs) {
		return fmt.Sprintf("(%d)", ok)
	}
	return fmt.Sprintf("(%d/%d)", ok, len(runs))
}

func reusedNote(reused bool) string {
	if reused {
		return "  (reused)"
	}
	return ""
}

// Markdown renders the comparison as compare.md: what was compared, then one table row per method.
func (c *Comparison) Markdown() string {
	var b strings.Builder
	cfg := c.Config
	seeds := make([]string, len(c.Seeds))
	for i, s := range c.Seeds {
		seeds[i] = fmt.Sprint(s)
	}
	fmt.Fprintf(&b, "# Baselines and ensembles\n\n")
	fmt.Fprintf(&b, "Data %s: %d images, %d classes; trained on %d classes (%d held out for model selection), evaluated on %d classes (%d images). ",
		c.Data.Source, c.Data.Images, c.Data.Classes, c.Data.TrainClasses, c.Data.ValidationClasses, c.Data.EvalClasses, c.Data.EvalImages)
	frozen := "frozen"
	switch bc := cfg.Backbone; {
	case bc.TrainBlocks > 0:
		frozen = fmt.Sprintf("last %d block(s) fine-tuned at lr %g", bc.TrainBlocks, bc.LR)
	case bc.TrainableFrom != "":
		frozen = fmt.Sprintf("fine-tuned from %q at lr %g", bc.TrainableFrom, bc.LR)
	}
	fmt.Fprintf(&b, "Backbone %s (%s, %d-d `%s`), head %d-d, %s %d epochs at lr %g, batches %d x %d, flip averaging %v. ",
		filepath.Base(cfg.Backbone.Path), frozen, c.Data.FeatureDim, c.Data.FeatureTensor, cfg.Head.EmbeddingDim, cfg.Optimizer.Name,
		cfg.Optimizer.Epochs, cfg.Optimizer.LR, cfg.Sampler.ClassesPerBatch, cfg.Sampler.SamplesPerClass, cfg.Backbone.FlipTTA)
	fmt.Fprintf(&b, "Seeds %s; mean ± sample std over the seeds (the seed picks the validation classes, the batches and k-means' start). ",
		strings.Join(seeds, ", "))
	fmt.Fprintf(&b, "CPU: %s, %d cores.\n\n", c.Machine.CPU, c.Machine.Cores)
	fmt.Fprintf(&b, "| method | R@1 | R@2 | R@4 | R@8 | NMI | MAP@R | train (s) |\n|---|---|---|---|---|---|---|---|\n")
	for _, r := range c.Rows {
		n := r.succeeded()
		name := r.Name
		if r.Ensemble > 1 && r.Epochs != cfg.Optimizer.Epochs {
			name += fmt.Sprintf(", %d epochs", r.Epochs)
		}
		if n < len(r.Runs) {
			name += fmt.Sprintf(" (%d of %d runs failed)", len(r.Runs)-n, len(r.Runs))
		}
		if n == 0 {
			fmt.Fprintf(&b, "| %s | failed | | | | | | |\n", name)
			continue
		}
		train := "—"
		if r.Loss != "" {
			train = fmt.Sprintf("%.0f", r.TrainSeconds)
			if n > 1 {
				train += fmt.Sprintf(" ± %.0f", r.TrainSecondsStd)
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", name,
			pm(r.Mean.RecallAt1, r.Std.RecallAt1, n), pm(r.Mean.RecallAt2, r.Std.RecallAt2, n),
			pm(r.Mean.RecallAt4, r.Std.RecallAt4, n), pm(r.Mean.RecallAt8, r.Std.RecallAt8, n),
			pm(r.Mean.NMI, r.Std.NMI, n), pm(r.Mean.MAPAtR, r.Std.MAPAtR, n), train)
	}
	fmt.Fprintf(&b, "\nR@K, NMI and MAP@R in %%. Train time: head training including the per-epoch validation; an ensemble's is the sum over its heads. ")
	if len(c.ConfigRows) == 0 {
		fmt.Fprintf(&b, "Every trained row uses the same config apart from `loss.name` (baselines use the loss's default margins) and `ensemble`. ")
	} else {
		fmt.Fprintf(&b, "Rows given as config files run those files as they are, the seed and the folder aside (%s); the other trained rows use the config above apart from `loss.name` and `ensemble`. ",
			strings.Join(c.ConfigRows, ", "))
	}
	fmt.Fprintf(&b, "Run folders: `<row>/seed-<seed>/` beside this file (metrics.json, model.onnx, report.html).\n")
	return b.String()
}

// writeComparison writes compare.md and compare.json into dir, atomically.
func writeComparison(dir string, c *Comparison) error {
	if err := atomicfile.WriteBytes(filepath.Join(dir, "compare.md"), "comparison", []byte(c.Markdown())); err != nil {
		return fmt.Errorf("pipeline: compare: %w", err)
	}
	if err := writeJSON(filepath.Join(dir, "compare.json"), c); err != nil {
		return fmt.Errorf("pipeline: compare: %w", err)
	}
	return nil
}

// baselineCache holds the metrics of raw features evaluated by earlier runs of a comparison,
// keyed by a checksum of the features, the labels and the evaluation options: the runs of every
// row share the features, so only the first run of each seed clusters them (k-means on the
// 1280-d features is most of a run's time outside training). Safe for concurrent use.
type baselineCache struct {
	mu sync.Mutex
	m  map[uint64]metrics.Result
}

// evaluate is metrics.Evaluate, answered from the cache when the same features were evaluated
// with the same options before. A nil cache always evaluates.
func (c *baselineCache) evaluate(x []float32, n, d int, labels []int, o metrics.Options) (metrics.Result, error) {
	if c == nil {
		return metrics.Evaluate(x, n, d, labels, o)
	}
	h := fnv.New64a()
	var b [8]byte
	put := func(v uint64) {
		binary.LittleEndian.PutUint64(b[:], v)
		h.Write(b[:])
	}
	for _, v := range []int64{int64(n), int64(d), int64(o.KMeansRestarts), o.Seed, btoi(o.SkipClustering)} {
		put(uint64(v))
	}
	for _, v := range x {
		put(uint64(math.Float32bits(v)))
	}
	for _, l := range labels {
		put(uint64(l))
	}
	key := h.Sum64()
	c.mu.Lock()
	res, ok := c.m[key]
	c.mu.Unlock()
	if ok {
		return res, nil
	}
	res, err := metrics.Evaluate(x, n, d, labels, o)
	if err != nil {
		return res, err
	}
	c.mu.Lock()
	if c.m == nil {
		c.m = map[uint64]metrics.Result{}
	}
	c.m[key] = res
	c.mu.Unlock()
	return res, nil
}

func btoi(b bool) int64 {
	if b {
		return 1
	}
	return 0
}
