package main

import (
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/grouploss/pipeline/internal/matmul"
	"github.com/grouploss/pipeline/pipeline/gallery"
	"github.com/grouploss/pipeline/pipeline/npy"
)

// searchGoalSeconds is bench-memory's goal for searching its queries in the gallery once the
// index is loaded.
const searchGoalSeconds = 0.5

// benchMemProducts rates the float32 matrix products behind eval and search: each stage's time
// against a bare product of the same work measured in the same run, and its rate against the
// machine's peak.
type benchMemProducts struct {
	Kernel string      `json:"kernel"` // internal/matmul's kernel
	Peak   matmul.Peak `json:"peak"`
	// Reference is the bare product on all cores: the gallery against a block of its own rows
	// (eval's neighbour stage) or against the queries (search), median of a few runs.
	Reference []benchProduct `json:"reference"`
	Stages    []benchProduct `json:"stages"` // eval's neighbours and k-means, search after loading
	// SearchSeconds is the search of the queries in the loaded index (median of 5), SearchGoalMet
	// whether it is within SearchGoalSeconds.
	SearchSeconds     float64 `json:"search_seconds"`
	SearchGoalSeconds float64 `json:"search_goal_seconds"`
	SearchGoalMet     bool    `json:"search_goal_met"`
}

// benchProduct is one rated stage.
type benchProduct struct {
	Name         string  `json:"name"`
	Seconds      float64 `json:"seconds"`
	CPUSeconds   float64 `json:"cpu_seconds,omitempty"` // eval's stages: the child's CPU time in the stage
	GFLOP        float64 `json:"gflop"`                 // matrix-product work
	GFLOPS       float64 `json:"gflops"`                // GFLOP / seconds
	PeakFraction float64 `json:"peak_fraction"`         // GFLOPS / peak
	// Ratio is Seconds over the time the reference product takes for the same GFLOP (1: the
	// stage runs at the bare product's speed; above: selection, screening and the rest cost).
	Ratio float64 `json:"ratio,omitempty"`
}

// rateProducts measures the reference products and search in this process and rates them and
// the stages of eval's report ev.
func rateProducts(ev evalReport, index, queries string, k int, logw io.Writer) (*benchMemProducts, error) {
	idx, err := gallery.Open(index)
	if err != nil {
		return nil, err
	}
	q, nq, d, err := npy.Read(queries)
	if err != nil {
		return nil, err
	}
	n := idx.Len()
	p := &benchMemProducts{Kernel: matmul.Kernel(), SearchGoalSeconds: searchGoalSeconds}
	p.Peak, _ = matmul.MachinePeak()
	rate := func(name string, seconds, gflop float64, ref *benchProduct) benchProduct {
		b := benchProduct{Name: name, Seconds: seconds, GFLOP: gflop, GFLOPS: gflop / seconds}
		if p.Peak.GFLOPS > 0 {
			b.PeakFraction = b.GFLOPS / p.Peak.GFLOPS
		}
		if ref != nil {
			b.Ratio = seconds / (gflop / ref.GFLOPS)
		}
		return b
	}

	// Eval's neighbour stage multiplies blocks of rows by the whole gallery.
	m := min(512, n)
	c := make([]float32, m*n)
	refEval := rate("reference: gallery block x gallery", medianSeconds(3, func() {
		matmul.ParallelABt(c, n, idx.Embeddings, m, idx.Embeddings, n, d, 0)
	}), matmul.Flops(m, n, d)/1e9, nil)
	refSearch := rate("reference: queries x gallery", medianSeconds(5, func() {
		matmul.ParallelABt(c, n, q, nq, idx.Embeddings, n, d, 0)
	}), matmul.Flops(nq, n, d)/1e9, nil)
	p.Reference = []benchProduct{refEval, refSearch}
	for _, s := range ev.Stages {
		b := rate("eval "+string(s.Stage), s.Seconds, s.ProductGFLOP, &refEval)
		b.CPUSeconds = s.CPUSeconds
		p.Stages = append(p.Stages, b)
	}
	p.SearchSeconds = medianSeconds(5, func() { _, err = idx.Search(q, nq, k) })
	if err != nil {
		return nil, err
	}
	p.SearchGoalMet = p.SearchSeconds <= searchGoalSeconds
	p.Stages = append(p.Stages, rate("search", p.SearchSeconds, matmul.Flops(nq, n, d)/1e9, &refSearch))
	fmt.Fprintf(logw, "bench-memory: matrix products on %s, peak %.1f GFLOP/s (%s)\n", p.Kernel, p.Peak.GFLOPS, p.Peak.How)
	for _, b := range append(slices.Clone(p.Reference), p.Stages...) {
		fmt.Fprintf(logw, "bench-memory:   %-36s %8.3f s %9.1f GFLOP %6.1f GFLOP/s (%.0f%% of peak)", b.Name, b.Seconds, b.GFLOP, b.GFLOPS, 100*b.PeakFraction)
		if b.Ratio > 0 {
			fmt.Fprintf(logw, "  ratio %.2f to the reference", b.Ratio)
		}
		if b.CPUSeconds > 0 {
			fmt.Fprintf(logw, "  (%.1f CPU s)", b.CPUSeconds)
		}
		fmt.Fprintln(logw)
	}
	return p, nil
}

// medianSeconds runs f `runs` times and returns the median wall time.
func medianSeconds(runs int, f func()) float64 {
	t := make([]float64, runs)
	for i := range t {
		start := time.Now()
		f()
		t[i] = time.Since(start).Seconds()
	}
	slices.Sort(t)
	return t[runs/2]
}
