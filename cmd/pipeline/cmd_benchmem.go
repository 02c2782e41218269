package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/grouploss/pipeline/internal/rowops"
	"github.com/grouploss/pipeline/pipeline"
	"github.com/grouploss/pipeline/pipeline/metrics"
	"github.com/grouploss/pipeline/pipeline/npy"
)

// benchMemGoalBytes is the goal of `pipeline bench-memory`: every command's peak resident memory
// stays under 2 GiB.
const benchMemGoalBytes = 2 << 30

// evalGoalSeconds is bench-memory's goal for eval (all of R@K, MAP@R and NMI) at 100k x 512 on
// 2 idle cores.
const evalGoalSeconds = 180

// benchMemOptions are the flags of `pipeline bench-memory`.
type benchMemOptions struct {
	n, dim, classes, queries, k int
	kmeansRestarts              int
	seed                        uint64
	dir                         string
	out                         string
}

func (o *benchMemOptions) addFlags(fs *flag.FlagSet) {
	fs.IntVar(&o.n, "n", 100000, "gallery size: random unit embeddings")
	fs.IntVar(&o.dim, "dim", 512, "embedding dimension")
	fs.IntVar(&o.classes, "classes", 1000, "labels (row i has label i mod classes)")
	fs.IntVar(&o.queries, "queries", 100, "query embeddings given to search")
	fs.IntVar(&o.k, "k", 5, "neighbours per query")
	fs.IntVar(&o.kmeansRestarts, "kmeans-restarts", 0, "passed to eval (0: eval's default)")
	fs.Uint64Var(&o.seed, "seed", 1, "random seed of the embeddings")
	fs.StringVar(&o.dir, "dir", "", "write the generated files into `DIR` and keep them (default: a temporary folder, removed)")
	fs.StringVar(&o.out, "out", "", "write the JSON report to `FILE` (atomically) instead of stdout")
}

// benchMemReport is the outcome of `pipeline bench-memory`.
type benchMemReport struct {
	N               int               `json:"n"`
	Dim             int               `json:"dim"`
	Classes         int               `json:"classes"`
	Queries         int               `json:"queries"`
	K               int               `json:"k"`
	EmbeddingsBytes int64             `json:"embeddings_bytes"` // the .npy file
	IndexBytes      int64             `json:"index_bytes"`
	Goal            string            `json:"goal"`
	GoalBytes       int64             `json:"goal_bytes"`
	GoalMet         bool              `json:"goal_met"`
	Commands        []benchMemCommand `json:"commands"`
	// Eval is eval's time against its goal (wall, and CPU per core: what the wall time would be
	// alone on the machine), and its k-means plan.
	Eval        *benchMemEval     `json:"eval,omitempty"`
	Products    *benchMemProducts `json:"products,omitempty"`
	Machine     pipeline.Machine  `json:"machine"`
	LoadAverage []float64         `json:"load_average,omitempty"` // 1, 5, 15 minutes, before the run
	Version     string            `json:"version"`
}

// benchMemEval is eval's time against evalGoalSeconds, with the k-means work behind its NMI.
type benchMemEval struct {
	Seconds            float64 `json:"seconds"`
	CPUSecondsPerCore  float64 `json:"cpu_seconds_per_core"` // user + sys over the cores
	GoalSeconds        float64 `json:"goal_seconds"`
	GoalMet            bool    `json:"goal_met"`              // Seconds within the goal
	GoalMetCPUEstimate bool    `json:"goal_met_cpu_estimate"` // CPUSecondsPerCore within the goal
	// KMeans is eval's k-means plan and what it did (metrics.PlanKMeans).
	KMeans *metrics.KMeansReport `json:"kmeans,omitempty"`
}

// benchMemCommand is one measured child process.
type benchMemCommand struct {
	Name        string   `json:"name"`
	Args        []string `json:"args"`
	Seconds     float64  `json:"seconds"`      // wall time
	UserSeconds float64  `json:"user_seconds"` // CPU time, all threads
	SysSeconds  float64  `json:"sys_seconds"`
	MaxRSSBytes int64    `json:"max_rss_bytes"` // peak resident set size (getrusage ru_maxrss)
	MaxRSSMiB   float64  `json:"max_rss_mib"`
	UnderGoal   bool     `json:"under_goal"`
	stdout      []byte
}

// benchMemExec returns the child process that runs `pipeline args...`: this executable again.
// Tests replace it (the test binary is not the pipeline command).
var benchMemExec = func(ctx context.Context, args []string) (*exec.Cmd, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("bench-memory: %w", err)
	}
	return exec.CommandContext(ctx, exe, args...), nil
}

