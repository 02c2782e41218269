package train

import (
	"math/rand"
	"strings"
	"testing"
)

func TestClassSamplerEpoch(t *testing.T) {
	// 8 classes of sizes 10..17
	var labels []int
	for c := 0; c < 8; c++ {
		for i := 0; i < 10+c; i++ {
			labels = append(labels, c)
		}
	}
	s, notes, err := NewClassSampler(labels, 3, 4, nil)
	if err != nil || len(notes) != 0 {
		t.Fatalf("err %v notes %v", err, notes)
	}
	rng := rand.New(rand.NewSource(1))
	batches := s.Epoch(rng)
	if len(batches) == 0 || len(batches) > s.BatchesPerEpoch() {
		t.Fatalf("%d batches, want 1..%d", len(batches), s.BatchesPerEpoch())
	}
	perClass := map[int]int{}
	for _, b := range batches {
		if len(b) != 12 {
			t.Fatalf("batch of %d, want 12", len(b))
		}
		seen := map[int]bool{}
		for k := 0; k < 3; k++ {
			c := labels[b[k*4]]
			if seen[c] {
				t.Fatalf("class %d twice in batch %v", c, b)
			}
			seen[c] = true
			within := map[int]bool{}
			for _, i := range b[k*4 : k*4+4] {
				if labels[i] != c {
					t.Fatalf("chunk mixes classes: %v", b)
				}
				if within[i] {
					t.Fatalf("sample %d twice in one chunk", i)
				}
				within[i] = true
			}
			perClass[c]++
		}
	}
	// Balanced: every class gets ceil(17/4)=5 chunks minus what the dropped tail removed.
	total := 0
	for c := 0; c < 8; c++ {
		if perClass[c] > 5 || perClass[c] < 3 {
			t.Fatalf("class %d has %d chunks, want about 5: %v", c, perClass[c], perClass)
		}
		total += perClass[c]
	}
	if total < 8*5-3 {
		t.Fatalf("%d chunks used of 40", total)
	}
	// Reproducible with the same seed.
	again := s.Epoch(rand.New(rand.NewSource(1)))
	if len(again) != len(batches) || again[0][0] != batches[0][0] || again[len(again)-1][11] != batches[len(batches)-1][11] {
		t.Fatal("same seed gave a different epoch")
	}
}

func TestClassSamplerShrinksAndRefuses(t *testing.T) {
	labels := []int{0, 0, 0, 1, 1, 1, 1, 1}
	s, notes, err := NewClassSampler(labels, 6, 9, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.ClassesPerBatch != 2 || s.SamplesPerClass != 3 || len(notes) != 2 {
		t.Fatalf("got %d x %d, notes %v", s.ClassesPerBatch, s.SamplesPerClass, notes)
	}
	if b := s.Epoch(rand.New(rand.NewSource(0))); len(b) == 0 || len(b[0]) != 6 {
		t.Fatalf("shrunk batches wrong: %v", b)
	}
	if _, _, err := NewClassSampler([]int{3, 3, 3}, 6, 9, nil); err == nil || !strings.Contains(err.Error(), "at least 2") {
		t.Fatalf("one class: %v", err)
	}
	_, _, err = NewClassSampler([]int{0, 0, 1}, 2, 2, func(int) string { return "Laysan_Albatross" })
	if err == nil || !strings.Contains(err.Error(), `"Laysan_Albatross"`) || !strings.Contains(err.Error(), "single image") {
		t.Fatalf("single-image class: %v", err)
	}
}
