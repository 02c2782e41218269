package dist

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/grouploss/pipeline/pipeline/data"
)

// Shard is part Index of Count of a dataset: the Index-th of Count contiguous, near-equal slices
// of its images sorted by path. The same dataset always splits the same way, whatever the order
// of its manifest, and the shards in index order cover every image exactly once.
type Shard struct {
	Index, Count int
}

// ParseShard parses "i/n" with 0 <= i < n.
func ParseShard(s string) (Shard, error) {
	a, b, ok := strings.Cut(s, "/")
	i, err1 := strconv.Atoi(strings.TrimSpace(a))
	n, err2 := strconv.Atoi(strings.TrimSpace(b))
	if !ok || err1 != nil || err2 != nil || n < 1 || i < 0 || i >= n {
		return Shard{}, fmt.Errorf("dist: shard %q: want i/n with 0 <= i < n (e.g. 0/4)", s)
	}
	return Shard{Index: i, Count: n}, nil
}

func (s Shard) String() string { return fmt.Sprintf("%d/%d", s.Index, s.Count) }

// Items returns the indices into ds.Items of the shard's images, in path order (ties, the same
// file listed twice, in manifest order).
func (s Shard) Items(ds *data.Dataset) []int {
	idx := make([]int, len(ds.Items))
	paths := make([]string, len(ds.Items))
	for i := range idx {
		idx[i], paths[i] = i, ds.Resolve(i)
	}
	slices.SortStableFunc(idx, func(a, b int) int { return strings.Compare(paths[a], paths[b]) })
	n := len(idx)
	return idx[s.Index*n/s.Count : (s.Index+1)*n/s.Count]
}

// Subset returns the dataset of the items idx of ds, in that order (sharing ds's classes).
func Subset(ds *data.Dataset, idx []int) *data.Dataset {
	sub := *ds
	sub.Items = make([]data.Item, len(idx))
	for j, i := range idx {
		sub.Items[j] = ds.Items[i]
	}
	return &sub
}
