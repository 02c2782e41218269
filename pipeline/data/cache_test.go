package data

import (
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestCacheKey(t *testing.T) {
	k := CacheKey("model", "224x224")
	if len(k) != 64 || strings.Trim(k, "0123456789abcdef") != "" {
		t.Fatalf("key %q is not 64 hex digits", k)
	}
	if k != CacheKey("model", "224x224") {
		t.Error("key not deterministic")
	}
	if CacheKey("ab", "c") == CacheKey("a", "bc") || CacheKey("a") == CacheKey("a", "") {
		t.Error("part boundaries do not change the key")
	}
}

func TestFeaturesRoundTrip(t *testing.T) {
	dir := t.TempDir()
	const n, d = 37, 11
	feats := make([]float32, n*d)
	for i := range feats {
		feats[i] = float32(math.Sin(float64(i))) * 1e3
	}
	feats[5] = float32(math.Inf(-1))
	feats[6] = math.SmallestNonzeroFloat32
	meta := map[string]string{"model": "mobilenet", "preprocess.size": "224x224"}
	path := filepath.Join(dir, "feats.bin")
	if err := SaveFeatures(path, feats, n, d, meta); err != nil {
		t.Fatal(err)
	}
	got, gn, gd, gmeta, err := LoadFeatures(path)
	if err != nil {
		t.Fatal(err)
	}
	if gn != n || gd != d || !slices.Equal(got, feats) || len(gmeta) != 2 || gmeta["model"] != "mobilenet" {
		t.Fatalf("round trip: (%d, %d), meta %v, equal %v", gn, gd, gmeta, slices.Equal(got, feats))
	}
	// Overwriting is atomic and leaves no temporary files.
	if err := SaveFeatures(path, feats[:d], 1, d, nil); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("folder holds %d entries after two saves, want 1", len(entries))
	}
	if _, gn, _, _, err := LoadFeatures(path); err != nil || gn != 1 {
		t.Errorf("after overwrite: n %d, %v", gn, err)
	}
	// Empty matrices are fine.
	if err := SaveFeatures(path, nil, 0, 1280, nil); err != nil {
		t.Fatal(err)
	}
	if f, gn, gd, _, err := LoadFeatures(path); err != nil || gn != 0 || gd != 1280 || len(f) != 0 {
		t.Errorf("empty: (%d, %d) %v", gn, gd, err)
	}
	if err := SaveFeatures(path, feats, n, d+1, nil); err == nil {
		t.Error("wrong shape accepted")
	}
	if err := SaveFeatures(filepath.Join(dir, "missing", "f.bin"), feats, n, d, nil); err == nil {
		t.Error("save into a missing folder succeeded")
	}
}

func TestFeaturesCorrupt(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "feats.bin")
	feats := make([]float32, 20*8)
	for i := range feats {
		feats[i] = float32(i)
	}
	if err := SaveFeatures(path, feats, 20, 8, map[string]string{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	check := func(name string, b []byte) {
		t.Helper()
		p := filepath.Join(dir, "bad.bin")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		_, _, _, _, err := LoadFeatures(p)
		if !errors.Is(err, ErrCorruptCache) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: err %v, want ErrCorruptCache naming the file", name, err)
		}
	}
	for _, n := range []int{0, 1, 8, 31, 40, len(good) / 2, len(good) - 32, len(good) - 1} {
		check("truncated to "+strconv.Itoa(n), good[:n])
	}
	check("extra byte", append(slices.Clone(good), 0))
	for _, i := range []int{0, 9, 13, 21, 29, 33, 40, len(good) / 2, len(good) - 1} {
		b := slices.Clone(good)
		b[i] ^= 0x10
		check("flipped byte "+strconv.Itoa(i), b)
	}
	if _, _, _, _, err := LoadFeatures(filepath.Join(dir, "absent.bin")); !errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrCorruptCache) {
		t.Errorf("missing file: %v, want fs.ErrNotExist", err)
	}
}

// TestLoadFeaturesShapeOversized: a cache file far larger than its expected shape is refused from
// its header and size, before its body is read (it was read whole into memory).
func TestLoadFeaturesShapeOversized(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.feat")
	if err := SaveFeatures(path, []float32{1, 2, 3, 4, 5, 6}, 2, 3, nil); err != nil {
		t.Fatal(err)
	}
	if f, _, err := LoadFeaturesShape(path, 2, 3); err != nil || len(f) != 6 {
		t.Fatalf("the expected shape: %v", err)
	}
	if _, _, err := LoadFeaturesShape(path, 3, 3); !errors.Is(err, ErrCorruptCache) {
		t.Fatalf("another shape: %v", err)
	}
	if err := os.Truncate(path, 2<<30); err != nil { // 2 GB, sparse
		t.Skip(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, _, err := LoadFeaturesShape(path, 2, 3)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrCorruptCache) {
		t.Fatalf("oversized file: %v", err)
	}
	if a := after.TotalAlloc - before.TotalAlloc; a > 1<<20 {
		t.Fatalf("allocated %d bytes to refuse it", a)
	}
}
