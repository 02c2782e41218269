package train

import (
	"fmt"
	"math/rand"
	"sort"
)

// Sampler yields the mini-batches of one epoch as lists of indices into the training set.
type Sampler interface {
	// Epoch returns the batches of one epoch. Each batch is a list of indices into the labels the
	// sampler was built with, grouped by class (all samples of a class are contiguous).
	Epoch(rng *rand.Rand) [][]int
}

// ClassSampler is the classes x samples-per-class sampler of the Group Loss reference code.
//
// An epoch is defined as in the reference: every class is shuffled and padded by cycling through
// its (re-shuffled) samples up to the size of the largest class, cut into chunks of
// SamplesPerClass, the chunks of all classes are shuffled, and consecutive groups of
// ClassesPerBatch chunks form the batches (a trailing partial group is dropped). Every class thus
// contributes the same number of chunks per epoch, whatever its size. Unlike the reference, a
// batch never holds two chunks of the same class: a chunk whose class is already in the batch is
// deferred to the next one.
type ClassSampler struct {
	ClassesPerBatch int
	SamplesPerClass int
	byClass         [][]int
	classes         []int
	maxSize         int
}

// NewClassSampler builds the sampler over labels (one per training sample). When there are fewer
// classes than classesPerBatch, or the smallest class holds fewer samples than samplesPerClass,
// the batch shrinks and the returned notes say so. Fewer than 2 classes, or a class with a single
// sample, is an error.
func NewClassSampler(labels []int, classesPerBatch, samplesPerClass int, className func(int) string) (*ClassSampler, []string, error) {
	if classesPerBatch < 2 || samplesPerClass < 2 {
		return nil, nil, fmt.Errorf("train: a batch needs at least 2 classes x 2 samples, got %d x %d", classesPerBatch, samplesPerClass)
	}
	idx := map[int][]int{}
	for i, l := range labels {
		idx[l] = append(idx[l], i)
	}
	if len(idx) < 2 {
		return nil, nil, fmt.Errorf("train: %d training class(es); the Group Loss needs at least 2", len(idx))
	}
	s := &ClassSampler{ClassesPerBatch: classesPerBatch, SamplesPerClass: samplesPerClass}
	for c := range idx {
		s.classes = append(s.classes, c)
	}
	sort.Ints(s.classes)
	minSize := len(labels)
	for _, c := range s.classes {
		n := len(idx[c])
		if n < 2 {
			name := fmt.Sprint(c)
			if className != nil {
				name = fmt.Sprintf("%q (label %d)", className(c), c)
			}
			return nil, nil, fmt.Errorf("train: training class %s has a single image; metric learning needs at least 2 per class (add images or drop the class)", name)
		}
		s.byClass = append(s.byClass, idx[c])
		minSize = min(minSize, n)
		s.maxSize = max(s.maxSize, n)
	}
	var notes []string
	if len(s.classes) < classesPerBatch {
		notes = append(notes, fmt.Sprintf("only %d training classes: batches hold %d classes instead of %d", len(s.classes), len(s.classes), classesPerBatch))
		s.ClassesPerBatch = len(s.classes)
	}
	if minSize < samplesPerClass {
		notes = append(notes, fmt.Sprintf("the smallest training class has %d images: batches hold %d samples per class instead of %d", minSize, minSize, samplesPerClass))
		s.SamplesPerClass = minSize
	}
	return s, notes, nil
}

// BatchSize is ClassesPerBatch * SamplesPerClass.
func (s *ClassSampler) BatchSize() int { return s.ClassesPerBatch * s.SamplesPerClass }

// BatchesPerEpoch is the number of batches Epoch returns.
func (s *ClassSampler) BatchesPerEpoch() int {
	per := (s.maxSize + s.SamplesPerClass - 1) / s.SamplesPerClass
	return per * len(s.classes) / s.ClassesPerBatch
}

// Epoch implements Sampler.
func (s *ClassSampler) Epoch(rng *rand.Rand) [][]int {
	spc := s.SamplesPerClass
	per := (s.maxSize + spc - 1) / spc
	type chunk struct {
		class int
		idx   []int
	}
	var chunks []chunk
	for ci, members := range s.byClass {
		need := per * spc
		seq := make([]int, 0, need+len(members))
		for len(seq) < need {
			perm := rng.Perm(len(members))
			for _, p := range perm {
				seq = append(seq, members[p])
			}
		}
		for k := 0; k < per; k++ {
			chunks = append(chunks, chunk{ci, seq[k*spc : (k+1)*spc]})
		}
	}
	rng.Shuffle(len(chunks), func(i, j int) { chunks[i], chunks[j] = chunks[j], chunks[i] })
	var batches [][]int
	var pending []chunk
	cur := make([]chunk, 0, s.ClassesPerBatch)
	in := map[int]bool{}
	flush := func() {
		b := make([]int, 0, s.BatchSize())
		for _, c := range cur {
			b = append(b, c.idx...)
		}
		batches = append(batches, b)
		cur = cur[:0]
		clear(in)
	}
	for _, c := range chunks {
		// deferred chunks go first when they fit
		for i := 0; i < len(pending) && len(cur) < s.ClassesPerBatch; {
			if !in[pending[i].class] {
				in[pending[i].class] = true
				cur = append(cur, pending[i])
				pending = append(pending[:i], pending[i+1:]...)
				continue
			}
			i++
		}
		if len(cur) == s.ClassesPerBatch {
			flush()
		}
		if in[c.class] {
			pending = append(pending, c)
			continue
		}
		in[c.class] = true
		cur = append(cur, c)
		if len(cur) == s.ClassesPerBatch {
			flush()
		}
	}
	return batches
}
