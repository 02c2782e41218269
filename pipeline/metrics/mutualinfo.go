package metrics

import (
	"fmt"
	"math"
)

// contingency is the sparse contingency table of two labelings with dense marginals.
type contingency struct {
	n    int
	a, b []int          // row (labels) and column (clusters) sums, all > 0
	nz   map[[2]int]int // nonzero cells
	keys [][2]int       // nonzero cells in first-appearance order (deterministic summation)
}

func newContingency(labels, clusters []int) contingency {
	if len(labels) != len(clusters) {
		panic(fmt.Sprintf("metrics: %d labels but %d cluster assignments", len(labels), len(clusters)))
	}
	lu, nl := denseLabels(labels)
	cu, nc := denseLabels(clusters)
	t := contingency{n: len(labels), a: make([]int, nl), b: make([]int, nc), nz: make(map[[2]int]int)}
	for i := range lu {
		t.a[lu[i]]++
		t.b[cu[i]]++
		key := [2]int{lu[i], cu[i]}
		if t.nz[key] == 0 {
			t.keys = append(t.keys, key)
		}
		t.nz[key]++
	}
	return t
}

// mutualInfo is sklearn's mutual_info_score (nats) from a contingency table.
func (t contingency) mutualInfo() float64 {
	if len(t.a) == 1 || len(t.b) == 1 {
		return 0
	}
	total := float64(t.n)
	logTotal := math.Log(total)
	mi := 0.0
	for _, key := range t.keys {
		v := float64(t.nz[key])
		pnm := v / total
		logOuter := -math.Log(float64(t.a[key[0]])*float64(t.b[key[1]])) + logTotal + logTotal
		term := pnm*(math.Log(v)-logTotal) + pnm*logOuter
		if math.Abs(term) < 0x1p-52 {
			term = 0
		}
		mi += term
	}
	return max(mi, 0)
}

// entropyOf is the entropy (nats) of a labeling given its class sizes; 0 for a single class.
func entropyOf(sizes []int) float64 {
	if len(sizes) <= 1 {
		return 0
	}
	total := 0.0
	for _, s := range sizes {
		total += float64(s)
	}
	logTotal := math.Log(total)
	h := 0.0
	for _, s := range sizes {
		h -= float64(s) / total * (math.Log(float64(s)) - logTotal)
	}
	return h
}

// NMI is sklearn's normalized_mutual_info_score(labels, clusters) with arithmetic normalization:
// MI / ((H(labels) + H(clusters)) / 2). Labels and clusters are arbitrary integers (only
// equality matters). Edge cases as sklearn: 1 when both labelings have a single class (or are
// empty), 0 when the mutual information is 0 (e.g. exactly one of them has a single class).
// NMI panics if the lengths differ.
func NMI(labels, clusters []int) float64 {
	t := newContingency(labels, clusters)
	if len(t.a) == len(t.b) && len(t.a) <= 1 {
		return 1
	}
	mi := t.mutualInfo()
	if mi == 0 {
		return 0
	}
	return mi / ((entropyOf(t.a) + entropyOf(t.b)) / 2)
}

// AMI is sklearn's adjusted_mutual_info_score(labels, clusters) with arithmetic normalization:
// (MI - E[MI]) / (mean(H(labels), H(clusters)) - E[MI]), where E[MI] is the expected mutual
// information under the hypergeometric model of random labelings with the same class sizes
// (Vinh et al. 2010), summed in log space with lgamma. Edge cases as sklearn: 1 when both
// labelings have a single class (or are empty); 0 when exactly one has a single class; the
// denominator is clamped away from 0 to ±2^-52 keeping its sign. AMI can be negative.
// AMI panics if the lengths differ.
func AMI(labels, clusters []int) float64 {
	t := newContingency(labels, clusters)
	if len(t.a) == len(t.b) && len(t.a) <= 1 {
		return 1
	}
	mi := t.mutualInfo()
	emi := t.expectedMutualInfo()
	den := (entropyOf(t.a)+entropyOf(t.b))/2 - emi
	const eps = 0x1p-52
	if den < 0 {
		den = min(den, -eps)
	} else {
		den = max(den, eps)
	}
	return (mi - emi) / den
}

// expectedMutualInfo is sklearn's expected_mutual_information: E[MI] over all labelings with the
// marginals a and b,
//
//	sum_ij sum_{nij} nij/N · log(N·nij/(ai·bj)) · ai! bi! (N-ai)! (N-bj)! / (N! nij! (ai-nij)! (bj-nij)! (N-ai-bj+nij)!)
//
// with nij from max(1, ai+bj-N) to min(ai, bj), the factorial ratio evaluated as exp of lgammas.
func (t contingency) expectedMutualInfo() float64 {
	if len(t.a) == 1 || len(t.b) == 1 {
		return 0
	}
	n := t.n
	fn := float64(n)
	lg := func(v int) float64 { // log(v!) = lgamma(v+1)
		r, _ := math.Lgamma(float64(v) + 1)
		return r
	}
	// log(v!) for v = 0..N.
	lgTab := make([]float64, n+1)
	for v := range lgTab {
		lgTab[v] = lg(v)
	}
	logN := math.Log(fn)
	glnN := lgTab[n]
	emi := 0.0
	for _, ai := range t.a {
		logA := math.Log(float64(ai))
		glnA := lgTab[ai] + lgTab[n-ai]
		for _, bj := range t.b {
			logB := math.Log(float64(bj))
			glnAB := glnA + lgTab[bj] + lgTab[n-bj]
			start := max(1, ai-n+bj)
			end := min(ai, bj)
			for nij := start; nij <= end; nij++ {
				fnij := float64(nij)
				term2 := logN + math.Log(fnij) - logA - logB
				gln := glnAB - (lgTab[nij] + glnN) - lgTab[ai-nij] - lgTab[bj-nij] - lgTab[n-ai-bj+nij]
				emi += fnij / fn * term2 * math.Exp(gln)
			}
		}
	}
	return emi
}
