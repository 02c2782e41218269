package main

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/grouploss/pipeline/pipeline/gallery"
)

// TestBenchMemorySmall runs `pipeline bench-memory` at n = 2000 with this test binary as the
// child `pipeline` (see TestResumeChildProcess) and checks the report's fields.
func TestBenchMemorySmall(t *testing.T) {
	old := benchMemExec
	t.Cleanup(func() { benchMemExec = old })
	benchMemExec = func(ctx context.Context, args []string) (*exec.Cmd, error) {
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestResumeChildProcess$", "-test.count=1")
		argv, _ := json.Marshal(args)
		cmd.Env = append(os.Environ(), "PIPELINE_TEST_CHILD_ARGS="+string(argv))
		return cmd, nil
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "mem.json")
	r := toolRun("bench-memory", "--n", "2000", "--dim", "64", "--classes", "40", "--queries", "7", "-k", "3",
		"--dir", filepath.Join(dir, "files"), "--out", out)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rep benchMemReport
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.N != 2000 || rep.Dim != 64 || rep.Classes != 40 || rep.Queries != 7 || rep.K != 3 || !rep.GoalMet ||
		rep.GoalBytes != 2<<30 || rep.Machine.Cores < 1 || rep.Machine.CPU == "" {
		t.Errorf("report header: %+v", rep)
	}
	if want := int64(128 + 4*2000*64); rep.EmbeddingsBytes != want || rep.IndexBytes <= 64+4*2000*64+16 {
		t.Errorf("embeddings %d bytes (want %d), index %d bytes", rep.EmbeddingsBytes, want, rep.IndexBytes)
	}
	names := []string{"index", "search", "eval"}
	if len(rep.Commands) != 3 {
		t.Fatalf("%d commands, want 3: %+v", len(rep.Commands), rep.Commands)
	}
	for i, c := range rep.Commands {
		// A quick child may have no tick of user time: user + system.
		if c.Name != names[i] || c.Args[0] != names[i] || c.Seconds <= 0 || c.Seconds > 600 || c.UserSeconds+c.SysSeconds <= 0 ||
			c.MaxRSSBytes < 4<<20 || c.MaxRSSBytes >= 2<<30 || !c.UnderGoal ||
			math.Abs(c.MaxRSSMiB-float64(c.MaxRSSBytes)/(1<<20)) > 0.05+1e-9 { // rounded to 0.1 MiB
			t.Errorf("command %d: %+v", i, c)
		}
	}
	// Eval against its time goal, with its k-means plan: 2000 x 40 x 64 is small, so sklearn's
	// 10 restarts x 300 iterations.
	e := rep.Eval
	if e == nil || e.Seconds != rep.Commands[2].Seconds || e.GoalSeconds != 180 || e.GoalMet != (e.Seconds <= 180) ||
		math.Abs(e.CPUSecondsPerCore-(rep.Commands[2].UserSeconds+rep.Commands[2].SysSeconds)/float64(rep.Machine.Cores)) > 1e-9 {
		t.Errorf("eval: %+v", e)
	} else if km := e.KMeans; km == nil || km.Clusters != 40 || km.Restarts != 10 || km.MaxIter != 300 || len(km.Iterations) != 10 ||
		km.Reason != "10 restarts (the default), at most 300 Lloyd iterations each" || rep.Commands[2].Args[len(rep.Commands[2].Args)-1] != "--json" {
		t.Errorf("eval's k-means: %+v", km)
	}
	// The matrix products: eval's two stages and search, each rated against its reference.
	p := rep.Products
	if p == nil || p.Kernel == "" || len(p.Reference) != 2 || len(p.Stages) != 3 || p.SearchSeconds <= 0 {
		t.Fatalf("products: %+v", p)
	}
	wantGFLOP := []float64{2 * 2000 * 2000 * 64 / 1e9, 0, 2 * 7 * 2000 * 64 / 1e9} // k-means: at least its seeding
	for i, name := range []string{"eval neighbors", "eval kmeans", "search"} {
		s := p.Stages[i]
		if s.Name != name || s.Seconds <= 0 || s.GFLOP < wantGFLOP[i] || (i != 1 && math.Abs(s.GFLOP-wantGFLOP[i]) > 1e-9) ||
			s.Ratio <= 0 || math.Abs(s.GFLOPS-s.GFLOP/s.Seconds) > 1e-9*s.GFLOPS {
			t.Errorf("stage %d: %+v, want %s with %.4f GFLOP", i, s, name, wantGFLOP[i])
		}
	}
	if p.Peak.GFLOPS > 0 && math.Abs(p.Stages[0].PeakFraction-p.Stages[0].GFLOPS/p.Peak.GFLOPS) > 1e-12 {
		t.Errorf("peak fraction %v, want %v / %v", p.Stages[0].PeakFraction, p.Stages[0].GFLOPS, p.Peak.GFLOPS)
	}
	// The files were kept in --dir, and they are what the children read.
	x, err := gallery.Open(filepath.Join(dir, "files", "gallery.idx"))
	if err != nil || x.Len() != 2000 || x.Labels[41] != "1" || !strings.HasSuffix(x.Paths[41], "/img0000041.jpg") {
		t.Errorf("gallery index: %v", err)
	}
	if r := toolRun("bench-memory", "--n", "10", "--classes", "20"); r.code != 2 {
		t.Errorf("--classes > --n: exit %d, want 2", r.code)
	}
}
