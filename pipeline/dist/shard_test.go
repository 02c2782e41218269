package dist

import (
	"slices"
	"testing"

	"github.com/grouploss/pipeline/pipeline/data"
)

// TestShardPartition: the shards of a dataset cover its images once, in path order, are near
// equal, and do not depend on the manifest's order.
func TestShardPartition(t *testing.T) {
	paths := []string{"c/3.jpg", "a/1.jpg", "b/9.jpg", "a/2.jpg", "c/1.jpg", "b/0.jpg", "a/0.jpg"}
	ds := &data.Dataset{Root: "/r", Classes: []string{"x"}}
	for _, p := range paths {
		ds.Items = append(ds.Items, data.Item{Path: p})
	}
	rev := &data.Dataset{Root: "/r", Classes: []string{"x"}, Items: slices.Clone(ds.Items)}
	slices.Reverse(rev.Items)
	var got []string
	for i := range 3 {
		s, err := ParseShard(string(rune('0'+i)) + "/3")
		if err != nil {
			t.Fatal(err)
		}
		a, b := Subset(ds, s.Items(ds)), Subset(rev, s.Items(rev))
		if n := len(a.Items); n < 2 || n > 3 {
			t.Errorf("shard %v has %d images, want 2 or 3", s, n)
		}
		for k := range a.Items {
			if a.Items[k].Path != b.Items[k].Path {
				t.Errorf("shard %v depends on the manifest order: %q vs %q", s, a.Items[k].Path, b.Items[k].Path)
			}
			got = append(got, a.Items[k].Path)
		}
	}
	want := slices.Clone(paths)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("shards in order = %v, want the sorted list %v", got, want)
	}
	for _, bad := range []string{"3/3", "-1/2", "1", "a/b", "0/0"} {
		if _, err := ParseShard(bad); err == nil {
			t.Errorf("ParseShard(%q) accepted", bad)
		}
	}
}