func cmdBenchMemory(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o benchMemOptions
	fs := newFlagSet("pipeline bench-memory", stderr, "usage: pipeline bench-memory [--n 100000] [--dim 512] [--classes 1000] [--out FILE.json] [flags]\n\n"+
		"Writes N random unit embeddings (.npy) and a labels CSV, then runs `pipeline index --embeddings`,\n"+
		"`pipeline search --query-npy` and `pipeline eval --embeddings` as child processes and reports\n"+
		"each one's wall time and peak resident memory as JSON. The goal is under 2 GiB per command;\n"+
		"missing it is exit code 1. At the default size eval dominates (all-pairs neighbours and k-means).\n\n")
	o.addFlags(fs)
	if help, err := parseFlags(fs, args, ""); help || err != nil {
		return err
	}
	rep, err := runBenchMemory(ctx, o, stderr)
	if err != nil {
		return err
	}
	if err := writeJSONReport("bench-memory", o.out, rep, stdout, stderr); err != nil {
		return err
	}
	if !rep.GoalMet {
		var over []string
		for _, c := range rep.Commands {
			if !c.UnderGoal {
				over = append(over, fmt.Sprintf("%s %.0f MiB", c.Name, c.MaxRSSMiB))
			}
		}
		return fmt.Errorf("bench-memory: goal missed, peak resident memory over 2 GiB: %s", strings.Join(over, ", "))
	}
	return nil
}

// runBenchMemory is `pipeline bench-memory`: the files, then the three commands, measured.
func runBenchMemory(ctx context.Context, o benchMemOptions, logw io.Writer) (*benchMemReport, error) {
	switch {
	case o.n < 2 || o.dim < 1 || o.queries < 1 || o.k < 1:
		return nil, fmt.Errorf("%w: --n >= 2, --dim >= 1, --queries >= 1 and -k >= 1 are required", errUsage)
	case o.classes < 1 || o.classes > o.n:
		return nil, fmt.Errorf("%w: --classes %d, want 1..n (%d)", errUsage, o.classes, o.n)
	case o.kmeansRestarts < 0:
		return nil, fmt.Errorf("%w: --kmeans-restarts %d, want >= 0", errUsage, o.kmeansRestarts)
	}
	rep := &benchMemReport{N: o.n, Dim: o.dim, Classes: o.classes, Queries: o.queries, K: o.k,
		Goal: "max_rss_bytes < 2 GiB per command", GoalBytes: benchMemGoalBytes, LoadAverage: loadAverage(),
		Version: pipeline.Version}
	rep.Machine = pipeline.ThisMachine()

	dir := o.dir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "pipeline-bench-memory-")
		if err != nil {
			return nil, fmt.Errorf("bench-memory: %w", err)
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("bench-memory: %w", err)
	}
	emb, labels, queries := filepath.Join(dir, "gallery.npy"), filepath.Join(dir, "gallery.csv"), filepath.Join(dir, "queries.npy")
	index := filepath.Join(dir, "gallery.idx")
	fmt.Fprintf(logw, "bench-memory: writing %d random unit %d-d embeddings and %d labels to %s\n", o.n, o.dim, o.classes, dir)
	rng := rand.New(rand.NewPCG(o.seed, 0x6d656d))
	if err := npy.Write(emb, randomUnitRows(rng, o.n, o.dim), o.n, o.dim); err != nil {
		return nil, err
	}
	if err := npy.Write(queries, randomUnitRows(rng, o.queries, o.dim), o.queries, o.dim); err != nil {
		return nil, err
	}
	if err := writeBenchLabels(labels, o.n, o.classes); err != nil {
		return nil, err
	}
	if fi, err := os.Stat(emb); err == nil {
		rep.EmbeddingsBytes = fi.Size()
	}

	evalArgs := []string{"eval", "--embeddings", emb, "--labels", labels, "--json"}
	if o.kmeansRestarts > 0 {
		evalArgs = append(evalArgs, "--kmeans-restarts", strconv.Itoa(o.kmeansRestarts))
	}
	rep.GoalMet = true
	for _, c := range []struct {
		name string
		args []string
	}{
		{"index", []string{"index", "--embeddings", emb, "--labels", labels, "--out", index}},
		{"search", []string{"search", "--index", index, "--query-npy", queries, "-k", strconv.Itoa(o.k), "--json"}},
		{"eval", evalArgs},
	} {
		m, err := measureChild(ctx, c.name, c.args)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(logw, "bench-memory: %-6s %8.1f s  peak RSS %7.1f MiB\n", c.name, m.Seconds, m.MaxRSSMiB)
		rep.Commands = append(rep.Commands, m)
		rep.GoalMet = rep.GoalMet && m.UnderGoal
		if c.name == "index" {
			if fi, err := os.Stat(index); err == nil {
				rep.IndexBytes = fi.Size()
			}
		}
	}
	var ev evalReport
	if err := json.Unmarshal(rep.Commands[2].stdout, &ev); err != nil {
		return nil, fmt.Errorf("bench-memory: eval's report: %w", err)
	}
	e := rep.Commands[2]
	rep.Eval = &benchMemEval{Seconds: e.Seconds, CPUSecondsPerCore: (e.UserSeconds + e.SysSeconds) / float64(rep.Machine.Cores),
		GoalSeconds: evalGoalSeconds, KMeans: ev.KMeans}
	rep.Eval.GoalMet = rep.Eval.Seconds <= evalGoalSeconds
	rep.Eval.GoalMetCPUEstimate = rep.Eval.CPUSecondsPerCore <= evalGoalSeconds
	fmt.Fprintf(logw, "bench-memory: eval %.1f s wall, %.1f CPU s per core (goal %d s on idle cores)\n", rep.Eval.Seconds, rep.Eval.CPUSecondsPerCore, evalGoalSeconds)
	if km := ev.KMeans; km != nil {
		fmt.Fprintf(logw, "bench-memory: eval's k-means: %s; iterations %v, %d capped\n", km.Reason, km.Iterations, km.Capped)
	}
	var err error
	if rep.Products, err = rateProducts(ev, index, queries, o.k, logw); err != nil {
		return nil, err
	}
	return rep, nil
}

