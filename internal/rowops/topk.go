package rowops

import "cmp"

// TopK keeps the k best of the (distance, id) candidates offered to it: the smallest distances,
// ties going to the smaller id. It is a bounded max-heap whose root is the worst kept
// candidate, so an offer costs O(1) when it loses and O(log k) when it is kept. The zero value
// is unusable; reuse one TopK across queries with Reset to avoid allocating.
type TopK[I cmp.Ordered] struct {
	k    int
	dist []float64
	id   []I
}

// NewTopK returns an empty TopK keeping up to k candidates (k >= 1).
func NewTopK[I cmp.Ordered](k int) *TopK[I] {
	t := &TopK[I]{}
	t.Reset(k)
	return t
}

// Reset empties t and sets how many candidates it keeps.
func (t *TopK[I]) Reset(k int) {
	if k < 1 {
		panic("rowops: TopK of fewer than 1 candidate")
	}
	t.k = k
	if cap(t.dist) < k {
		t.dist, t.id = make([]float64, 0, k), make([]I, 0, k)
	}
	t.dist, t.id = t.dist[:0], t.id[:0]
}

// Len returns the number of candidates kept so far (at most k).
func (t *TopK[I]) Len() int { return len(t.dist) }

func (t *TopK[I]) worse(a, b int) bool {
	return t.dist[a] > t.dist[b] || (t.dist[a] == t.dist[b] && t.id[a] > t.id[b])
}

func (t *TopK[I]) swap(a, b int) {
	t.dist[a], t.dist[b] = t.dist[b], t.dist[a]
	t.id[a], t.id[b] = t.id[b], t.id[a]
}

func (t *TopK[I]) down(i, size int) {
	for {
		l := 2*i + 1
		if l >= size {
			return
		}
		w := l
		if r := l + 1; r < size && t.worse(r, l) {
			w = r
		}
		if !t.worse(w, i) {
			return
		}
		t.swap(i, w)
		i = w
	}
}

// Push offers the candidate (dist, id).
func (t *TopK[I]) Push(dist float64, id I) {
	if len(t.dist) < t.k {
		t.dist = append(t.dist, dist)
		t.id = append(t.id, id)
		for i := len(t.dist) - 1; i > 0; {
			p := (i - 1) / 2
			if !t.worse(i, p) {
				break
			}
			t.swap(i, p)
			i = p
		}
		return
	}
	if dist > t.dist[0] || (dist == t.dist[0] && id >= t.id[0]) {
		return
	}
	t.dist[0], t.id[0] = dist, id
	t.down(0, len(t.dist))
}

// Sorted sorts the kept candidates in place, best first, and returns their distances and ids.
// The slices are t's own, valid until the next Push or Reset; after Sorted, call Reset before
// pushing again.
func (t *TopK[I]) Sorted() (dist []float64, id []I) {
	for size := len(t.dist); size > 1; size-- {
		t.swap(0, size-1)
		t.down(0, size-1)
	}
	return t.dist, t.id
}
