package metrics

import (
	"math/rand/v2"
	"reflect"
	"testing"
)

// TestProgress: Options.Progress sees each stage start at 0 and end at its total (queries for
// the neighbours, restarts for k-means) with done growing, from several workers one call at a
// time, and the results are bit-identical to a run without it.
func TestProgress(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const n, d = 300, 16
	x, labels := clustered(rng, n, d, 6, 0.5)
	for _, o := range []Options{{BlockSize: 37, Workers: 3, KMeansRestarts: 4, Seed: 2}, {KMeansRestarts: 3, SkipClustering: true}} {
		want, err := Evaluate64(x, n, d, labels, o)
		if err != nil {
			t.Fatal(err)
		}
		type call struct {
			stage       Stage
			done, total int
		}
		var calls []call
		busy := false
		o.Progress = func(s Stage, done, total int) {
			if busy {
				t.Error("concurrent Progress calls")
			}
			busy = true
			calls = append(calls, call{s, done, total})
			busy = false
		}
		got, err := Evaluate64(x, n, d, labels, o)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%+v: with Progress %+v, without %+v", o, got, want)
		}
		stages := []call{{StageNeighbors, 0, n}, {StageKMeans, 0, o.KMeansRestarts}}
		if o.SkipClustering {
			stages = stages[:1]
		}
		var seen []call
		for i, c := range calls {
			if c.done == 0 {
				seen = append(seen, c)
				continue
			}
			p := calls[i-1]
			if c.stage != p.stage || c.total != p.total || c.done <= p.done || c.done > c.total {
				t.Errorf("call %d %+v after %+v", i, c, p)
			}
			if i+1 == len(calls) || calls[i+1].done == 0 {
				if c.done != c.total {
					t.Errorf("stage %s ends at %d of %d", c.stage, c.done, c.total)
				}
			}
		}
		if !reflect.DeepEqual(seen, stages) {
			t.Errorf("stages %+v, want %+v", seen, stages)
		}
		if o.BlockSize == 37 && len(calls) < 1+(n+36)/37 {
			t.Errorf("%d calls: want one per block of 37 queries", len(calls))
		}
	}
	// Neighbors reports its search too.
	var last [2]int
	x32 := make([]float32, len(x))
	for i, v := range x {
		x32[i] = float32(v)
	}
	if _, err := Neighbors(x32, n, d, 3, Options{Progress: func(s Stage, done, total int) { last = [2]int{done, total} }}); err != nil || last != [2]int{n, n} {
		t.Errorf("Neighbors progress ended at %v (%v)", last, err)
	}
}
