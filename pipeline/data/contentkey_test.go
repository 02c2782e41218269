package data

import (
	"context"
	"image/color"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestContentKey: two folders with the same classes and file names but other images get other
// keys (their features were shared through the cache: B's run reused A's features), an edited
// image changes the key, identical copies in another folder share it.
func TestContentKey(t *testing.T) {
	mk := func(shade uint8) string {
		root := t.TempDir()
		for _, c := range []string{"a", "b"} {
			os.MkdirAll(filepath.Join(root, c), 0o755)
			for _, n := range []string{"0.png", "1.png"} {
				writeImage(t, filepath.Join(root, c, n), uniform(8, 8, color.Gray{shade}))
			}
		}
		return root
	}
	key := func(root string) string {
		ds, err := LoadImageFolder(root)
		if err != nil {
			t.Fatal(err)
		}
		k, err := ds.ContentKey(context.Background(), 2)
		if err != nil {
			t.Fatal(err)
		}
		if ds.Fingerprint() == "" {
			t.Fatal("empty fingerprint")
		}
		return k
	}
	a, b, a2 := mk(10), mk(200), mk(10)
	ka, kb, ka2 := key(a), key(b), key(a2)
	if ka == kb {
		t.Error("folders with other images under the same names share a content key")
	}
	if ka != ka2 {
		t.Error("identical copies of a folder have different content keys")
	}
	p := filepath.Join(a, "b", "1.png")
	writeImage(t, p, uniform(8, 8, color.Gray{11}))
	old := time.Now().Add(-time.Hour) // an edit that keeps the old modification time is seen too
	os.Chtimes(p, old, old)
	if key(a) == ka {
		t.Error("an edited image leaves the content key unchanged")
	}
	os.Remove(p)
	if key(a) == ka {
		t.Error("a missing image leaves the content key unchanged")
	}
}

// BenchmarkContentKeyCUB100 measures ContentKey on CUB-100 (5902 images) from the page cache.
func BenchmarkContentKeyCUB100(b *testing.B) {
	ds, err := Load(cub100(b))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := ds.ContentKey(context.Background(), 2); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(ds.Items)), "images")
}