// measureChild runs `pipeline args...` as a child process and returns its wall time, CPU time
// and peak resident memory. A failing child is an error quoting the end of its stderr.
func measureChild(ctx context.Context, name string, args []string) (benchMemCommand, error) {
	cmd, err := benchMemExec(ctx, args)
	if err != nil {
		return benchMemCommand{}, err
	}
	var stdout bytes.Buffer
	var stderr tailBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err = cmd.Run()
	wall := time.Since(start)
	if err != nil {
		if ctx.Err() != nil {
			return benchMemCommand{}, ctx.Err()
		}
		return benchMemCommand{}, fmt.Errorf("bench-memory: pipeline %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	m := benchMemCommand{Name: name, Args: args, Seconds: wall.Seconds(), stdout: stdout.Bytes(),
		UserSeconds: cmd.ProcessState.UserTime().Seconds(), SysSeconds: cmd.ProcessState.SystemTime().Seconds()}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok || ru.Maxrss <= 0 {
		return m, fmt.Errorf("bench-memory: pipeline %s: no peak resident memory from getrusage on %s", name, runtime.GOOS)
	}
	m.MaxRSSBytes = maxRSSBytes(ru.Maxrss)
	m.MaxRSSMiB = math.Round(float64(m.MaxRSSBytes)/(1<<20)*10) / 10
	m.UnderGoal = m.MaxRSSBytes < benchMemGoalBytes
	return m, nil
}

// maxRSSBytes converts ru_maxrss to bytes: Linux reports KiB, macOS bytes.
func maxRSSBytes(maxrss int64) int64 {
	if runtime.GOOS == "darwin" {
		return maxrss
	}
	return maxrss * 1024
}

// randomUnitRows returns n rows of dimension d drawn uniformly on the unit sphere (normalized
// Gaussians), row-major float32.
func randomUnitRows(rng *rand.Rand, n, d int) []float32 {
	x := make([]float64, n*d)
	for i := range x {
		x[i] = rng.NormFloat64()
	}
	rowops.L2Normalize(x, d)
	out := make([]float32, n*d)
	for i, v := range x {
		out[i] = float32(v)
	}
	return out
}

// writeBenchLabels writes a labels CSV path,label: n made-up image paths, row i with label i mod
// classes.
func writeBenchLabels(path string, n, classes int) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("bench-memory: %w", err)
	}
	w := bufio.NewWriter(f)
	fmt.Fprintln(w, "path,label")
	for i := range n {
		fmt.Fprintf(w, "img%07d.jpg,%d\n", i, i%classes)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("bench-memory: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("bench-memory: %w", err)
	}
	return nil
}

// tailBuffer keeps the last 8 KiB written to it.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 8<<10 {
		t.b = append(t.b[:0], t.b[len(t.b)-8<<10:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.b) }
